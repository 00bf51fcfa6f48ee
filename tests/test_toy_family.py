"""A new family is one folder plus one registry entry: the toy family of ``tests/toy_family`` (a per-bin
log-power prior and a Wiener-gain method, written against the shared layers only) is registered here, then
trained, exported and used for enhancement through the public entry points, with no edit of the package."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # for `configs`

from configs import default  # noqa: E402
from jaxse import registry  # noqa: E402

SR = 16000


@pytest.fixture
def toy_registered(monkeypatch):
    """The toy family and its method in the registry for this test only."""
    monkeypatch.setattr(registry, "_FAMILIES", dict(registry._FAMILIES))
    monkeypatch.setattr(registry, "_METHODS", dict(registry._METHODS))
    monkeypatch.setattr(registry, "METHODS", registry.METHODS)
    from toy_family.family import METHOD

    registry.register_family("toy", "toy_family.family:FAMILY")
    registry.register_method(METHOD)
    return METHOD


def _speech_like(n: int, rng, f0: float) -> np.ndarray:
    t = np.arange(n) / SR
    envelope = 0.5 * (1 + np.sin(2 * np.pi * 3 * t))
    return (0.4 * envelope * np.sin(2 * np.pi * f0 * t) * (1 + 0.3 * np.sin(2 * np.pi * 2 * f0 * t))
            + 0.01 * rng.standard_normal(n)).astype(np.float32)


def _write_data(root: Path) -> Path:
    rng = np.random.default_rng(7)
    for split, count in (("train", 4), ("valid", 2)):
        (root / split).mkdir(parents=True)
        for i in range(count):
            sf.write(root / split / f"{i}.flac", _speech_like(int(0.4 * SR), rng, 180 + 60 * i), SR, subtype="PCM_16")
    return root


def _config(data: Path):
    config = default.get_config()
    config.model = {"family": "toy"}
    config.data.train_dir, config.data.valid_dir = str(data / "train"), str(data / "valid")
    config.data.crop_frames = 16
    t = config.training
    t.lr = 0.1
    t.batch_size, t.eval_batch_size, t.num_valid = 2, 2, 2
    t.num_steps, t.log_every, t.eval_every, t.checkpoint_every, t.keep_checkpoints = 30, 10, 10, 10, 3
    t.sample_every = 0
    return config


def test_register_refuses_duplicates(toy_registered):
    with pytest.raises(registry.RegistryError, match="already registered"):
        registry.register_family("toy", "toy_family.family:FAMILY")
    with pytest.raises(registry.RegistryError, match="already registered"):
        registry.register_method(toy_registered)
    with pytest.raises(registry.RegistryError, match="unknown model family"):
        registry.register_method(registry.Method("x", "nosuch", "a:b", "x", "a:b", "none"))


def test_toy_family_trains_exports_and_enhances(toy_registered, tmp_path):
    import jaxse
    from jaxse import export, training
    from jaxse.enhance import Enhancer, enhance_files, load_backend

    data = _write_data(tmp_path / "data")
    workdir = tmp_path / "run"
    training.train_and_evaluate(_config(data), workdir)  # train.py's entry point
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    valid = [r["valid/loss"] for r in records if "valid/loss" in r]
    assert len(valid) == 3 and valid[-1] < 0.5 * valid[0]

    out = tmp_path / "toy_export"
    assert export.main([str(workdir), "-o", str(out)]) == 0  # python -m jaxse.export
    assert registry.detect_family(out) == "toy"

    rng = np.random.default_rng(0)
    clean = _speech_like(int(0.8 * SR), rng, 210)
    noise = 0.05 * rng.standard_normal(clean.shape).astype(np.float32)
    y = jaxse.enhance(clean + noise, SR, method="toy-gain", checkpoint=out)  # the one-call API
    assert y.shape == clean.shape and np.isfinite(y).all()
    err_in, err_out = np.mean(noise ** 2), np.mean((y - clean) ** 2)
    assert err_out < 0.9 * err_in  # the Wiener gain removes part of the stationary noise

    noisy_dir = tmp_path / "noisy"
    noisy_dir.mkdir()
    sf.write(noisy_dir / "a.wav", clean + noise, SR, subtype="FLOAT")
    enhancer = Enhancer(load_backend("toy-gain", out), batch_size=2)  # enhance.py's engine and runner
    summary = enhance_files(noisy_dir, tmp_path / "enhanced", enhancer, progress=False)
    assert summary.done == 1 and summary.exit_code == 0
    written, sr = sf.read(tmp_path / "enhanced" / "a.wav", dtype="float32")
    assert sr == SR and np.max(np.abs(written - y)) < 1e-5
