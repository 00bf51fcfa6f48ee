"""The prior shipped inside the package: it loads, has its recorded size, and enhances a real mixture."""

import json

import numpy as np
import pytest
import soundfile as sf

from jaxse.diffusion.backend import DiffusionBackend
from jaxse.pytree import count_params
from jaxse.enhance import Enhancer, checkpoint_settings, load_backend, make_config, settings_path
from jaxse.prior.backend import default_checkpoint_path, load_prior
from jaxse.evaluation.metrics import si_sdr
from jaxse.core.checkpoint import read_checkpoint_metadata

EXPECTED_PARAMS = 440_382  # configs/shipped_prior.py; also in the prior's metadata and MODEL_CARD.md


def test_shipped_prior_loads_with_recorded_size():
    path = default_checkpoint_path()
    assert path.exists(), f"the package ships no prior at {path}"
    assert (path / "MODEL_CARD.md").exists()
    model, variables, spec = load_prior()
    meta = read_checkpoint_metadata(path)
    assert count_params(variables["params"]) == meta["num_params"] == EXPECTED_PARAMS
    assert spec.sample_rate == meta["sample_rate"] == 16000
    assert model.parameterization == "noise"
    assert json.dumps(meta)  # self-describing metadata is plain JSON


def test_shipped_sampler_settings_are_valid_and_the_default():
    """The settings tuned for the shipped prior (sampler_settings.json, see MODEL_CARD.md) parse, name real
    fields, and are what load_backend uses when no settings are passed; passed settings are kept as they are."""
    path = settings_path("udiffse+")
    assert path is not None and path.parent == default_checkpoint_path()
    recorded = json.loads(path.read_text())["methods"]
    tuned = checkpoint_settings("udiffse+")
    assert tuned and tuned == recorded["udiffse+"]
    cfg = load_backend("udiffse+").cfg
    assert cfg == make_config("udiffse+", **tuned) and cfg != make_config("udiffse+")
    assert checkpoint_settings("udiffse") == recorded.get("udiffse", {})
    explicit = make_config("udiffse+", lmbd=1.5)
    assert load_backend("udiffse+", None, explicit).cfg is explicit


def test_shipped_prior_improves_si_sdr_on_real_mixture(data_dir):
    """0 dB mixture of an unseen (valid) speaker with a training noise type; UDiffSE+ with the shipped prior
    must raise SI-SDR clearly (a broken prior or sampler cannot)."""
    clean, sr = sf.read(data_dir / "valid" / "so762_0575_005750067.flac", dtype="float32")
    noise, _ = sf.read(data_dir / "noise" / "train" / "kitchen_dishes.flac", dtype="float32")
    clean = clean[: 2 * sr]
    rng = np.random.default_rng(0)
    start = int(rng.integers(0, len(noise) - len(clean)))
    noise = noise[start:start + len(clean)]
    noise *= np.sqrt(np.sum(clean**2) / np.sum(noise**2))  # 0 dB
    noisy = clean + noise
    model, variables, spec = load_prior()
    cfg = make_config("udiffse+", **{**checkpoint_settings("udiffse+"), "num_samples": 2})  # the shipped settings
    enhancer = Enhancer(DiffusionBackend(model, variables, cfg, spec), batch_size=1, chunk_frames=256)
    (out,) = enhancer.enhance([noisy], ["mixture"])
    assert out.shape == noisy.shape and np.all(np.isfinite(out))
    gain = si_sdr(out, clean) - si_sdr(noisy, clean)
    assert gain > 1.0, gain
