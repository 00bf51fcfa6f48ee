"""RVAE training (``config.model.family = "rvae"``): loss, KL warm-up, silence trimming, steps, exact resume,
early stopping, export to the rvae.json/rvae_params.npz format, and train.py with configs/rvae.py.

Tiny model (LSTMs of 16 units, z_dim 4) on a 64-point STFT (33 bins) and 8-frame crops of synthetic FLACs,
with XLA optimisations off (compile time dominates on CPU).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # for `configs`

from configs import rvae as rvae_config  # noqa: E402
from jaxse import export, training  # noqa: E402
from jaxse.rvae import training as rt  # noqa: E402
from jaxse.data import CleanSpeechDataset, trim_silence  # noqa: E402
from jaxse.logging_utils import read_metrics  # noqa: E402
from jaxse.rvae.net import RVAEConfig, decode, encode  # noqa: E402
from jaxse.rvae.convert import load_rvae  # noqa: E402
from jaxse.rvae.spectral import RVAESpecConfig  # noqa: E402

TINY = dict(x_dim=33, z_dim=4, dim_rnn_g_x=16, dim_rnn_g_z=16, dim_rnn_h=16)
TINY_SPEC = RVAESpecConfig(n_fft=64, hop_length=16)


def write_speech_like(root: Path, n_train: int = 4, n_valid: int = 2) -> Path:
    """Tones plus noise between quiet stretches (to be trimmed), 16 kHz FLACs in root/train and root/valid."""
    rng = np.random.default_rng(7)
    for split, count in (("train", n_train), ("valid", n_valid)):
        (root / split).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            t = np.arange(4800 + 160 * i) / 16000
            x = 0.3 * np.sin(2 * np.pi * (200 + 150 * i) * t) + 0.05 * rng.standard_normal(t.shape)
            x = np.concatenate([1e-4 * rng.standard_normal(3000), x, 1e-4 * rng.standard_normal(2000)])
            sf.write(root / split / f"{split}_{i}.flac", x.astype(np.float32), 16000, subtype="PCM_16")
    return root


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> Path:
    return write_speech_like(tmp_path_factory.mktemp("rvae_audio"))


def tiny_config(data: Path, **training_kw):
    config = rvae_config.get_config()
    config.model.update(TINY)
    config.spec.n_fft, config.spec.hop_length = TINY_SPEC.n_fft, TINY_SPEC.hop_length
    config.data.train_dir = str(data / "train")
    config.data.valid_dir = str(data / "valid")
    config.data.crop_frames = 8
    config.rvae.kl_warm_epochs = 1
    t = config.training
    t.batch_size, t.eval_batch_size, t.num_valid = 2, 2, 4
    t.num_steps, t.log_every, t.eval_every, t.checkpoint_every, t.keep_checkpoints = 4, 1, 2, 1, 2
    for k, v in training_kw.items():
        t[k] = v
    return config


def leaves_equal(a, b) -> bool:
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return len(la) == len(lb) and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


# ---------------------------------------------------------------------------------------------- the maths


def test_is_and_kl_hand_values():
    x = jnp.array([0.5, 1.0, 3.0, 1e-6])
    np.testing.assert_allclose(rt.itakura_saito(x, x), 0.0, atol=1e-7)  # identical spectra
    np.testing.assert_allclose(rt.itakura_saito(x, 2 * x), 0.5 + math.log(2) - 1, rtol=1e-6)
    assert np.isfinite(float(rt.itakura_saito(jnp.float32(0.0), jnp.float32(1.0))))  # digital silence: finite
    np.testing.assert_allclose(rt.gaussian_kl(jnp.zeros(3), jnp.zeros(3)), 0.0)  # q = prior
    np.testing.assert_allclose(rt.gaussian_kl(jnp.array(1.0), jnp.array(0.0)), 0.5, rtol=1e-6)  # mean shift 1
    # variance e: KL = ½(e - 1 - 1)
    np.testing.assert_allclose(rt.gaussian_kl(jnp.array(0.0), jnp.array(1.0)), 0.5 * (math.e - 2), rtol=1e-6)


def test_kl_warmup_follows_reference_epochs():
    w = lambda step: float(rt.kl_warmup_weight(step, steps_per_epoch=10, warm_epochs=50))  # noqa: E731
    assert [w(s) for s in (0, 9)] == [0.0, 0.0]  # epoch 0: w = 0/50
    assert w(10) == pytest.approx(1 / 50) and w(19) == pytest.approx(1 / 50) and w(255) == pytest.approx(25 / 50)
    assert w(499) == pytest.approx(49 / 50) and w(500) == 1.0 and w(10**7) == 1.0
    assert float(rt.kl_warmup_weight(0, 10, 0)) == 1.0  # no warm-up
    assert rt.steps_per_epoch(6222, 128) == 49 and rt.steps_per_epoch(5, 128) == 1


def test_rvae_loss_is_the_per_frame_objective(fast_compile):
    cfg = RVAEConfig(**TINY)
    params = rt.RVAEModel(cfg).init(jax.random.PRNGKey(0))["params"]
    x = jax.random.uniform(jax.random.PRNGKey(1), (6, 3, cfg.x_dim), minval=0.01, maxval=2.0)
    key = jax.random.PRNGKey(2)
    loss, parts = rt.rvae_loss(params, x, key, kl_weight=0.5, beta=0.01)
    z, mu, logvar = encode(params, x, key)
    v = np.exp(np.asarray(decode(params, z), np.float64)) + 1e-10
    xr = np.asarray(x, np.float64)
    recon = np.sum(xr / v - np.log(xr / v) - 1) / 18
    mu, logvar = np.asarray(mu, np.float64), np.asarray(logvar, np.float64)
    kl = -0.5 * np.sum(1 + logvar - mu**2 - np.exp(logvar)) / 18
    assert float(parts["recon"]) == pytest.approx(recon, rel=1e-5)
    assert float(parts["kl"]) == pytest.approx(kl, rel=1e-4)
    assert float(loss) == pytest.approx(recon + 0.5 * 0.01 * kl, rel=1e-5)


def test_power_spectrogram_matches_torch_stft():
    torch = pytest.importorskip("torch")
    wave = np.random.default_rng(3).uniform(-1, 1, (2, 7 * 256)).astype(np.float32)
    ours = np.asarray(rt.power_spectrogram(jnp.asarray(wave)))  # (T, B, F)
    win = torch.sin(torch.arange(0.5, 1024.5) / 1024 * np.pi)
    ref = torch.stft(torch.from_numpy(wave.astype(np.float64)), n_fft=1024, hop_length=256, win_length=1024,
                     window=win.double(), center=True, pad_mode="reflect", return_complex=True).abs() ** 2
    ref = ref.numpy().transpose(2, 0, 1)  # (B, F, T) -> (T, B, F)
    assert ours.shape == (8, 2, 513)
    np.testing.assert_allclose(ours, ref, rtol=2e-3, atol=1e-3 * ref.max())


# ---------------------------------------------------------------------------------------------- silence trim


def test_trim_silence_librosa_definition():
    sr, n, s0, e0 = 16000, 32000, 8000, 24000
    x = np.zeros(n)
    x[s0:e0] = 0.5 * np.sin(2 * np.pi * 440 * np.arange(e0 - s0) / sr)
    # Frame t (hop 512) covers x[512 t - 1024, 512 t + 1024). Frame 13 ends at 7680 < 8000: silent (-inf dB);
    # frame 14 overlaps the tone by 192 samples (~ -10 dB): kept. Frame 48 overlaps by 448, frame 49 not at all.
    assert trim_silence(x, top_db=30) == (14 * 512, 49 * 512)
    # quiet noise instead of zeros: 1e-3 is -51 dB under the tone's RMS, still silent at 30 dB, not at 60 dB
    rng = np.random.default_rng(0)
    y = x + 1e-3 * rng.standard_normal(n)
    assert trim_silence(y, top_db=30) == (14 * 512, 49 * 512)
    assert trim_silence(y, top_db=60) == (0, n)
    # the end is clipped to the signal; constant and all-zero signals are not trimmed (every frame at 0 dB)
    assert trim_silence(np.r_[np.zeros(5000), np.ones(1000)], top_db=30)[1] == 6000
    assert trim_silence(np.zeros(3000)) == (0, 3000) and trim_silence(np.full(3000, 0.2)) == (0, 3000)
    assert trim_silence(np.zeros(0)) == (0, 0)
    # a brute-force transcription of librosa's rms -> amplitude_to_db -> threshold, on a random envelope
    z = rng.standard_normal(20000) * np.r_[np.full(6000, 1e-3), np.ones(9000), np.full(5000, 3e-3)]
    padded = np.pad(z, 1024)
    rms = np.array([np.sqrt(np.mean(padded[t * 512:t * 512 + 2048] ** 2)) for t in range(1 + len(z) // 512)])
    db = 20 * np.log10(np.maximum(rms, 1e-5)) - 20 * np.log10(max(rms.max(), 1e-5))
    loud = np.flatnonzero(db > -30)
    assert trim_silence(z, top_db=30) == (loud[0] * 512, min(len(z), (loud[-1] + 1) * 512))


def test_dataset_trims_and_counts_chunks(speech):
    plain = CleanSpeechDataset(speech / "train", crop_frames=8, spec=TINY_SPEC)
    ds = CleanSpeechDataset(speech / "train", crop_frames=8, spec=TINY_SPEC, trim_top_db=30, sample_by_length=True)
    assert ds.crop_length == 7 * 16 and ds.num_decodes == len(ds) == 4  # decoded when built
    for i in range(len(ds)):
        start, end = ds.trim_bounds[i]
        raw = plain.load(i)
        assert (start, end) == trim_silence(raw, 30) and ds.lengths[i] == end - start < len(raw)
        np.testing.assert_array_equal(ds.load(i), raw[start:end])
        assert ds.num_chunks(i) == (1 + ds.lengths[i] // 16) // 8
    assert ds.total_chunks == sum(ds.num_chunks(i) for i in range(4))
    assert ds.num_decodes == 4  # no decoding after the build
    # every chunk of the validation plan lies inside its trimmed file
    plan = ds.valid_plan(chunks=True)
    assert len(plan) == ds.total_chunks and all(s + ds.crop_length <= ds.lengths[i] for i, s in plan)
    batch = ds.train_batch(seed=0, step=5, global_batch_size=4)
    assert batch.shape == (4, 112) and np.allclose(np.abs(batch).max(axis=1), 1.0)
    # too short once trimmed: left out
    short = CleanSpeechDataset(speech / "train", crop_frames=470, spec=TINY_SPEC, trim_top_db=30)  # 7504 samples
    assert [p.name for p in short.short] == ["train_0.flac", "train_1.flac", "train_2.flac"]  # 7168 once trimmed
    assert [p.name for p in short.files] == ["train_3.flac"]  # 7680


# ---------------------------------------------------------------------------------------------- steps and runs


def test_train_steps_reduce_the_loss(fast_compile):
    model = rt.RVAEModel(RVAEConfig(**TINY))
    tx = optax.adam(3e-3)
    mesh = training.make_mesh()
    state = training.create_train_state(model, tx, 0, TINY_SPEC.num_bins, mesh)
    assert state.ema_params is None and state.constants == {}
    objective = rt.RVAEObjective(beta=0.01, kl_warm_epochs=0, steps_per_epoch=1)
    step = training.make_train_step(model, TINY_SPEC, tx, 0.0, mesh, objective=objective)
    t = np.arange(8 * 112) / 16000
    waves = np.stack([np.sin(2 * np.pi * f * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t)) for f in (300, 800)])
    waves = training.global_batch({"waves": waves.reshape(-1, 112).astype(np.float32)}, mesh)  # 16 crops
    losses = []
    for _ in range(40):
        state, metrics = step(state, waves)
        losses.append(float(metrics["loss"]))
    assert int(state.step) == 40 and all(map(math.isfinite, losses))
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    assert float(metrics["kl_weight"]) == 1.0 and set(metrics) == {"loss", "recon", "kl", "kl_weight", "grad_norm"}


@pytest.fixture(scope="module")
def straight_run(speech, tmp_path_factory):
    """4 steps in one go: checkpoint every step (keep 2 + the best), validation at steps 2 and 4."""
    old = jax.config.values["jax_disable_most_optimizations"]
    jax.config.update("jax_disable_most_optimizations", True)
    try:
        config = tiny_config(speech)
        workdir = tmp_path_factory.mktemp("rvae_straight")
        state = training.train_and_evaluate(config, workdir)
    finally:
        jax.config.update("jax_disable_most_optimizations", old)
    return config, workdir, state


@pytest.mark.slow  # a second training run, ~8 s (issue 27)
def test_resumed_rvae_run_is_bitwise_identical(straight_run, speech, tmp_path, fast_compile):
    config, _, straight = straight_run
    workdir = tmp_path / "resumed"
    first = training.train_and_evaluate(tiny_config(speech, num_steps=2), workdir)
    assert int(first.step) == 2
    resumed = training.train_and_evaluate(config, workdir)
    assert int(resumed.step) == int(straight.step) == 4
    for field in ("step", "params", "opt_state", "constants", "key"):
        assert leaves_equal(getattr(resumed, field), getattr(straight, field)), field
    assert resumed.ema_params is None
    train = [r for r in read_metrics(workdir) if "train/loss" in r]
    assert [r["step"] for r in train] == [1, 2, 3, 4]


def test_rvae_run_logs_and_checkpoints(straight_run):
    config, workdir, state = straight_run
    recs = read_metrics(workdir)
    train = [r for r in recs if "train/loss" in r]
    valid = [r for r in recs if "valid/loss" in r]
    assert [r["step"] for r in valid] == [2, 4]
    for r in valid:  # the validation loss is IS + β·KL with the full KL weight
        assert r["valid/loss"] == pytest.approx(r["valid/recon"] + 0.01 * r["valid/kl"], rel=1e-5)
    meta = training.read_checkpoint_metadata(workdir)
    spe = meta["data"]["steps_per_epoch"]
    for r in train:
        assert r["train/epoch"] == pytest.approx(r["step"] / spe)
        assert r["train/kl_weight"] == (0.0 if r["step"] - 1 < spe else 1.0)  # warm-up of 1 epoch
        expected = r["train/recon"] + r["train/kl_weight"] * 0.01 * r["train/kl"]
        assert r["train/loss"] == pytest.approx(expected, rel=1e-5)
    assert meta["model"] == {"family": "rvae", **RVAEConfig(**TINY).to_dict()}
    assert meta["spec"]["n_fft"] == 64 and meta["data"]["train_files"] == 4
    best_step = min(valid, key=lambda r: r["valid/loss"])["step"]
    assert meta["best"]["step"] == best_step
    kept = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    assert kept == sorted({3, 4, best_step})  # the 2 newest and the best
    model, variables, _ = training.load_checkpoint(workdir)
    assert isinstance(model, rt.RVAEModel) and model.cfg == RVAEConfig(**TINY)
    assert leaves_equal(variables["params"], state.params) and variables["constants"] == {}


def test_export_writes_load_rvae_format(straight_run, tmp_path):
    _, workdir, _ = straight_run
    valid = {r["step"]: r["valid/loss"] for r in read_metrics(workdir) if "valid/loss" in r}
    best = min(valid, key=valid.get)
    out = tmp_path / "exported"
    assert export.main([str(workdir), "-o", str(out)]) == 0
    cfg, params = load_rvae(out)
    assert cfg == RVAEConfig(**TINY)
    _, variables, _ = training.load_checkpoint(workdir / "checkpoints" / str(best))
    assert leaves_equal(params, variables["params"])
    info = json.loads((out / "rvae.json").read_text())
    assert info["step"] == best and info["valid_loss"] == pytest.approx(valid[best])
    assert info["training"]["rvae"]["beta"] == 0.01
    assert info["num_params"] == sum(p.size for p in jax.tree.leaves(params))
    card = (out / "MODEL_CARD.md").read_text()
    assert f"step {best}" in card and "β = 0.01" in card and f"{info['num_params']:,}" in card
    assert "Validation loss (step) during training: " in card and f"({best})" in card
    # an explicit step
    assert export.main([str(workdir), "-o", str(tmp_path / "s4"), "--step", "4"]) == 0
    assert json.loads((tmp_path / "s4" / "rvae.json").read_text())["step"] == 4


def test_warm_start_from_an_rvae_export_and_export_dir(straight_run, speech, tmp_path, fast_compile):
    """An exported RVAE continues at its epoch (the KL warm-up counts epochs); new bests are exported."""
    _, workdir, _ = straight_run
    src = tmp_path / "src"
    assert export.main([str(workdir), "-o", str(src), "--step", "4"]) == 0
    info = json.loads((src / "rvae.json").read_text())
    _, src_params = load_rvae(src)
    config = tiny_config(speech, num_steps=6, eval_every=1, init_from=str(src),
                         export_dir=str(tmp_path / "best"))
    model = training.model_from_config(config)
    mesh = training.make_mesh()
    bins = training.spec_from_config(config).num_bins
    fresh = training.create_train_state(model, training.optimizer_from_config(config), 0, bins, mesh=mesh)
    warm, winfo = training.warm_start_state(fresh, model, src, mesh, steps_per_epoch=2 * info["data"]["steps_per_epoch"])
    assert winfo["step"] == int(warm.step) == round(info["epoch"] * 2 * info["data"]["steps_per_epoch"])
    assert leaves_equal(warm.params, src_params) and warm.ema_params is None
    state = training.train_and_evaluate(config, tmp_path / "run")
    assert int(state.step) == 6
    valid = {r["step"]: r["valid/loss"] for r in read_metrics(tmp_path / "run") if "valid/loss" in r}
    assert min(valid) == 4  # the source's weights are scored at its step first
    later = [s for s in valid if s > 4 and valid[s] < min(valid[k] for k in valid if k < s)]
    if later:
        cfg, params = load_rvae(tmp_path / "best")
        exported = json.loads((tmp_path / "best" / "rvae.json").read_text())
        assert exported["step"] == later[-1] and exported["valid_loss"] == pytest.approx(valid[later[-1]], rel=1e-6)
        assert exported["init_from"]["step"] == 4 and (tmp_path / "best" / "MODEL_CARD.md").is_file()
        assert exported["source"] == "jaxse train.py"
        if later[-1] == int(state.step):
            assert leaves_equal(params, state.params)
    else:
        assert not (tmp_path / "best").exists()


def test_keep_best_checkpoint_across_restarts(tmp_path):
    state = {"w": np.arange(3.0)}
    losses = {1: 5.0, 2: 1.0, 3: 4.0, 4: 9.0, 5: 9.0, 6: 9.0}
    for steps in ((1, 2, 3), (4, 5, 6)):  # a second manager, as after a restart, knows the earlier metrics
        with training.checkpoint_manager(tmp_path, keep=2, keep_best=True) as mngr:
            for s in steps:
                training.save_checkpoint(mngr, state, {"step": s}, s, metrics={"valid_loss": losses[s]})
            mngr.wait_until_finished()
    assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()) == [2, 5, 6]


def test_early_stopping(speech, tmp_path, fast_compile):
    # lr 1e-30 (0 is refused): the parameters do not change in float32, the validation loss never improves
    # after step 1
    config = tiny_config(speech, num_steps=1000, lr=1e-30, eval_every=1, checkpoint_every=1000,
                         early_stop_patience_epochs=1)
    config.rvae.kl_warm_epochs = 0
    state = training.train_and_evaluate(config, tmp_path)
    spe = training.read_checkpoint_metadata(tmp_path)["data"]["steps_per_epoch"]
    assert int(state.step) == 1 + spe  # best at step 1, stopped one epoch later
    meta = training.read_checkpoint_metadata(tmp_path)
    assert meta["step"] == 1 + spe and meta["best"]["step"] == 1
    again = training.train_and_evaluate(config, tmp_path)  # resuming a stopped run does nothing
    assert int(again.step) == 1 + spe


def test_rvae_config_is_the_reference_recipe():
    c = rvae_config.get_config()
    model = training.model_from_config(c)
    assert isinstance(model, rt.RVAEModel) and model.cfg == RVAEConfig()
    assert training.spec_from_config(c) == RVAESpecConfig()
    assert (c.data.crop_frames, c.data.trim_top_db, c.rvae.beta, c.rvae.kl_warm_epochs) == (50, 30.0, 0.01, 50)
    t = c.training
    assert (t.batch_size, t.lr, t.num_epochs, t.early_stop_patience_epochs) == (128, 1e-3, 300, 30)
    assert "sde" not in c and "sampling" not in c
    c.model.x_dim = 257
    with pytest.raises(ValueError, match="x_dim"):
        training.validate_config(c, training.model_from_config(c), training.make_mesh())
    c = rvae_config.get_config()
    c.model.dim_rnn_q = 3
    with pytest.raises(ValueError, match="unknown config.model fields"):
        training.model_from_config(c)


# ---------------------------------------------------------------------------------------------- train.py


@pytest.mark.slow  # train.py in a subprocess, ~13 s (issue 27)
def test_train_py_rvae_on_shared_data(data_dir, tmp_path):
    """configs/rvae.py, 2 steps on ../shared/data (trimmed, chunked) with a tiny network and batch."""
    workdir = tmp_path / "run"
    env = dict(os.environ, JAX_DISABLE_MOST_OPTIMIZATIONS="1", JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    args = [sys.executable, str(REPO / "train.py"), "--config", str(REPO / "configs" / "rvae.py"),
            "--workdir", str(workdir), f"--config.data.train_dir={data_dir / 'train'}",
            f"--config.data.valid_dir={data_dir / 'valid'}", "--config.model.z_dim=4",
            "--config.model.dim_rnn_g_x=8", "--config.model.dim_rnn_g_z=8", "--config.model.dim_rnn_h=8",
            "--config.training.batch_size=2", "--config.training.eval_batch_size=2",
            "--config.training.num_valid=2", "--config.training.num_steps=2", "--config.training.log_every=1",
            "--config.training.eval_every=2"]
    proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "steps 0 -> 2" in proc.stderr and "steps/epoch" in proc.stderr
    recs = read_metrics(workdir)
    assert [r["step"] for r in recs if "train/loss" in r] == [1, 2]
    assert all(math.isfinite(r["valid/loss"]) for r in recs if "valid/loss" in r)
    meta = training.read_checkpoint_metadata(workdir)
    assert meta["step"] == 2 and meta["model"]["family"] == "rvae"
    # the trimmed training set of the data pack: fewer chunks than its untrimmed 2 h would give
    assert meta["data"]["train_files"] > 1000 and 1.0 < meta["data"]["train_hours"] < 2.0
    assert meta["data"]["steps_per_epoch"] == math.ceil(meta["data"]["train_chunks"] / 2)


def test_model_card_reproduces_a_warm_started_export_from_its_source():
    scratch = rt._reproduce({"step": 2744})
    assert "configs/rvae.py" in scratch[0] and "num_steps=2744" in scratch[0]
    warm = "\n".join(rt._reproduce({"step": 6935, "init_from": {"source": "jaxse/assets/rvae", "step": 4088}}))
    assert "--config.training.init_from=jaxse/assets/rvae" in warm and "num_steps=6935" in warm
