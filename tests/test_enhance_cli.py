"""enhance.py end to end: real mixtures (shared data pack) plus bad files, a tiny prior saved by training.py.

Checks the mirrored output tree, sample rates, exact lengths, finite samples, the CSV log, the exit code,
resuming (finished files skipped), ``--overwrite`` and determinism, and the one-line errors.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ["JAXSE_SHARED"]) / "data" if os.environ.get("JAXSE_SHARED") else \
    Path(__file__).resolve().parents[2] / "shared" / "data"
SR = 16000
FAST = ["--batch-size", "2", "--chunk-frames", "64", "--config.num_steps=2", "--config.num_em=1",
        "--config.num_samples=2", "--config.corrector=none", "--noprogress"]


def run_cli(*args, timeout=600):
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_DISABLE_MOST_OPTIMIZATIONS="1")
    env.pop("XLA_FLAGS", None)
    return subprocess.run([sys.executable, str(REPO / "enhance.py"), *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A randomly initialised tiny NCSN++ saved as a train.py checkpoint (EMA params + metadata)."""
    from jaxse.diffusion.models import ScoreModel
    from jaxse.diffusion.ncsnpp import NCSNppConfig
    from tests.conftest import save_random_checkpoint

    model = ScoreModel(net=NCSNppConfig(nf=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(),
                                        output_scaling="none"), parameterization="noise")
    return save_random_checkpoint(model, tmp_path_factory.mktemp("prior"))


def _mix(clean: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    noise = noise[: len(clean)]
    gain = np.sqrt(np.sum(clean**2) / (np.sum(noise**2) * 10 ** (snr_db / 10)))
    y = clean + gain * noise
    return (0.9 * y / np.abs(y).max()).astype(np.float32)


@pytest.fixture(scope="module")
def input_tree(tmp_path_factory) -> Path:
    if not DATA.is_dir():
        pytest.skip(f"shared data pack not found at {DATA} (set JAXSE_SHARED to the folder holding data/)")
    from jaxse.audio import resample

    clean = sorted((DATA / "test").glob("*.flac"))[:2]
    noise, nsr = sf.read(DATA / "noise" / "test" / "running_tap.flac", dtype="float32")
    assert len(clean) == 2 and nsr == SR
    root = tmp_path_factory.mktemp("noisy")
    (root / "spk").mkdir()
    s1, sr1 = sf.read(clean[0], dtype="float32")
    s2, sr2 = sf.read(clean[1], dtype="float32")
    assert sr1 == sr2 == SR
    sf.write(root / "a.flac", _mix(s1[8000:8000 + 15000], noise[:15000], 5.0), SR)  # 0.94 s, 16 kHz mono FLAC
    m2 = _mix(s2[4000:4000 + 12000], noise[20000:32000], 5.0)
    m2 = resample(m2, SR, 8000)  # 0.75 s at 8 kHz, stereo WAV
    sf.write(root / "spk" / "b.wav", np.stack([m2, 0.5 * m2], axis=1), 8000, subtype="PCM_16")
    (root / "empty.wav").write_bytes(b"")
    sf.write(root / "zero_frames.wav", np.zeros((0,), np.float32), SR)
    (root / "text.wav").write_text("this is not audio\n")
    bad = np.zeros(4000, np.float32)
    bad[100] = np.nan
    sf.write(root / "spk" / "nan.wav", bad, SR, subtype="FLOAT")
    sf.write(root / "short.wav", 0.1 * np.ones(100, np.float32), SR)
    sf.write(root / "silence.wav", np.zeros(3000, np.float32), SR)
    (root / "notes.txt").write_text("ignored: not an audio extension\n")
    return root


def _log(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow  # ~19 s (the shipped-prior and README-example tests run the CLI in the default suite) (issue 27)
def test_cli_end_to_end_resume_and_overwrite(input_tree, tiny_checkpoint, tmp_path):
    out = tmp_path / "enhanced"
    p = run_cli(input_tree, "-o", out, "--checkpoint", tiny_checkpoint, "--seed", "7", *FAST)
    assert p.returncode == 1, p.stderr[-3000:]  # some files failed
    err = p.stderr
    assert err.count("mixed down to mono") == 1
    # rows of the 64-frame bucket: a full batch of 2, then the last one on a 1-row program (no dummy row)
    assert "failed 5" in err and "enhanced 3/8 files" in err and "2 compiled program(s)" in err, err[-2000:]
    assert p.stdout.strip() == f"enhanced audio in: {out}"  # where the results went, for a folder

    rows = {r["file"]: r for r in _log(out / "enhance_log.csv")}
    assert set(rows) == {"a.flac", "spk/b.wav", "silence.wav", "empty.wav", "zero_frames.wav", "text.wav",
                         "spk/nan.wav", "short.wav"}  # notes.txt is not audio: not listed
    for name in ("a.flac", "spk/b.wav", "silence.wav"):
        assert rows[name]["status"] == "ok" and float(rows[name]["rtf"]) > 0
    messages = {k: v["message"] for k, v in rows.items() if v["status"] == "error"}
    assert "not a readable audio file" in messages["empty.wav"] and "not a readable" in messages["text.wav"]
    assert "empty audio file" in messages["zero_frames.wav"]
    assert "non-finite" in messages["spk/nan.wav"]
    assert "too short: 100 samples at 16000 Hz" in messages["short.wav"]
    assert all("\n" not in m and m for m in messages.values())

    for name, sr, n in (("a.flac", SR, 15000), ("spk/b.wav", 8000, 6000), ("silence.wav", SR, 3000)):
        info = sf.info(out / name)
        assert (info.samplerate, info.frames, info.channels) == (sr, n, 1), name
        y, _ = sf.read(out / name, dtype="float32")
        assert np.isfinite(y).all()
    assert not sf.read(out / "silence.wav")[0].any()
    assert sorted(p.name for p in out.rglob("*")) == ["a.flac", "b.wav", "enhance_log.csv", "silence.wav", "spk"]

    # rerun: finished files are skipped (nothing compiled), failures are retried and logged again
    first = sf.read(out / "a.flac", dtype="float32")[0]
    p2 = run_cli(input_tree, "-o", out, "--checkpoint", tiny_checkpoint, "--seed", "7", *FAST)
    assert p2.returncode == 1 and "skipped 3 (output exists)" in p2.stderr and "0 compiled" in p2.stderr, p2.stderr
    rows2 = _log(out / "enhance_log.csv")
    assert len(rows2) == 16 and [r["status"] for r in rows2[8:]].count("skipped") == 3

    # --overwrite on a single file redoes it; same seed and relative path -> same result
    p3 = run_cli(input_tree / "a.flac", "-o", out, "--checkpoint", tiny_checkpoint, "--seed", "7", "--overwrite",
                 "--log", tmp_path / "single.csv", *FAST)
    assert p3.returncode == 0, p3.stderr[-3000:]
    assert [r["status"] for r in _log(tmp_path / "single.csv")] == ["ok"]
    np.testing.assert_allclose(sf.read(out / "a.flac", dtype="float32")[0], first, atol=2e-4)


def test_cli_errors_are_one_line(tmp_path):
    p = run_cli(tmp_path, "-o", tmp_path / "out", "--config.no_such_field=3")
    assert p.returncode == 2 and p.stderr.strip().count("\n") == 0 and "unknown --config.no_such_field" in p.stderr
    p = run_cli(tmp_path / "missing", "-o", tmp_path / "out", "--checkpoint", tmp_path)
    assert p.returncode == 2 and "no such file or directory" in p.stderr.strip().splitlines()[-1]
    p = run_cli(tmp_path, "-o", tmp_path / "out", "--config.num_steps=0")
    assert p.returncode == 2 and "num_steps must be >= 1" in p.stderr


def test_without_a_shipped_prior_the_error_asks_for_a_checkpoint(tmp_path, monkeypatch):
    from jaxse import enhance as enhance_lib
    from jaxse.prior import backend as diffusion_backend

    monkeypatch.setattr(diffusion_backend, "default_checkpoint_path", lambda: tmp_path / "no_prior_here")
    with pytest.raises(enhance_lib.CheckpointError) as err:
        diffusion_backend.load_prior()
    message = str(err.value)
    assert "--checkpoint" in message and "\n" not in message


def test_checkpoint_sampler_settings_apply_unless_given_on_the_command_line(input_tree, tiny_checkpoint, tmp_path):
    """A checkpoint's sampler_settings.json replaces the reference defaults; --config.FIELD still wins."""
    import json
    import shutil

    ckpt = tmp_path / "prior"
    shutil.copytree(tiny_checkpoint, ckpt)
    (ckpt / "sampler_settings.json").write_text(json.dumps(
        {"methods": {"udiffse+": {"num_steps": 3, "num_samples": 3, "lmbd": 2.0}}}))
    fast = [a for a in FAST if not a.startswith(("--config.num_steps", "--config.num_samples"))]
    p = run_cli(input_tree / "a.flac", "-o", tmp_path / "out", "--checkpoint", ckpt, "--method", "udiffse+",
                "--config.num_samples=1", *fast)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "udiffse+, 3 network evaluations per segment (x1 samples)" in p.stderr, p.stderr[-2000:]
    line = [x for x in p.stderr.splitlines() if "sampler_settings.json" in x]
    assert len(line) == 1 and line[0].endswith("num_steps=3, lmbd=2.0"), line  # num_samples came from the CLI
    assert p.stdout.strip() == f"enhanced audio: {tmp_path / 'out' / 'a.flac'}"  # the one output, for a file

    (ckpt / "sampler_settings.json").write_text(json.dumps({"methods": {"udiffse+": {"no_such_field": 1}}}))
    p = run_cli(input_tree / "a.flac", "-o", tmp_path / "out2", "--checkpoint", ckpt, "--method", "udiffse+", *fast)
    assert p.returncode == 2 and p.stderr.strip().count("\n") == 0, p.stderr[-2000:]
    assert "bad sampler settings (unknown field(s) no_such_field for udiffse+)" in p.stderr
    assert not (tmp_path / "out2").exists()
