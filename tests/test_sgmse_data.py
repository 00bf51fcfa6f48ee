"""Tests for jaxse.sgmse.data: paired and on-the-fly mixed clean/noisy training data (tiny synthetic files)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile as sf

from jaxse.audio import read_audio
from jaxse.data import CleanSpeechDataset, fit_crop
from jaxse.sgmse.data import MixingDataset, MixRow, PairedSpeechDataset, mix_at_snr, normalize_pair
from jaxse.spectral import SpecConfig

SPEC = SpecConfig()  # n_fft 510, hop 128
FRAMES = 8
CROP = (FRAMES - 1) * 128  # 896 samples
SR = 16000

# clean relative path -> samples (all at 16 kHz); d_short is shorter than one crop (padded)
CLEAN = {"a.wav": 8000, "b.flac": 4800, "sub/c.wav": 16000, "d_short.wav": 600, "e.flac": 6000}


def _speechlike(rng, n):
    t = np.arange(n) / SR
    x = np.sin(2 * np.pi * (150 + 500 * rng.random()) * t) * (0.5 + 0.4 * np.sin(2 * np.pi * 3 * t))
    x = x + 0.05 * rng.standard_normal(n)
    return (0.5 * x / np.max(np.abs(x))).astype(np.float32)


def _write(path, x, sr=SR):
    path.parent.mkdir(parents=True, exist_ok=True)
    subtype = "FLOAT" if path.suffix == ".wav" else "PCM_16"
    sf.write(str(path), x, sr, subtype=subtype)


def _read(path):
    return sf.read(str(path), dtype="float32")[0]


def _one_line(exc_info) -> str:
    text = str(exc_info.value)
    assert "\n" not in text and text.strip()
    return text


@pytest.fixture(scope="module")
def paired_root(tmp_path_factory):
    """root/clean/<rel> and root/noisy/<rel> = clean + a known noise (kept in root/_noise, not under clean/noisy)."""
    root = tmp_path_factory.mktemp("paired")
    rng = np.random.default_rng(7)
    for rel, n in CLEAN.items():
        clean = _speechlike(rng, n)
        noise = (0.1 * rng.standard_normal(n)).astype(np.float32)
        _write(root / "clean" / rel, clean)
        _write(root / "noisy" / rel, np.clip(clean + noise, -0.99, 0.99))
    return root


@pytest.fixture(scope="module")
def noise_dirs(tmp_path_factory):
    base = tmp_path_factory.mktemp("noise")
    rng = np.random.default_rng(11)
    _write(base / "train" / "white.wav", (0.2 * rng.standard_normal(SR)).astype(np.float32))
    _write(base / "train" / "hum.flac", (0.3 * np.sin(2 * np.pi * 60 * np.arange(4000) / 8000)).astype(np.float32),
           sr=8000)  # 8000 samples at 16 kHz after resampling
    short = (0.25 * rng.uniform(-1, 1, 700)).astype(np.float32)  # > n_fft (510), < one crop (896): tiled
    _write(base / "short" / "short.wav", short)
    _write(base / "silent" / "zeros.wav", np.zeros(2000, np.float32))
    _write(base / "silent_clean" / "zeros.wav", np.zeros(3000, np.float32))
    return base


def _paired(root, **kw):
    return PairedSpeechDataset(root, sample_rate=SR, crop_frames=FRAMES, spec=SPEC, **kw)


def _mixing(clean_root, noise_root, **kw):
    return MixingDataset(clean_root, noise_root, sample_rate=SR, crop_frames=FRAMES, spec=SPEC, **kw)


# ---------------------------------------------------------------------------------------------- helpers


def test_normalize_pair_divides_both_by_noisy_peak_and_keeps_zero_rows_zero():
    clean = np.array([[0.5, -1.0, 0.25], [0.3, 0.1, 0.0]], np.float32)
    noisy = np.array([[1.0, -2.0, 0.5], [0.0, 0.0, 0.0]], np.float32)
    c, n = normalize_pair(clean, noisy)
    assert c.dtype == n.dtype == np.float32
    np.testing.assert_allclose(n[0], [0.5, -1.0, 0.25])
    np.testing.assert_allclose(c[0], [0.25, -0.5, 0.125])
    assert np.all(c[1] == 0) and np.all(n[1] == 0) and np.isfinite(c).all()


def test_mix_at_snr_gain_rules():
    rng = np.random.default_rng(0)
    s, z = rng.standard_normal(500), rng.standard_normal(500)
    noisy, g = mix_at_snr(s, z, 3.0)
    assert 10 * np.log10(np.sum(s ** 2) / np.sum((noisy - s) ** 2)) == pytest.approx(3.0, abs=1e-9)
    noisy, g = mix_at_snr(np.zeros(500), z, 3.0)  # silent clean: the noise as is
    assert g == 1.0 and np.array_equal(noisy, z)
    noisy, g = mix_at_snr(s, np.zeros(500), 3.0)  # silent noise: the clean signal
    assert g == 0.0 and np.array_equal(noisy, s)


# ---------------------------------------------------------------------------------------------- paired


def test_paired_rows_are_aligned_crops_normalised_by_noisy_peak(paired_root):
    ds = _paired(paired_root)
    assert len(ds) == len(CLEAN) and ds.crop_length == CROP and ds.crop_frames == FRAMES
    assert [p.relative_to(paired_root / "clean").as_posix() for p in ds.files] == sorted(CLEAN)
    assert ds.total_duration == pytest.approx(sum(CLEAN.values()) / SR)
    plan = ds.global_batch_plan(3, 5, 16)
    batch = ds.train_batch(3, 5, 16)
    assert set(batch) == {"clean", "noisy"}
    assert batch["clean"].shape == batch["noisy"].shape == (16, CROP) and batch["noisy"].dtype == np.float32
    np.testing.assert_allclose(np.max(np.abs(batch["noisy"]), axis=1), 1.0, atol=1e-7)
    for r, (i, start) in enumerate(plan):
        clean = fit_crop(_read(ds.files[i]), start, CROP)
        noisy = fit_crop(_read(ds.noisy_files[i]), start, CROP)
        peak = np.max(np.abs(noisy))
        np.testing.assert_allclose(batch["clean"][r], clean / peak, atol=1e-6)
        # the noise of the row is exactly noisy - clean of the same segment (aligned crops)
        np.testing.assert_allclose((batch["noisy"][r] - batch["clean"][r]) * peak, noisy - clean, atol=1e-6)
    short = [r for r, (i, _) in enumerate(plan) if ds.files[i].name == "d_short.wav"]
    assert short, "the plan of this seed should include the short file"
    pad = (CROP - CLEAN["d_short.wav"]) // 2
    assert np.all(batch["clean"][short[0], :pad] == 0) and np.all(batch["noisy"][short[0], :pad] == 0)


def test_paired_plan_matches_clean_dataset_and_is_deterministic(paired_root):
    ds = _paired(paired_root)
    clean_ds = CleanSpeechDataset(paired_root / "clean", sample_rate=SR, crop_frames=FRAMES, spec=SPEC)
    assert ds.global_batch_plan(1, 2, 8) == clean_ds.global_batch_plan(1, 2, 8)
    assert ds.total_chunks == clean_ds.total_chunks
    a, b = ds.train_batch(1, 2, 8), _paired(paired_root).train_batch(1, 2, 8)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    c, d = ds.train_batch(1, 3, 8), ds.train_batch(2, 2, 8)
    assert not np.array_equal(a["noisy"], c["noisy"]) and not np.array_equal(a["noisy"], d["noisy"])


def test_paired_process_shards_concatenate_to_the_global_batch(paired_root):
    full = _paired(paired_root).train_batch(4, 9, 8)
    shards = [_paired(paired_root) for _ in range(2)]
    parts = [shards[p].train_batch(4, 9, 8, p, 2) for p in range(2)]
    for k in ("clean", "noisy"):
        assert np.array_equal(np.concatenate([p[k] for p in parts]), full[k])
    plan = shards[0].global_batch_plan(4, 9, 8)
    for p in range(2):  # each process decoded only the files of its own rows
        assert shards[p].cached_indices == sorted({i for i, _ in plan[4 * p:4 * p + 4]})


def test_paired_valid_batches(paired_root):
    ds = _paired(paired_root)
    assert ds.num_valid_examples() == 5 and ds.num_valid_batches(2) == 2  # the 5th example is dropped
    batches = list(ds.valid_batches(2))
    assert len(batches) == 2 and all(b["noisy"].shape == (2, CROP) for b in batches)
    again = list(_paired(paired_root).valid_batches(2))
    assert all(np.array_equal(x[k], y[k]) for x, y in zip(batches, again) for k in ("clean", "noisy"))
    # centre crops of the first four files, in order
    for r, i in enumerate(range(4)):
        clean, noisy = _read(ds.files[i]), _read(ds.noisy_files[i])
        start = max(len(clean) - CROP, 0) // 2
        c, n = normalize_pair(fit_crop(clean, start, CROP), fit_crop(noisy, start, CROP))
        np.testing.assert_allclose(batches[r // 2]["clean"][r % 2], c, atol=1e-7)
        np.testing.assert_allclose(batches[r // 2]["noisy"][r % 2], n, atol=1e-7)
    halves = [list(ds.valid_batches(2, process_index=p, process_count=2)) for p in range(2)]
    assert np.array_equal(np.concatenate([halves[0][1]["noisy"], halves[1][1]["noisy"]]), batches[1]["noisy"])
    n_chunks = ds.num_valid_examples(chunks=True)
    assert n_chunks == ds.total_chunks and ds.num_valid_batches(3, chunks=True) == n_chunks // 3
    assert len(list(ds.valid_batches(3, chunks=True))) == n_chunks // 3
    with pytest.raises(ValueError) as exc:
        ds.valid_batches(6)
    assert "no full batch" in _one_line(exc)
    with pytest.raises(ValueError):
        ds.valid_batches(4, max_examples=3)


def test_paired_with_crop_frames_and_several_roots(paired_root):
    ds = _paired(paired_root)
    ds.train_batch(0, 0, 4)
    decoded = ds.num_decodes
    longer = ds.with_crop_frames(16)
    assert longer.crop_length == 15 * 128 and ds.crop_length == CROP and ds.with_crop_frames(FRAMES) is ds
    batch = longer.train_batch(0, 0, 4)
    assert batch["clean"].shape == (4, 15 * 128)
    assert longer.num_decodes == decoded  # the same files (only the starts change): decoded audio is shared
    both = _paired(f"{paired_root},{paired_root}")
    assert len(both) == 2 * len(ds) and both.total_duration == pytest.approx(2 * ds.total_duration)


def test_paired_bad_layouts_raise_one_line_errors(tmp_path):
    rng = np.random.default_rng(3)
    x = _speechlike(rng, 2000)
    only_clean = tmp_path / "only_clean"
    _write(only_clean / "clean" / "a.wav", x)
    with pytest.raises(ValueError) as exc:
        _paired(only_clean)
    msg = _one_line(exc)
    assert "paired layout" in msg and "noisy/" in msg

    one_sided = tmp_path / "one_sided"
    for rel in ("a.wav", "b/x.wav", "b/y.wav", "c.wav"):
        _write(one_sided / "clean" / rel, x)
    for rel in ("a.wav", "c.wav", "z.wav"):
        _write(one_sided / "noisy" / rel, x)
    with pytest.raises(ValueError) as exc:
        _paired(one_sided)
    msg = _one_line(exc)
    assert "2 files of clean/ have no counterpart in noisy/ (first: b/x.wav)" in msg
    assert "1 file of noisy/ has none in clean/ (first: z.wav)" in msg

    other_ext = tmp_path / "other_ext"
    _write(other_ext / "clean" / "a.wav", x)
    _write(other_ext / "noisy" / "a.flac", x)
    with pytest.raises(ValueError) as exc:
        _paired(other_ext)
    assert "(first: a.wav)" in _one_line(exc) and "(first: a.flac)" in str(exc.value)

    lengths = tmp_path / "lengths"
    _write(lengths / "clean" / "a.wav", x)
    _write(lengths / "noisy" / "a.wav", x)
    _write(lengths / "clean" / "b.wav", x)
    _write(lengths / "noisy" / "b.wav", x[:1500])
    with pytest.raises(ValueError) as exc:
        _paired(lengths)
    msg = _one_line(exc)
    assert "b.wav" in msg and "2000" in msg and "1500" in msg and "a.wav" not in msg

    unreadable = tmp_path / "unreadable"
    _write(unreadable / "clean" / "a.wav", x)
    (unreadable / "noisy").mkdir()
    (unreadable / "noisy" / "a.wav").write_bytes(b"this is not audio" * 10)
    with pytest.raises(ValueError) as exc:
        _paired(unreadable)
    assert "noisy/a.wav" in _one_line(exc)

    empty = tmp_path / "empty"
    (empty / "clean").mkdir(parents=True)
    (empty / "noisy").mkdir()
    with pytest.raises(ValueError) as exc:
        _paired(empty)
    assert "no audio files" in _one_line(exc)


# ---------------------------------------------------------------------------------------------- mixing


def _expected_mix(clean_ds, noise_path, row: MixRow):
    """The row rebuilt independently: raw clean crop, looped noise, gain from the SNR definition."""
    clean = fit_crop(clean_ds.load(row.index), row.start, CROP).astype(np.float64)
    noise = read_audio(noise_path, target_sr=SR).samples.astype(np.float64)  # resampled like the data set's
    noise = np.tile(noise, math.ceil((row.noise_offset + CROP) / len(noise)) + 1)[row.noise_offset:][:CROP]
    g = math.sqrt(np.sum(clean ** 2) / (np.sum(noise ** 2) * 10 ** (row.snr_db / 10)))
    noisy = clean + g * noise
    peak = np.max(np.abs(noisy))
    return clean / peak, noisy / peak


def _snr(batch):
    c = batch["clean"].astype(np.float64)
    z = batch["noisy"].astype(np.float64) - c
    return 10 * np.log10(np.sum(c ** 2, axis=1) / np.sum(z ** 2, axis=1))


def test_mixing_rows_follow_the_clean_plan_and_the_drawn_noise(paired_root, noise_dirs):
    clean_root = paired_root / "clean"
    ds = _mixing(clean_root, noise_dirs / "train", snr_range=(-5, 5))
    clean_ds = CleanSpeechDataset(clean_root, sample_rate=SR, crop_frames=FRAMES, spec=SPEC)
    assert ds.files == clean_ds.files and len(ds) == len(clean_ds) and ds.crop_length == CROP
    assert ds.total_chunks == clean_ds.total_chunks and ds.total_duration == clean_ds.total_duration
    plan = ds.global_batch_plan(2, 7, 16)
    assert [(r.index, r.start) for r in plan] == clean_ds.global_batch_plan(2, 7, 16)
    assert {r.noise_index for r in plan} == {0, 1}
    batch = ds.train_batch(2, 7, 16)
    assert batch["clean"].shape == batch["noisy"].shape == (16, CROP)
    np.testing.assert_allclose(np.max(np.abs(batch["noisy"]), axis=1), 1.0, atol=1e-7)
    for r, row in enumerate(plan):
        c, n = _expected_mix(clean_ds, ds.noise_files[row.noise_index], row)
        np.testing.assert_allclose(batch["clean"][r], c, atol=2e-6)
        np.testing.assert_allclose(batch["noisy"][r], n, atol=2e-6)
        # the clean row is CleanSpeechDataset's peak-normalised crop up to the pair's common factor
        ref = clean_ds.crop(row.index, row.start)
        np.testing.assert_allclose(batch["clean"][r] / np.max(np.abs(batch["clean"][r])), ref, atol=1e-6)
    snrs = np.array([r.snr_db for r in plan])
    assert np.all((snrs >= -5) & (snrs <= 5)) and np.ptp(snrs) > 1
    np.testing.assert_allclose(_snr(batch), snrs, atol=1e-3)


def test_mixing_fixed_snr_and_short_noise_is_tiled(paired_root, noise_dirs):
    ds = _mixing(paired_root / "clean", noise_dirs / "short" / "short.wav", snr_range=(2.5, 2.5))
    assert ds.noise_lengths.tolist() == [700]
    plan = ds.global_batch_plan(0, 1, 8)
    assert all(r.snr_db == 2.5 for r in plan) and all(0 <= r.noise_offset < 700 for r in plan)
    batch = ds.train_batch(0, 1, 8)
    np.testing.assert_allclose(_snr(batch), 2.5, atol=1e-3)
    clean_ds = ds.clean_dataset
    for r, row in enumerate(plan):
        c, n = _expected_mix(clean_ds, ds.noise_files[0], row)
        np.testing.assert_allclose(batch["noisy"][r], n, atol=2e-6)


def test_mixing_determinism_sharding_and_lazy_noise_decoding(paired_root, noise_dirs):
    clean_root, noise_root = paired_root / "clean", noise_dirs / "train"
    ds = _mixing(clean_root, noise_root)
    a, b = ds.train_batch(5, 3, 8), _mixing(clean_root, noise_root).train_batch(5, 3, 8)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["noisy"], ds.train_batch(5, 4, 8)["noisy"])
    shards = [_mixing(clean_root, noise_root) for _ in range(2)]
    parts = [shards[p].train_batch(5, 3, 8, p, 2) for p in range(2)]
    for k in ("clean", "noisy"):
        assert np.array_equal(np.concatenate([p[k] for p in parts]), a[k])
    plan = ds.global_batch_plan(5, 3, 8)
    for p in range(2):
        mine = plan[4 * p:4 * p + 4]
        assert shards[p].cached_noise_indices == sorted({r.noise_index for r in mine})
        assert shards[p].clean_dataset.cached_indices == sorted({r.index for r in mine})
    # another noise stream: same clean rows, other noise
    other = _mixing(clean_root, noise_root, noise_seed_offset=1)
    plan2 = other.global_batch_plan(5, 3, 8)
    assert [(r.index, r.start) for r in plan2] == [(r.index, r.start) for r in plan]
    assert [r[2:] for r in plan2] != [r[2:] for r in plan]


def test_mixing_silent_clean_or_noise_gives_finite_rows(paired_root, noise_dirs):
    quiet_noise = _mixing(paired_root / "clean", noise_dirs / "silent")
    batch = quiet_noise.train_batch(0, 0, 4)
    assert np.isfinite(batch["noisy"]).all() and np.isfinite(batch["clean"]).all()
    assert np.array_equal(batch["noisy"], batch["clean"])  # g = 0: noisy is the clean crop
    np.testing.assert_allclose(np.max(np.abs(batch["noisy"]), axis=1), 1.0, atol=1e-7)

    quiet_clean = _mixing(noise_dirs / "silent_clean", noise_dirs / "train")
    batch = quiet_clean.train_batch(0, 0, 4)
    assert np.isfinite(batch["noisy"]).all() and np.all(batch["clean"] == 0)
    np.testing.assert_allclose(np.max(np.abs(batch["noisy"]), axis=1), 1.0, atol=1e-7)
    for r, row in enumerate(quiet_clean.global_batch_plan(0, 0, 4)):  # g = 1: the noise as is, then normalised
        seg = quiet_clean.noise_segment(row.noise_index, row.noise_offset)
        np.testing.assert_allclose(batch["noisy"][r], seg / np.max(np.abs(seg)), atol=1e-6)

    both = _mixing(noise_dirs / "silent_clean", noise_dirs / "silent")
    batch = both.train_batch(0, 0, 2)
    assert np.all(batch["noisy"] == 0) and np.all(batch["clean"] == 0)


def test_mixing_valid_batches(paired_root, noise_dirs):
    clean_root, noise_root = paired_root / "clean", noise_dirs / "train"
    ds = _mixing(clean_root, noise_root)
    assert ds.num_valid_batches(2) == 2
    batches = list(ds.valid_batches(2))
    assert len(batches) == 2 and batches[0]["clean"].shape == (2, CROP)
    again = list(_mixing(clean_root, noise_root, noise_seed_offset=3).valid_batches(2))
    assert all(np.array_equal(x[k], y[k]) for x, y in zip(batches, again) for k in ("clean", "noisy"))
    halves = [list(ds.valid_batches(2, process_index=p, process_count=2)) for p in range(2)]
    for b in range(2):
        assert np.array_equal(np.concatenate([halves[0][b]["noisy"], halves[1][b]["noisy"]]), batches[b]["noisy"])
    plan = ds.clean_dataset.valid_plan()
    for k in range(4):
        j, offset, snr = ds.valid_noise(k)
        rng = np.random.default_rng([MixingDataset.VALID_SEED, k])
        assert j == int(rng.integers(0, 2, size=1)[0]) and -5 <= snr <= 5
        c, n = _expected_mix(ds.clean_dataset, ds.noise_files[j], MixRow(*plan[k], j, offset, snr))
        np.testing.assert_allclose(batches[k // 2]["noisy"][k % 2], n, atol=2e-6)
        np.testing.assert_allclose(batches[k // 2]["clean"][k % 2], c, atol=2e-6)
    assert ds.num_valid_batches(2, chunks=True) == ds.total_chunks // 2
    assert len(list(ds.valid_batches(2, chunks=True))) == ds.total_chunks // 2
    with pytest.raises(ValueError) as exc:
        ds.valid_batches(6)
    assert "no full batch" in _one_line(exc)


def test_mixing_with_crop_frames_shares_the_noise_cache(paired_root, noise_dirs):
    ds = _mixing(paired_root / "clean", noise_dirs / "train")
    ds.train_batch(0, 0, 8)
    decoded = ds.noise_decodes
    assert decoded >= 1
    longer = ds.with_crop_frames(12)
    batch = longer.train_batch(0, 0, 8)
    assert batch["noisy"].shape == (8, 11 * 128) and longer.crop_length == 11 * 128 and ds.crop_length == CROP
    # the same clean and noise files as before (only the starts change): nothing decoded again
    assert longer.noise_decodes == decoded and longer.num_decodes == ds.num_decodes
    assert ds.with_crop_frames(FRAMES) is ds


def test_mixing_bad_inputs_raise_one_line_errors(tmp_path, paired_root, noise_dirs):
    clean_root = paired_root / "clean"
    with pytest.raises(ValueError) as exc:
        _mixing(clean_root, tmp_path / "nowhere")
    assert "no noise files" in _one_line(exc)
    (tmp_path / "no_audio").mkdir()
    (tmp_path / "no_audio" / "readme.txt").write_text("nothing here")
    with pytest.raises(ValueError) as exc:
        _mixing(clean_root, tmp_path / "no_audio")
    assert "no noise files" in _one_line(exc)
    (tmp_path / "garbage").mkdir()
    (tmp_path / "garbage" / "n.wav").write_bytes(b"garbage" * 20)
    with pytest.raises(ValueError) as exc:
        _mixing(clean_root, tmp_path / "garbage")
    assert "no noise files" in _one_line(exc) and "1 unreadable" in str(exc.value)

    _write(tmp_path / "tiny" / "tiny.flac", np.full(250, 0.1, np.float32), sr=8000)  # 500 samples at 16 kHz
    with pytest.raises(ValueError) as exc:
        _mixing(clean_root, tmp_path / "tiny")
    msg = _one_line(exc)
    assert "tiny.flac" in msg and "500 samples" in msg and "510" in msg

    for bad, words in [((5, -5), "reversed"), ((0, float("nan")), "finite"), ((-math.inf, 0), "finite"),
                       ((0, 1, 2), "two numbers"), ("05", "two numbers"), (None, "two numbers"),
                       (("a", 1), "two numbers"), (5.0, "two numbers")]:
        with pytest.raises(ValueError) as exc:
            _mixing(clean_root, noise_dirs / "train", snr_range=bad)
        assert words in _one_line(exc), (bad, str(exc.value))

    with pytest.raises(ValueError) as exc:
        _mixing(tmp_path / "no_clean", noise_dirs / "train")
    _one_line(exc)
