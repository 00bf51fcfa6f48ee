"""Tests of the noisy test-set builder ``python -m jaxse.mix`` (tiny synthetic files; one real-data run)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from jaxse.evaluation import mix

SR = 16000


def _speech(seconds: float, seed: int, peak: float = 0.5) -> np.ndarray:
    """Voiced-looking test signal: a few harmonics under a slow envelope, scaled to ``peak``."""
    t = np.arange(int(seconds * SR)) / SR
    rng = np.random.default_rng(seed)
    f0 = rng.uniform(100, 220)
    x = sum(np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 6)) / h for h in range(1, 6))
    x = x * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t)) + 0.01 * rng.standard_normal(t.size)
    return (peak * x / np.max(np.abs(x))).astype(np.float32)


def _noise(num: int, seed: int, channels: int = 1, level: float = 0.2) -> np.ndarray:
    """Gaussian noise, ``(num,)`` or ``(num, channels)``."""
    shape = (num,) if channels == 1 else (num, channels)
    return np.clip(level * np.random.default_rng(seed).standard_normal(shape), -0.9, 0.9).astype(np.float32)


def _tone(freq: float, sr: int, num: int, level: float = 0.5) -> np.ndarray:
    return (level * np.sin(2 * np.pi * freq * np.arange(num) / sr)).astype(np.float32)


def _snr(clean: np.ndarray, noisy: np.ndarray) -> float:
    s = clean.astype(np.float64)
    n = noisy.astype(np.float64) - s
    return 10 * np.log10(np.sum(s**2) / np.sum(n**2))


@pytest.fixture
def dataset(tmp_path):
    """6 clean files (one in a subfolder, one FLAC) and 3 noise files (16 kHz, 8 kHz, stereo 44.1 kHz)."""
    clean, noise = tmp_path / "clean_in", tmp_path / "noise_in"
    (clean / "sub").mkdir(parents=True)
    for i in range(5):
        sf.write(clean / f"utt{i}.wav", _speech(0.3 + 0.1 * i, i), SR)
    sf.write(clean / "sub" / "utt5.flac", _speech(0.4, 5), SR)
    noise.mkdir()
    sf.write(noise / "babble.wav", _noise(2 * SR, 10), SR)
    sf.write(noise / "low_rate.flac", _noise(8000, 11), 8000)
    sf.write(noise / "stereo.wav", _noise(44100, 12, channels=2), 44100)
    return clean, noise


def _run(clean, noise, out, *extra: str) -> int:
    return mix.main(["--clean", str(clean), "--noise", str(noise), "-o", str(out), *extra])


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _error_line(capsys) -> str:
    """The one line of stderr that is not progress output (asserted to be one ``error:`` line)."""
    lines = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("mix: ")]
    assert len(lines) == 1 and lines[0].startswith("error:"), lines
    return lines[0]


def _manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def test_module_does_not_import_jax():
    code = "import sys, jaxse.evaluation.mix; sys.exit(1 if 'jax' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_snr_exact_and_files_match_rebuild(dataset, tmp_path, capsys):
    clean, noise = dataset
    out = tmp_path / "out"
    assert _run(clean, noise, out, "--snr", "-5", "0", "5", "--seed", "3", "--per-file", "2") == 0
    err = capsys.readouterr().err
    assert "mixed 12 mixtures of 6 clean files" in err and "SNR -5 dB: 4, 0 dB: 4, 5 dB: 4" in err
    m = _manifest(out)
    assert m["version"] == 1 and m["seed"] == 3 and m["snrs"] == [-5.0, 0.0, 5.0] and m["sample_rate"] == SR
    assert len(m["mixtures"]) == 12
    assert {r["noise_type"] for r in m["mixtures"]} <= {"babble", "low_rate", "stereo"}
    for r in m["mixtures"]:
        assert r["noisy"] == "noisy/" + r["clean"][len("clean/"):]
        assert "noisy/" + r["id"] + Path(r["noisy"]).suffix == r["noisy"]
        assert r["noisy"].endswith(("_m0.wav", "_m1.wav", "_m0.flac", "_m1.flac"))
        noisy, cln = mix.rebuild_mixture(r, clean, noise)
        assert noisy.dtype == np.float32 and noisy.shape == cln.shape == (r["num_samples"],)
        assert abs(_snr(cln, noisy) - r["snr_db"]) < 0.01
        src = sf.read(clean / r["clean_source"], dtype="float32")[0]
        np.testing.assert_allclose(cln, src * r["scale"], atol=1e-6)
        noisy_file, sr_n = sf.read(out / r["noisy"], dtype="float32")
        clean_file, sr_c = sf.read(out / r["clean"], dtype="float32")
        assert sr_n == sr_c == SR and sf.info(str(out / r["noisy"])).subtype == "PCM_16"
        assert abs(_snr(clean_file, noisy_file) - r["snr_db"]) < 0.05
        assert np.max(np.abs(noisy_file - noisy)) <= 1.01 * mix.LSB16  # rebuild == written, to quantisation
        assert np.max(np.abs(clean_file - cln)) <= 1.01 * mix.LSB16
        assert 0 <= r["noise_start"] < sf.info(str(noise / r["noise_source"])).frames
        assert r["noise_sample_rate"] == sf.info(str(noise / r["noise_source"])).samplerate
    assert (out / "noisy" / "sub" / "utt5_m1.flac").exists() and (out / "clean" / "sub" / "utt5_m0.flac").exists()


def test_reproducible_resumable_and_seed_dependent(dataset, tmp_path):
    clean, noise = dataset
    args = ("--snr", "-5", "0", "5", "--seed", "7")
    a, b = tmp_path / "a", tmp_path / "b"
    assert _run(clean, noise, a, *args) == 0 and _run(clean, noise, b, *args) == 0
    first = _files(a)
    assert first == _files(b) and len(first) == 13  # bitwise-equal manifest and audio
    # rerun into the same folder: nothing changes; a missing file is written again, identically
    (a / "noisy" / "utt2.wav").unlink()
    assert _run(clean, noise, a, *args) == 0
    assert _files(a) == first
    # another seed: other noise choices
    c = tmp_path / "c"
    assert _run(clean, noise, c, "--snr", "-5", "0", "5", "--seed", "8") == 0
    picks = lambda out: [(r["noise_source"], r["noise_start"]) for r in _manifest(out)["mixtures"]]  # noqa: E731
    assert picks(c) != picks(a)


def test_other_arguments_refused_unless_overwrite(dataset, tmp_path, capsys):
    clean, noise = dataset
    out = tmp_path / "out"
    assert _run(clean, noise, out, "--snr", "0", "--per-file", "2") == 0
    before = _files(out)
    capsys.readouterr()
    assert _run(clean, noise, out, "--snr", "0", "--seed", "1") == 1
    err = _error_line(capsys)
    assert "--overwrite" in err and "seed 0 there, 1 now; per_file 2 there, 1 now" in err
    assert _files(out) == before
    assert _run(clean, noise, out, "--snr", "0", "--seed", "1", "--overwrite") == 0
    names = set(_files(out))
    assert not any("_m" in n for n in names)  # the old run's _m0/_m1 files are gone
    assert len(names) == 13 and _manifest(out)["seed"] == 1


def test_subset_is_seeded_and_choices_are_per_mixture(dataset, tmp_path):
    clean, noise = dataset
    full, sub, sub2 = tmp_path / "full", tmp_path / "sub", tmp_path / "sub2"
    assert _run(clean, noise, full, "--snr", "0", "--seed", "5") == 0
    assert _run(clean, noise, sub, "--snr", "0", "--seed", "5", "--max-files", "3") == 0
    assert _run(clean, noise, sub2, "--snr", "-5", "10", "--seed", "5", "--max-files", "3", "--per-file", "2") == 0
    m_full, m_sub, m_sub2 = _manifest(full), _manifest(sub), _manifest(sub2)
    subset = [r["clean_source"] for r in m_sub["mixtures"]]
    assert len(subset) == 3 and subset == sorted(subset)
    assert sorted({r["clean_source"] for r in m_sub2["mixtures"]}) == subset  # same subset whatever --snr
    by_source = {r["clean_source"]: r for r in m_full["mixtures"]}
    for r in m_sub["mixtures"]:  # same SNR here, so the mixture is the same as in the full run
        assert r == by_source[r["clean_source"]]
        assert (sub / r["noisy"]).read_bytes() == (full / r["noisy"]).read_bytes()
    for r in m_sub2["mixtures"]:  # mixture 0 of a file picks the same noise whatever --snr / --per-file
        if r["id"].endswith("_m0"):
            ref = by_source[r["clean_source"]]
            assert (r["noise_source"], r["noise_start"]) == (ref["noise_source"], ref["noise_start"])
    rels = [f"f{i}.wav" for i in range(20)]
    assert mix.select_subset(rels, 5, 1) == mix.select_subset(rels[::-1], 5, 1)
    assert mix.select_subset(rels, 5, 1) != mix.select_subset(rels, 5, 2)
    assert mix.select_subset(rels, 50, 1) == sorted(rels)


def test_snr_assignment_is_balanced():
    for n, snrs in [(14, [-5.0, 0.0, 5.0]), (80, [-5.0, 0.0, 5.0]), (7, [0.0, 10.0]), (2, [-5.0, 0.0, 5.0, 10.0])]:
        keys = [(f"f{i // 2}.wav", i % 2) for i in range(n)]
        got = mix.assign_snrs(keys, snrs, seed=0)
        counts = Counter(got)
        assert set(counts) <= set(snrs) and sum(counts.values()) == n
        assert all(n // len(snrs) <= counts[s] <= -(-n // len(snrs)) for s in snrs)
        shuffled = keys[::-1]  # the assignment belongs to the mixture, not to its position
        assert dict(zip(shuffled, mix.assign_snrs(shuffled, snrs, seed=0))) == dict(zip(keys, got))
    keys = [(f"f{i}.wav", 0) for i in range(30)]
    assert mix.assign_snrs(keys, [-5.0, 0.0, 5.0], 0) != mix.assign_snrs(keys, [-5.0, 0.0, 5.0], 1)


def test_short_noise_wraps_around(tmp_path):
    noise = _noise(1000, 1)
    path = tmp_path / "short.wav"
    sf.write(path, noise, SR)
    stored = sf.read(path, dtype="float32")[0]
    seg = mix.read_noise_segment(path, 700, 3500, SR)
    np.testing.assert_array_equal(seg, np.take(stored, np.arange(700, 700 + 3500), mode="wrap"))
    # through the builder: the noise part of the mixture is the looped noise times the gain
    clean = tmp_path / "clean"
    clean.mkdir()
    sf.write(clean / "a.wav", _speech(0.5, 0), SR)
    noise_dir = tmp_path / "noise"
    noise_dir.mkdir()
    path.rename(noise_dir / "short.wav")
    out = tmp_path / "out"
    assert _run(clean, noise_dir, out, "--snr", "5") == 0
    r = _manifest(out)["mixtures"][0]
    noisy, cln = mix.rebuild_mixture(r, clean, noise_dir)
    looped = np.take(stored, np.arange(r["noise_start"], r["noise_start"] + r["num_samples"]), mode="wrap")
    np.testing.assert_allclose((noisy - cln) / r["scale"], r["noise_gain"] * looped, atol=1e-5)


@pytest.mark.parametrize("noise_sr, freq, start", [(8000, 250.0, 123), (44100, 441.0, 4321), (22050, 315.0, 0)])
def test_noise_at_other_rates_is_resampled(tmp_path, noise_sr, freq, start):
    # a tone with a whole number of periods in the file loops seamlessly, so the segment (which wraps
    # several times, with context from the file's end before `start`) must be that tone at 16 kHz
    num = 30 * round(noise_sr / freq)  # 30 whole periods
    path = tmp_path / "tone.flac"
    sf.write(path, _tone(freq, noise_sr, num), noise_sr)
    seg = mix.read_noise_segment(path, start, SR, SR)
    t = start / noise_sr + np.arange(SR) / SR
    assert seg.shape == (SR,) and seg.dtype == np.float32
    np.testing.assert_allclose(seg, 0.5 * np.sin(2 * np.pi * freq * t), atol=3e-3)


def test_stereo_noise_is_mixed_down(tmp_path):
    left, right = _noise(SR, 1), _tone(500.0, SR, SR)
    path = tmp_path / "st.wav"
    sf.write(path, np.stack([left, right], axis=1), SR)
    stored = sf.read(path, dtype="float32")[0]
    seg = mix.read_noise_segment(path, 100, 2000, SR)
    np.testing.assert_allclose(seg, stored[100:2100].mean(axis=1), atol=1e-7)


def test_mixed_rate_noise_gives_clean_rate_outputs(dataset, tmp_path):
    clean, noise = dataset
    out = tmp_path / "out"
    assert _run(clean, noise, out, "--snr", "0", "--per-file", "6", "--seed", "2") == 0
    recs = _manifest(out)["mixtures"]
    assert {r["noise_sample_rate"] for r in recs} == {8000, 16000, 44100}  # 36 mixtures use all three files
    for r in recs:
        data, sr = sf.read(out / r["noisy"])
        assert sr == SR and data.shape == (r["num_samples"],)
        assert r["noise_start"] < {8000: 8000, 16000: 2 * SR, 44100: 44100}[r["noise_sample_rate"]]


def test_clipping_scales_noisy_and_clean_together(tmp_path):
    clean, noise = tmp_path / "clean", tmp_path / "noise"
    clean.mkdir()
    noise.mkdir()
    sf.write(clean / "loud.wav", _speech(0.5, 1, peak=0.95), SR)
    sf.write(noise / "n.wav", _noise(SR, 2), SR)
    out = tmp_path / "out"
    assert _run(clean, noise, out, "--snr", "-5") == 0
    r = _manifest(out)["mixtures"][0]
    assert 0.0 < r["scale"] < 1.0
    noisy, cln = mix.rebuild_mixture(r, clean, noise)
    assert max(np.max(np.abs(noisy)), np.max(np.abs(cln))) == pytest.approx(mix.PEAK_LIMIT, rel=1e-6)
    src = sf.read(clean / "loud.wav", dtype="float32")[0]
    clean_file = sf.read(out / r["clean"], dtype="float32")[0]
    noisy_file = sf.read(out / r["noisy"], dtype="float32")[0]
    np.testing.assert_allclose(clean_file, r["scale"] * src, atol=1.01 * mix.LSB16)
    assert np.max(np.abs(noisy_file - noisy)) <= 1.01 * mix.LSB16  # nothing clipped on writing
    assert abs(_snr(clean_file, noisy_file) + 5.0) < 0.05


def test_silent_clean_file_refused_before_writing(dataset, tmp_path, capsys):
    clean, noise = dataset
    sf.write(clean / "zz_quiet.wav", np.full(SR // 2, 1e-5, np.float32), SR)  # below one 16-bit LSB
    out = tmp_path / "out"
    assert _run(clean, noise, out, "--snr", "0") == 1
    err = _error_line(capsys)
    assert "zz_quiet.wav" in err and "silent" in err
    assert not out.exists()


def test_silent_noise_segments_are_skipped(tmp_path, capsys):
    clean, noise = tmp_path / "clean", tmp_path / "noise"
    clean.mkdir()
    noise.mkdir()
    for i in range(4):
        sf.write(clean / f"c{i}.wav", _speech(0.2, i), SR)
    gappy = np.zeros(10 * SR, np.float32)
    gappy[SR : 2 * SR] = _noise(SR, 0)  # one second of noise in ten of digital silence
    sf.write(noise / "gappy.wav", gappy, SR)
    out = tmp_path / "out"
    assert _run(clean, noise, out, "--snr", "0", "--per-file", "3") == 0
    for r in _manifest(out)["mixtures"]:
        noisy, cln = mix.rebuild_mixture(r, clean, noise)
        assert abs(_snr(cln, noisy)) < 0.01
    sf.write(noise / "gappy.wav", np.zeros(SR, np.float32), SR)
    capsys.readouterr()
    assert _run(clean, noise, tmp_path / "out2", "--snr", "0") == 1
    assert "no non-silent noise segment" in _error_line(capsys) and not (tmp_path / "out2").exists()


def test_bad_inputs(dataset, tmp_path, capsys):
    clean, noise = dataset
    out = tmp_path / "out"

    assert _run(tmp_path / "nope", noise, out, "--snr", "0") == 1
    assert "nope: clean directory not found" in _error_line(capsys)
    (tmp_path / "empty").mkdir()
    assert _run(clean, tmp_path / "empty", out, "--snr", "0") == 1
    assert "no audio files" in _error_line(capsys)
    (noise / "broken.wav").write_bytes(b"RIFF not really a wave file")
    assert _run(clean, noise, out, "--snr", "0") == 1
    assert "broken.wav" in _error_line(capsys)
    (noise / "broken.wav").unlink()
    (clean / "utt3.wav").write_bytes(b"garbage")
    assert _run(clean, noise, out, "--snr", "0") == 1
    assert "utt3.wav" in _error_line(capsys)
    assert not out.exists()
    usage_errors = (["--snr"], ["--snr", "0", "--per-file", "0"], ["--snr", "0", "0"], ["--snr", "nan"],
                    ["--snr", "x"], ["--snr", "0", "--seed", "-1"], ["--snr", "0", "--max-files", "two"])
    for bad in usage_errors:
        with pytest.raises(SystemExit) as exc:
            _run(clean, noise, out, *bad)
        assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        mix.main(["--snr", "0"])
    assert exc.value.code == 2


def test_output_inside_the_clean_folder(dataset, capsys):
    clean, noise = dataset
    out = clean / "mixed"  # the outputs are not taken for clean speech on the next run
    assert _run(clean, noise, out, "--snr", "0") == 0
    first = _files(out)
    assert _run(clean, noise, out, "--snr", "0") == 0 and _files(out) == first
    assert _run(out / "clean", noise, clean / "again", "--snr", "0") == 0  # a finished set can be remixed
    capsys.readouterr()
    assert _run(out / "clean", noise, out, "--snr", "0", "--overwrite") == 1  # but not onto itself
    assert "lies inside the output folder" in _error_line(capsys)


def test_output_names():
    assert mix.output_name("a/b.flac", 0, 1) == "a/b.flac"
    assert mix.output_name("a/b.flac", 2, 3) == "a/b_m2.flac"
    assert mix.output_name("b.ogg", 0, 1) == "b.wav"
    assert mix.output_name("b.mp3", 1, 2) == "b_m1.wav"


def test_real_data(data_dir, tmp_path, capsys):
    clean, noise = data_dir / "test", data_dir / "noise" / "test"
    out = tmp_path / "real"
    assert _run(clean, noise, out, "--snr", "-5", "0", "5", "--seed", "0", "--max-files", "3") == 0
    assert "mixed 3 mixtures of 3 clean files" in capsys.readouterr().err
    m = _manifest(out)
    assert m["sample_rate"] == 16000 and len(m["mixtures"]) == 3
    assert sorted(r["snr_db"] for r in m["mixtures"]) == [-5.0, 0.0, 5.0]
    for r in m["mixtures"]:
        assert (noise / r["noise_source"]).exists()
        assert r["noise_type"] in {"birds", "exercise_bike", "rain", "running_tap", "train_passing"}
        noisy, sr = sf.read(out / r["noisy"], dtype="float32")
        cln = sf.read(out / r["clean"], dtype="float32")[0]
        assert sr == 16000 and noisy.shape == cln.shape == (r["num_samples"],)
        assert abs(_snr(cln, noisy) - r["snr_db"]) < 0.05
