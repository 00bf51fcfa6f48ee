"""SGMSE+ / weighted / supervised as model families: configs, training on paired and mixed data, export, the
``sgmse+`` and ``supervised`` enhancement methods, and the one-line errors (bad data, wrong checkpoint)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import soundfile as sf

from configs import sgmse as sgmse_config, sgmse_cpu, supervised as supervised_config, supervised_cpu, weighted
from configs import weighted_cpu
from jaxse import enhance, registry, training
from jaxse.diffusion.models import ScoreModel
from jaxse.sgmse.backend import SGMSEBackend, SGMSEConfig
from jaxse.sgmse.models import ConditionalScoreModel, PredictiveModel
from jaxse.spectral import SpecConfig, wave_to_spec
from tests.conftest import GOLDEN, REPO

SR = 16000


def _tone(n, f, rng):
    t = np.arange(n) / SR
    return (0.3 * np.sin(2 * np.pi * f * t) + 0.02 * rng.standard_normal(n)).astype(np.float32)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Clean tones in ``speech/{train,valid}``, noise in ``noise/``, and a paired tree ``paired/{clean,noisy}``."""
    root = tmp_path_factory.mktemp("sgmse_data")
    rng = np.random.default_rng(5)
    for split, count in (("train", 3), ("valid", 2)):
        for i in range(count):
            x = _tone(5000 + 300 * i, 220 + 90 * i, rng)
            for sub in (f"speech/{split}", f"paired/{split}/clean"):
                (root / sub).mkdir(parents=True, exist_ok=True)
                sf.write(root / sub / f"u{i}.flac", x, SR, subtype="PCM_16")
            (root / f"paired/{split}/noisy").mkdir(parents=True, exist_ok=True)
            sf.write(root / f"paired/{split}/noisy/u{i}.flac", x + 0.1 * rng.standard_normal(x.size).astype(np.float32),
                     SR, subtype="PCM_16")
    (root / "noise").mkdir()
    for j in range(2):
        sf.write(root / "noise" / f"n{j}.flac", (0.1 * rng.standard_normal(7000)).astype(np.float32), SR,
                 subtype="PCM_16")
    return root


def tiny(config, corpus: Path, source: str = "mix"):
    config.model.nf = 8
    config.model.ch_mult = (1, 2)
    config.model.num_res_blocks = 1
    config.model.attn_resolutions = ()
    config.data.source = source
    if source == "mix":
        config.data.train_dir = str(corpus / "speech/train")
        config.data.valid_dir = str(corpus / "speech/valid")
        config.data.noise_dir = str(corpus / "noise")
    else:
        config.data.train_dir = str(corpus / "paired/train")
        config.data.valid_dir = str(corpus / "paired/valid")
    config.data.crop_frames = 8
    config.data.valid_frames = 8
    t = config.training
    t.batch_size, t.eval_batch_size, t.num_valid = 2, 2, 2
    t.num_steps, t.log_every, t.eval_every, t.checkpoint_every, t.keep_checkpoints = 2, 1, 2, 2, 1
    return config


def test_configs_build_the_three_models():
    cond, weighted_model = (training.model_from_config(m.get_config()) for m in (sgmse_config, weighted))
    assert isinstance(cond, ConditionalScoreModel) and cond == weighted_model
    assert cond.net.in_channels == 4 and cond.net.output_scaling == "1/t" and cond.net.nf == 128
    sup = training.model_from_config(supervised_config.get_config())
    assert isinstance(sup, PredictiveModel) and not sup.net.time_embedding and sup.net.in_channels == 2
    assert registry.family("sgmse").objective(weighted.get_config(), 1).kind == "weighted"
    assert registry.family("sgmse").objective(sgmse_config.get_config(), 1).kind == "dsm"
    for mod in (sgmse_cpu, weighted_cpu, supervised_cpu):
        c = mod.get_config()
        m = training.model_from_config(c)
        assert m.net.nf == 16 and m.net.ch_mult == (1, 2, 2, 2) and c.data.source == "mix"
        assert tuple(c.data.snr_range) == (-5.0, 5.0) and c.training.batch_size == 8
    # The reference recipe: batch 1, Adam 1e-4, EMA 0.999.
    c = weighted.get_config()
    assert (c.training.batch_size, c.training.lr, c.training.ema_decay) == (1, 1e-4, 0.999)


@pytest.fixture(scope="module")
def runs(corpus, tmp_path_factory):
    """A weighted run on mixed data and a supervised run on the paired tree, each exported."""
    old = jax.config.values["jax_disable_most_optimizations"]
    jax.config.update("jax_disable_most_optimizations", True)
    out = {}
    try:
        for name, mod, source in (("weighted", weighted, "mix"), ("supervised", supervised_config, "paired")):
            config = tiny(mod.get_config(), corpus, source)
            work = tmp_path_factory.mktemp(name)
            config.training.export_dir = str(work / "export")
            state = training.train_and_evaluate(config, work / "run")
            out[name] = (config, work, state)
    finally:
        jax.config.update("jax_disable_most_optimizations", old)
    return out


@pytest.mark.slow  # the `runs` fixture trains three models, ~30 s (issue 27)
def test_runs_log_the_loss_terms_and_export_their_family(runs):
    import json

    for name, family in (("weighted", "sgmse"), ("supervised", "supervised")):
        _, work, state = runs[name]
        assert int(state.step) == 2
        lines = [json.loads(x) for x in (work / "run" / "metrics.jsonl").read_text().splitlines()]
        keys = set().union(*lines)
        assert "train/loss" in keys and "valid/loss" in keys
        if name == "weighted":
            assert {"train/dsm", "train/sup_weighted", "train/dsm_weighted", "valid/dsm"} <= keys
        assert registry.detect_family(work / "export") == family
        model, variables, meta = training.load_checkpoint(work / "export", family=family)
        assert model.family == family and meta["step"] == 2


@pytest.mark.slow  # the `runs` fixture trains three models, ~30 s (issue 27)
def test_enhancement_methods_run_on_their_checkpoints(runs, fast_compile):
    rng = np.random.default_rng(0)
    wave = (0.2 * rng.standard_normal(3000)).astype(np.float32)
    for method, name in (("sgmse+", "weighted"), ("supervised", "supervised")):
        export = runs[name][1] / "export"
        cfg = enhance.make_config(method, **({"num_steps": 3} if method == "sgmse+" else {}))
        backend = enhance.load_backend(method, export, cfg)
        enh = enhance.Enhancer(backend, batch_size=2, chunk_frames=64)
        out = enh.enhance([wave, wave[:2000]], uids=["a", "b"])
        assert [o.shape for o in out] == [(3000,), (2000,)]
        assert all(np.all(np.isfinite(o)) for o in out)
        assert backend.nfe == (6 if method == "sgmse+" else 1)


@pytest.mark.slow  # the `runs` fixture trains three models, ~30 s (issue 27)
def test_checkpoints_never_cross_families(runs, golden_dir):
    weighted_export = runs["weighted"][1] / "export"
    with pytest.raises(enhance.CheckpointError, match="'sgmse' model family"):
        enhance.load_backend("udiffse+", weighted_export)
    with pytest.raises(enhance.CheckpointError, match="'ncsnpp' model family"):
        enhance.load_backend("sgmse+", registry.ASSETS / "prior")
    with pytest.raises(enhance.CheckpointError, match="'sgmse' family"):  # a reference file, by its layout
        enhance.load_backend("udiffse", GOLDEN / "sgmse_cond_small.npz")
    with pytest.raises(enhance.CheckpointError, match="'supervised' family"):
        enhance.load_backend("sgmse+", GOLDEN / "sgmse_sup_small.npz")
    with pytest.raises(enhance.CheckpointError, match="no sgmse model is shipped"):
        enhance.load_backend("sgmse+")
    with pytest.raises(registry.RegistryError):
        training.load_checkpoint(weighted_export, family="ncsnpp")


def test_noisy_peak_normalisation_is_the_reference_one():
    """Dividing the spectrogram by ``norm_factor`` equals the spectrogram of the waveform divided by its peak."""
    spec = SpecConfig()
    backend = SGMSEBackend(ConditionalScoreModel(), None, SGMSEConfig(), spec)
    wave = np.random.default_rng(1).standard_normal(4000).astype(np.float32) * 0.3
    peak = float(np.max(np.abs(wave)))
    a = np.asarray(wave_to_spec(jnp.asarray(wave), spec)) / backend.norm_factor(wave)
    b = np.asarray(wave_to_spec(jnp.asarray(wave / peak), spec))
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert backend.norm_factor(np.zeros(100, np.float32)) == 1.0


def _setup_error(config, workdir):
    with pytest.raises(training.SetupError) as err:
        training.train_and_evaluate(config, workdir)
    assert "\n" not in str(err.value)
    assert not workdir.exists()  # training not started: nothing written
    return str(err.value)


def test_bad_training_data_is_one_line_before_anything_is_written(corpus, tmp_path):
    import shutil

    paired = tmp_path / "paired"
    shutil.copytree(corpus / "paired/train", paired)
    (paired / "noisy" / "u1.flac").unlink()
    c = tiny(supervised_config.get_config(), corpus, "paired")
    c.data.train_dir = str(paired)
    assert "no counterpart" in _setup_error(c, tmp_path / "w1")

    (tmp_path / "empty").mkdir()
    c = tiny(weighted.get_config(), corpus)
    c.data.noise_dir = str(tmp_path / "empty")
    assert "no noise files" in _setup_error(c, tmp_path / "w2")

    short = tmp_path / "short_noise"
    short.mkdir()
    sf.write(short / "tiny.wav", np.full(100, 0.1, np.float32), SR)
    c = tiny(weighted.get_config(), corpus)
    c.data.noise_dir = str(short)
    assert "tiny.wav" in _setup_error(c, tmp_path / "w3")

    c = tiny(weighted.get_config(), corpus)
    c.data.snr_range = (5.0, -5.0)
    assert "snr_range" in _setup_error(c, tmp_path / "w4")


def test_train_py_prints_one_line_for_bad_data(corpus, tmp_path):
    p = subprocess.run([sys.executable, "train.py", "--config", "configs/weighted_cpu.py", "--workdir",
                        str(tmp_path / "w"), f"--config.data.noise_dir={tmp_path / 'nothing'}",
                        f"--config.data.train_dir={corpus / 'speech/train'}"],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert p.returncode == 2
    lines = [x for x in p.stderr.splitlines() if x.strip()]
    assert lines[-1].startswith("train.py: error: ") and "nothing" in lines[-1]
    assert not (tmp_path / "w").exists()


def test_prior_description_is_not_a_conditional_one():
    d = ConditionalScoreModel().to_dict()
    assert d["family"] == "sgmse" and ConditionalScoreModel.from_dict(d) == ConditionalScoreModel()
    with pytest.raises(ValueError, match="model family 'sgmse'"):
        ScoreModel.from_dict(d)
    with pytest.raises(ValueError, match="in_channels=4"):
        ConditionalScoreModel(net=ScoreModel().net)


def test_convert_cli_writes_a_checkpoint_of_the_reference_family(tmp_path, capsys):
    from jaxse.diffusion import convert

    out = tmp_path / "sgmse_ref"
    assert convert.main([str(GOLDEN / "sgmse_cond_small.npz"), "-o", str(out)]) == 0
    assert "SGMSE+ conditional score model" in capsys.readouterr().out
    assert registry.detect_family(out) == "sgmse"
    backend = enhance.load_backend("sgmse+", out)
    assert isinstance(backend.model, ConditionalScoreModel) and backend.model.net.nf == 16


def test_shipped_supervised_model_enhances_unseen_noise(data_dir):
    """The supervised baseline shipped in jaxse/assets/supervised (the method's default checkpoint): its recorded
    size, and a clear SI-SDR gain on a 0 dB mixture of a valid speaker with a noise type it never saw."""
    from jaxse.evaluation.metrics import si_sdr
    from jaxse.pytree import count_params

    backend = enhance.load_backend("supervised")
    assert isinstance(backend.model, PredictiveModel) and count_params(backend.variables["params"]) == 396_670
    assert (registry.ASSETS / "supervised" / "MODEL_CARD.md").is_file()
    clean, sr = sf.read(data_dir / "valid" / "so762_0575_005750067.flac", dtype="float32")
    noise, _ = sf.read(data_dir / "noise" / "test" / "running_tap.flac", dtype="float32")
    clean = clean[: 2 * sr]
    noise = noise[sr:sr + len(clean)]
    noise *= np.sqrt(np.sum(clean**2) / np.sum(noise**2))  # 0 dB
    noisy = clean + noise
    (out,) = enhance.Enhancer(backend, batch_size=1, chunk_frames=256).enhance([noisy], ["mixture"])
    gain = si_sdr(out, clean) - si_sdr(noisy, clean)
    assert gain > 3.0, gain
