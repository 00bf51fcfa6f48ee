"""The RVAE shipped inside the package: it loads, has its recorded size and model card, and enhances a real
mixture with the RVAE EM methods (a loose bound that a broken model or sampler cannot pass)."""

import json

import numpy as np
import soundfile as sf

from jaxse.pytree import count_params
from jaxse import enhance as E
from jaxse.rvae import backend as rvae_backend
from jaxse.evaluation.metrics import si_sdr
from jaxse.rvae.net import RVAEConfig, config_from_params
from jaxse.rvae.posterior import RVAEPosteriorConfig
from jaxse.rvae.spectral import RVAESpecConfig

EXPECTED_PARAMS = 1_026_849  # configs/rvae.py: the published non-causal architecture; also in rvae.json


def test_shipped_rvae_loads_with_recorded_size():
    path = rvae_backend.default_rvae_checkpoint_path()
    assert path.exists(), f"the package ships no RVAE at {path}"
    assert (path / "MODEL_CARD.md").exists()
    params, spec = rvae_backend.load_rvae_prior()
    meta = json.loads((path / "rvae.json").read_text())
    assert count_params(params) == meta["num_params"] == EXPECTED_PARAMS
    assert config_from_params(params) == RVAEConfig()
    assert spec == RVAESpecConfig() and spec.sample_rate == 16000
    assert meta["source"] == "jaxse train.py"  # trained here, not the GPL-3.0 published weights


def test_shipped_rvae_sampler_settings_are_the_ldem_default():
    """sampler_settings.json of the shipped RVAE (tuned on valid mixtures, see MODEL_CARD.md) sets LDEM's EM
    iterations; load_backend applies it, and the other RVAE methods keep the reference defaults."""
    path = E.settings_path("rvae-ldem")
    assert path is not None and path.parent == rvae_backend.default_rvae_checkpoint_path()
    tuned = E.checkpoint_settings("rvae-ldem")
    assert tuned == json.loads(path.read_text())["methods"]["rvae-ldem"] and tuned["num_em"] < 100
    assert E.load_backend("rvae-ldem").cfg == E.make_config("rvae-ldem", **tuned)
    assert E.load_backend("rvae-vem").cfg == E.make_config("rvae-vem")


def _mixture(data_dir, seconds=2.0):
    clean, sr = sf.read(data_dir / "valid" / "so762_0575_005750067.flac", dtype="float32")
    noise, _ = sf.read(data_dir / "noise" / "train" / "kitchen_dishes.flac", dtype="float32")
    clean = clean[: int(seconds * sr)]
    start = int(np.random.default_rng(0).integers(0, len(noise) - len(clean)))
    noise = noise[start:start + len(clean)]
    noise *= np.sqrt(np.sum(clean**2) / np.sum(noise**2))  # 0 dB
    return clean, clean + noise


def test_shipped_rvae_improves_si_sdr_on_real_mixture(data_dir):
    """0 dB mixture of an unseen (valid) speaker with a training noise type, LDEM with 30 EM iterations (measured
    +2.7 dB; the published weights: +6.9 dB). VEM is not bounded here: with this briefly trained RVAE it lowers
    SI-SDR on this mixture (-2.2 dB; see the model card), while the published weights give +6.8 dB."""
    clean, noisy = _mixture(data_dir)
    params, spec = rvae_backend.load_rvae_prior()
    backend = rvae_backend.RVAEBackend(params, RVAEPosteriorConfig(method="ldem", num_em=30), spec=spec)
    (out,) = E.Enhancer(backend, batch_size=1).enhance([noisy], ["mixture"])
    assert out.shape == noisy.shape and np.all(np.isfinite(out))
    gain = si_sdr(out, clean) - si_sdr(noisy, clean)
    assert gain > 1.0, gain
