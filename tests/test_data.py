"""Tests for jaxse.data: crops, normalisation, resampling on load, determinism, sharding, laziness."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from jaxse.data import CleanSpeechDataset, fit_crop, peak_normalize_np
from jaxse.spectral import SpecConfig

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CROP = 32640  # (256 - 1) * 128

# name -> (sample rate, seconds, channels); written as 16-bit PCM except where noted
SYNTH = {
    "a_long16k.wav": (16000, 3.0, 1),
    "b_8k.flac": (8000, 2.5, 1),
    "c_22k_short.wav": (22050, 1.0, 1),
    "sub/d_stereo16k.wav": (16000, 4.0, 2),
    "sub/e_exact.flac": (16000, CROP / 16000, 1),
}
SHORT_LEN = 8001  # odd padding: 24639 = 12319 before + 12320 after


def _signal(rng, n, channels):
    t = np.arange(n) / 16000.0
    env = 0.2 + 0.7 * rng.random() * (1 + np.sin(2 * np.pi * 0.7 * t + rng.random() * 6)) / 2
    x = env * np.sin(2 * np.pi * (200 + 600 * rng.random()) * t) + 0.05 * rng.standard_normal(n)
    x = 0.6 * x / np.max(np.abs(x))
    return np.stack([x, -0.5 * x], axis=1) if channels == 2 else x


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("speech")
    rng = np.random.default_rng(1234)
    for name, (sr, seconds, ch) in SYNTH.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(p), _signal(rng, int(round(sr * seconds)), ch), sr, subtype="PCM_16")
    # a short file stored as float so its samples are known exactly
    sf.write(str(root / "f_short.wav"), (0.3 * rng.uniform(-1, 1, SHORT_LEN)).astype(np.float32), 16000, subtype="FLOAT")
    sf.write(str(root / "g_silent.wav"), np.zeros(40000, np.float32), 16000)
    (root / "notes.txt").write_text("not audio, not listed")
    return root


def _dataset(root, **kw):
    return CleanSpeechDataset(root, sample_rate=16000, crop_frames=256, spec=SpecConfig(), **kw)


def _index(ds, name):
    return [p.name for p in ds.files].index(name)


def test_files_and_lengths(synth_dir):
    ds = _dataset(synth_dir)
    assert len(ds) == 7 and ds.crop_length == CROP
    assert ds.files == sorted(ds.files)
    # header lengths (at 16 kHz) match the decoded, resampled lengths
    for i in range(len(ds)):
        assert ds.lengths[i] == ds.load(i).shape[0]
    assert ds.lengths[_index(ds, "b_8k.flac")] == 40000
    assert ds.lengths[_index(ds, "c_22k_short.wav")] == 16000
    assert ds.total_duration == pytest.approx(ds.lengths.sum() / 16000)


def test_crop_shape_and_peak_normalisation(synth_dir):
    ds = _dataset(synth_dir)
    batch = ds.train_batch(seed=0, step=3, global_batch_size=16)
    assert batch.shape == (16, CROP) and batch.dtype == np.float32
    assert np.isfinite(batch).all()
    peaks = np.abs(batch).max(axis=1)
    silent = _index(ds, "g_silent.wav")
    for (i, _), peak in zip(ds.global_batch_plan(0, 3, 16), peaks):
        assert peak == (0.0 if i == silent else pytest.approx(1.0, abs=1e-6))


def test_silent_crop_is_zero_not_nan(synth_dir):
    ds = _dataset(synth_dir)
    crop = ds.crop(_index(ds, "g_silent.wav"), 100)
    assert crop.shape == (CROP,) and not crop.any()
    assert not peak_normalize_np(np.zeros((2, 5))).any()


def test_short_file_symmetric_padding(synth_dir):
    ds = _dataset(synth_dir)
    i = _index(ds, "f_short.wav")
    x = sf.read(str(synth_dir / "f_short.wav"), dtype="float32")[0]
    crop = ds.crop(i, start=12345)  # start is irrelevant for short files
    before, after = (CROP - SHORT_LEN) // 2, (CROP - SHORT_LEN) // 2 + (CROP - SHORT_LEN) % 2
    assert (before, after) == (12319, 12320)
    assert not crop[:before].any() and not crop[before + SHORT_LEN:].any()
    np.testing.assert_allclose(crop[before:before + SHORT_LEN], x / np.abs(x).max(), rtol=1e-6)
    np.testing.assert_array_equal(fit_crop(np.ones(3), 0, 6), [0, 1, 1, 1, 0, 0])


def test_resampling_on_load(synth_dir):
    ds = _dataset(synth_dir)
    x8 = sf.read(str(synth_dir / "b_8k.flac"), dtype="float32")[0]
    y = ds.load(_index(ds, "b_8k.flac"))
    assert y.dtype == np.float32 and y.shape == (2 * x8.shape[0],)
    # same dominant frequency before and after 8 kHz -> 16 kHz
    f8 = np.argmax(np.abs(np.fft.rfft(x8))) * 8000 / len(x8)
    f16 = np.argmax(np.abs(np.fft.rfft(y))) * 16000 / len(y)
    assert abs(f8 - f16) < 1.0
    stereo = ds.load(_index(ds, "d_stereo16k.wav"))
    raw = sf.read(str(synth_dir / "sub" / "d_stereo16k.wav"), dtype="float32")[0]
    np.testing.assert_allclose(stereo, raw.mean(axis=1), atol=1e-6)


def test_plan_properties(synth_dir):
    ds = _dataset(synth_dir)
    seen = set()
    for step in range(40):
        for i, start in ds.global_batch_plan(seed=7, step=step, global_batch_size=8):
            seen.add(i)
            span = ds.lengths[i] - CROP
            assert (0 <= start < span) if span > 0 else start == 0
    assert seen == set(range(len(ds)))  # uniform over files, with replacement
    assert ds.num_decodes == 0  # planning reads no audio


def test_train_batch_determinism(synth_dir):
    ds1, ds2 = _dataset(synth_dir), _dataset(synth_dir)
    a = ds1.train_batch(seed=5, step=11, global_batch_size=8)
    np.testing.assert_array_equal(a, ds2.train_batch(seed=5, step=11, global_batch_size=8))
    assert ds1.global_batch_plan(5, 11, 8) == ds2.global_batch_plan(5, 11, 8)
    assert ds1.global_batch_plan(5, 12, 8) != ds1.global_batch_plan(5, 11, 8)
    assert ds1.global_batch_plan(6, 11, 8) != ds1.global_batch_plan(5, 11, 8)
    assert not np.array_equal(a, ds1.train_batch(seed=5, step=12, global_batch_size=8))


@pytest.mark.parametrize("procs", [2, 4])
def test_sharding_equals_single_process(synth_dir, procs):
    full = _dataset(synth_dir).train_batch(seed=3, step=17, global_batch_size=8)
    # each "process" has its own dataset object, as separate jax processes would
    parts = [
        _dataset(synth_dir).train_batch(seed=3, step=17, global_batch_size=8, process_index=p, process_count=procs)
        for p in range(procs)
    ]
    assert all(part.shape == (8 // procs, CROP) for part in parts)
    np.testing.assert_array_equal(np.concatenate(parts), full)


def test_sharding_validation(synth_dir):
    ds = _dataset(synth_dir)
    with pytest.raises(ValueError, match="multiple of the process count 3"):
        ds.train_batch(0, 0, 8, process_index=0, process_count=3)
    with pytest.raises(ValueError, match="process_index"):
        ds.train_batch(0, 0, 8, process_index=2, process_count=2)
    with pytest.raises(ValueError, match="non-negative"):
        ds.global_batch_plan(-1, 0, 8)


def test_lazy_loading_decodes_only_own_rows(synth_dir):
    ds = _dataset(synth_dir)
    assert ds.num_decodes == 0 and ds.cached_indices == []
    plan = ds.global_batch_plan(seed=9, step=2, global_batch_size=8)
    own = {i for i, _ in plan[2:4]}  # process 1 of 4
    ds.train_batch(seed=9, step=2, global_batch_size=8, process_index=1, process_count=4)
    assert ds.num_decodes == len(own) and ds.cached_indices == sorted(own)
    ds.train_batch(seed=9, step=2, global_batch_size=8, process_index=1, process_count=4)
    assert ds.num_decodes == len(own)  # second time from the cache
    cached = ds.load(plan[2][0])
    assert cached.dtype == np.float32 and not cached.flags.writeable


def test_valid_batches(synth_dir):
    ds = _dataset(synth_dir)
    batches = list(ds.valid_batches(batch_size=2))
    assert ds.num_valid_batches(2) == len(batches) == 3  # 7 files: the last partial batch is dropped
    assert all(b.shape == (2, CROP) and b.dtype == np.float32 for b in batches)
    again = list(_dataset(synth_dir).valid_batches(batch_size=2))
    for a, b in zip(batches, again):
        np.testing.assert_array_equal(a, b)
    # rows are centre crops of the sorted files, in order
    i = _index(ds, "a_long16k.wav")
    x = ds.load(i)
    start = (len(x) - CROP) // 2
    np.testing.assert_allclose(batches[i // 2][i % 2], x[start:start + CROP] / np.abs(x[start:start + CROP]).max())
    # sharded: the same rows, split between processes
    shards = [list(ds.valid_batches(4, max_examples=6, process_index=p, process_count=2)) for p in range(2)]
    assert [len(s) for s in shards] == [1, 1]
    np.testing.assert_array_equal(np.concatenate([shards[0][0], shards[1][0]]), np.concatenate(batches[:2]))
    with pytest.raises(ValueError, match="no full batch"):
        ds.valid_batches(8)


def test_unreadable_files(tmp_path, caplog):
    with pytest.raises(ValueError, match="no readable audio files"):
        _dataset(tmp_path)
    (tmp_path / "junk.wav").write_text("not audio")
    with pytest.raises(ValueError, match="1 unreadable"):
        _dataset(tmp_path)
    sf.write(str(tmp_path / "ok.flac"), 0.1 * np.ones(40000), 16000)
    nan = np.zeros(40000, np.float32)
    nan[5] = np.nan
    sf.write(str(tmp_path / "nan.wav"), nan, 16000, subtype="FLOAT")  # header fine, content bad
    with caplog.at_level(logging.WARNING, logger="jaxse.data"):
        ds = _dataset(tmp_path)
    assert [p.name for p in ds.files] == ["nan.wav", "ok.flac"] and [p.name for p in ds.skipped] == ["junk.wav"]
    assert "junk.wav" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="jaxse.data"):
        crop = ds.crop(0, 0)
    assert "nan.wav" in caplog.text and crop.shape == (CROP,) and not crop.any()
    assert np.abs(ds.crop(1, 0)).max() == pytest.approx(1.0)
    with pytest.raises(FileNotFoundError):
        _dataset(tmp_path / "missing")
    with pytest.raises(ValueError, match="sample_rate"):
        CleanSpeechDataset(tmp_path, sample_rate=8000, spec=SpecConfig())


def test_data_module_imports_no_jax():
    code = "import sys, jaxse.data, jaxse.audio; sys.exit(any(m == 'jax' or m.startswith('jax.') for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1]).returncode == 0


def test_real_data_subset(tmp_path):
    train = DATA / "train"
    if not train.is_dir():
        pytest.skip(f"data pack not found at {DATA} (expected ../shared/data relative to the repository)")
    files = sorted(train.glob("*.flac"))[:5]
    for f in files:
        (tmp_path / f.name).symlink_to(f)
    ds = _dataset(tmp_path)
    assert len(ds) == 5
    full = ds.train_batch(seed=1, step=0, global_batch_size=4)
    assert full.shape == (4, CROP) and full.dtype == np.float32 and np.isfinite(full).all()
    np.testing.assert_allclose(np.abs(full).max(axis=1), 1.0, atol=1e-6)
    parts = [_dataset(tmp_path).train_batch(1, 0, 4, process_index=p, process_count=2) for p in range(2)]
    np.testing.assert_array_equal(np.concatenate(parts), full)
    for i in range(5):
        assert ds.lengths[i] == sf.info(str(files[i])).frames
    (batch,) = list(ds.valid_batches(4))
    assert batch.shape == (4, CROP)


def test_several_roots_and_crop_views(tmp_path):
    import soundfile as sf

    from jaxse.data import CleanSpeechDataset, split_roots

    for d, n in (("a", 2), ("b", 3)):
        (tmp_path / d).mkdir()
        for i in range(n):
            sf.write(tmp_path / d / f"{i}.flac", (0.1 * np.sin(np.arange(8000 + 100 * i) / 7)).astype(np.float32),
                     16000, subtype="PCM_16")
    assert split_roots(f"{tmp_path / 'a'}, {tmp_path / 'b'}") == [tmp_path / "a", tmp_path / "b"]
    with pytest.raises(ValueError, match="no data directory"):
        split_roots(" , ")
    ds = CleanSpeechDataset(f"{tmp_path / 'a'},{tmp_path / 'b'}", crop_frames=16)
    assert len(ds) == 5 and [p.parent.name for p in ds.files] == ["a", "a", "b", "b", "b"]
    assert CleanSpeechDataset([tmp_path / "b", tmp_path / "a"], crop_frames=16).files[0].parent.name == "b"
    long = ds.with_crop_frames(32)
    assert ds.with_crop_frames(16) is ds
    assert long.crop_length == ds.spec.crop_length(32) and ds.crop_length == ds.spec.crop_length(16)
    assert long.train_batch(0, 3, 2).shape == (2, long.crop_length)
    decoded = ds.num_decodes
    ds.train_batch(0, 3, 2)  # the files the view decoded are in the shared cache
    assert ds.num_decodes == decoded
    trimmed = CleanSpeechDataset(tmp_path / "a", crop_frames=16, trim_top_db=30.0)
    with pytest.raises(ValueError, match="trimmed"):
        trimmed.with_crop_frames(32)
