"""Training: loss, EMA warm-up, Adam, exact resume, checkpoints, configs and the train.py entry point.

Everything runs on a tiny network (nf 8, two levels) and 8-frame crops of synthetic FLACs, with XLA
optimisations off (compile time dominates on CPU).
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
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # for `configs`

from configs import cpu_small, default, udiffse_65m, udiffse_plus_28m  # noqa: E402
from jaxse import training  # noqa: E402
from jaxse.diffusion import training as dsm  # noqa: E402
from jaxse.logging_utils import MetricWriter, ProgressBar, format_duration, read_metrics  # noqa: E402
from jaxse.diffusion.models import UDIFFSE_65M, UDIFFSE_PLUS_28M, ScoreModel  # noqa: E402
from jaxse.diffusion.sde import OUVESDE  # noqa: E402


# ----------------------------------------------------------------------------------------- fixtures



def write_synthetic_audio(root: Path, n_train: int = 4, n_valid: int = 2, seconds: float = 0.3) -> Path:
    """Sines plus noise as 16 kHz FLACs in ``root/train`` and ``root/valid``."""
    rng = np.random.default_rng(123)
    sr = 16000
    n = int(seconds * sr)
    for split, count in (("train", n_train), ("valid", n_valid)):
        (root / split).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            t = np.arange(n + 160 * i) / sr
            x = 0.3 * np.sin(2 * np.pi * (200 + 150 * i) * t) + 0.05 * rng.standard_normal(t.shape)
            sf.write(root / split / f"{split}_{i}.flac", x.astype(np.float32), sr, subtype="PCM_16")
    return root


@pytest.fixture(scope="module")
def synth_data(tmp_path_factory) -> Path:
    return write_synthetic_audio(tmp_path_factory.mktemp("audio"))


def tiny_config(data: Path, **training):
    config = default.get_config()
    config.model.nf = 8
    config.model.ch_mult = (1, 2)
    config.model.num_res_blocks = 1
    config.model.attn_resolutions = ()
    config.model.parameterization = "noise"
    config.data.train_dir = str(data / "train")
    config.data.valid_dir = str(data / "valid")
    config.data.crop_frames = 8
    config.data.num_workers = 0  # batches made in the loop's thread (input workers: their own tests)
    t = config.training
    t.batch_size, t.eval_batch_size, t.num_valid = 2, 2, 2
    t.num_steps, t.log_every, t.eval_every, t.checkpoint_every, t.keep_checkpoints = 4, 1, 2, 1, 2
    t.sample_every = 0
    config.sampling.num_steps, config.sampling.num_samples, config.sampling.num_frames = 2, 1, 16
    for k, v in training.items():
        t[k] = v
    return config


def tiny_override_flags(data: Path) -> list[str]:
    """The same tiny setup as command-line overrides of configs/cpu_small.py."""
    return [
        "--config.model.nf=8", "--config.model.ch_mult=(1,2)", "--config.model.num_res_blocks=1",
        f"--config.data.train_dir={data / 'train'}", f"--config.data.valid_dir={data / 'valid'}",
        "--config.data.crop_frames=8", "--config.training.batch_size=2", "--config.training.eval_batch_size=2",
        "--config.training.num_valid=2", "--config.training.log_every=1", "--config.training.eval_every=2",
        "--config.training.checkpoint_every=1",
    ]


def leaves_equal(a, b) -> bool:
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return len(la) == len(lb) and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


# ------------------------------------------------------------------------------------------ pieces


def test_ema_decay_warmup_follows_torch_ema():
    # torch_ema increments num_updates and then uses it: the first update has k = 1.
    for k in (1, 2, 9, 100):
        assert float(training.ema_decay_at(k, 0.999)) == pytest.approx((1 + k) / (10 + k), rel=1e-6)
    assert float(training.ema_decay_at(1, 0.999)) == pytest.approx(2 / 11, rel=1e-6)
    assert float(training.ema_decay_at(10**6, 0.999)) == pytest.approx(0.999, rel=1e-7)
    e, p, d = jnp.array([1.0, 2.0]), jnp.array([3.0, 0.0]), jnp.float32(0.25)
    np.testing.assert_allclose(training.ema_update({"a": e}, {"a": p}, d)["a"], e - 0.75 * (e - p), rtol=1e-6)


class _OracleModel:
    """Duck-typed model whose score is the exact conditional score -(x - μx0)/σ², or zero."""

    def __init__(self, sde, x0, zero=False):
        self.sde, self.x0, self.zero, self.seen_t = sde, x0, zero, []

    def score(self, variables, x, t):
        self.seen_t.append(np.asarray(t))
        if self.zero:
            return jnp.zeros_like(x)
        mean, std = self.sde.marginal(self.x0, t)
        return -(x - mean) / (std[:, None, None] ** 2)


def test_dsm_loss_is_the_reference_objective():
    sde = OUVESDE()
    b, f, n = 16, 32, 24
    x0 = jax.random.normal(jax.random.PRNGKey(0), (b, f, n)) + 1j * jax.random.normal(jax.random.PRNGKey(1), (b, f, n))
    x0 = x0.astype(jnp.complex64)
    oracle = _OracleModel(sde, x0)
    loss, per = dsm.dsm_loss(oracle, None, x0, jax.random.PRNGKey(2))
    assert per.shape == (b,) and float(loss) < 1e-6 * f * n  # σ·score + z = 0 for the true score
    t = oracle.seen_t[0]
    assert t.shape == (b,) and len(set(t.tolist())) == b and t.min() >= sde.t_eps and t.max() <= sde.T
    zero = _OracleModel(sde, x0, zero=True)
    loss0, per0 = dsm.dsm_loss(zero, None, x0, jax.random.PRNGKey(2))
    # zero score: 0.5·Σ|z|² with E|z|² = 1 (variance 1/2 per component), averaged over the batch
    assert float(loss0) == pytest.approx(0.5 * f * n, rel=0.03)
    assert float(loss0) == pytest.approx(float(jnp.mean(per0)), rel=1e-6)


def test_adam_matches_torch_formula():
    config = default.get_config()
    tx = training.optimizer_from_config(config)
    p = {"w": jnp.array([0.5, -1.0, 2.0], jnp.float32)}
    state = tx.init(p)
    m = v = np.zeros(3)
    w = np.array([0.5, -1.0, 2.0])
    lr, b1, b2, eps = 1e-4, 0.9, 0.999, 1e-8
    for k in range(1, 4):
        g = np.array([0.1, -0.2, 0.3]) * k
        upd, state = tx.update({"w": jnp.asarray(g, jnp.float32)}, state, p)
        p = {"w": p["w"] + upd["w"]}
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        w = w - lr * (m / (1 - b1**k)) / (np.sqrt(v / (1 - b2**k)) + eps)  # torch.optim.Adam
    np.testing.assert_allclose(np.asarray(p["w"]), w, rtol=1e-6)


def test_progress_bar_and_metric_writer(tmp_path):
    import io

    stream = io.StringIO()
    bar = ProgressBar(10, initial=4, stream=stream, log_interval=0.0)
    bar.update(5, loss=1.25)
    bar.write("hello")
    bar.close()
    out = stream.getvalue()
    assert "5/10" in out and "loss 1.2500" in out and "step/s" in out and "ETA" in out and "hello" in out
    assert format_duration(3725) == "1:02:05" and format_duration(65) == "01:05" and format_duration(math.inf) == "?"

    w = MetricWriter(tmp_path)
    for s in (1, 2, 3):
        w.write_scalars(s, {"train/loss": float(s)})
    w.close()
    assert any((tmp_path / "tb").iterdir())
    w = MetricWriter(tmp_path, resume_step=2)  # a run resumed at step 2 drops the records after it
    w.write_scalars(3, {"train/loss": 30.0})
    w.close()
    assert [(r["step"], r["train/loss"]) for r in read_metrics(tmp_path)] == [(1, 1.0), (2, 2.0), (3, 30.0)]
    MetricWriter(tmp_path / "off", enabled=False).write_scalars(1, {"x": 1.0})
    assert not (tmp_path / "off").exists()


# ------------------------------------------------------------------------------------------ configs


@pytest.mark.parametrize("mod", [default, udiffse_65m, udiffse_plus_28m, cpu_small])
def test_configs_build(mod):
    config = mod.get_config()
    model = training.model_from_config(config)
    spec = training.spec_from_config(config)
    assert spec.sample_rate == config.data.sample_rate == 16000 and spec.num_bins == 256
    assert config.data.crop_frames % model.net.frame_multiple == 0
    assert config.sampling.num_frames % model.net.frame_multiple == 0
    assert config.training.ema_decay == 0.999
    assert config.training.lr == (1e-3 if mod is cpu_small else 1e-4)
    json.dumps(training.checkpoint_metadata(config, model, spec, 0))  # JSON-serialisable


def test_reference_configs_are_the_reference_models():
    assert training.model_from_config(udiffse_65m.get_config()) == UDIFFSE_65M
    assert training.model_from_config(udiffse_plus_28m.get_config()) == UDIFFSE_PLUS_28M
    assert udiffse_65m.get_config().training.batch_size == 28  # 2 GPUs × 14 in the reference
    assert udiffse_plus_28m.get_config().training.batch_size == 4


def test_data_dirs_follow_jaxse_data(monkeypatch):
    monkeypatch.delenv("JAXSE_DATA", raising=False)
    c = default.get_config()
    assert Path(c.data.train_dir) == Path("..", "shared", "data", "train")
    monkeypatch.setenv("JAXSE_DATA", "/somewhere/data")
    c = default.get_config()
    assert Path(c.data.train_dir) == Path("/somewhere/data/train")
    assert Path(c.data.valid_dir) == Path("/somewhere/data/valid")


def test_bad_configs_are_rejected(synth_data):
    c = tiny_config(synth_data)
    c.model.parameterization = "x0"
    with pytest.raises(ValueError, match="parameterization"):
        training.model_from_config(c)
    c = tiny_config(synth_data)
    c.data.crop_frames = 7
    with pytest.raises(ValueError, match="crop_frames"):
        training.validate_config(c, training.model_from_config(c), training.make_mesh())


# --------------------------------------------------------------------------- training, resume, checkpoints


@pytest.fixture(scope="module")
def straight_run(synth_data, tmp_path_factory):
    """4 steps in one go (checkpoint every step, keep 2)."""
    old = jax.config.values["jax_disable_most_optimizations"]
    jax.config.update("jax_disable_most_optimizations", True)
    try:
        config = tiny_config(synth_data)
        workdir = tmp_path_factory.mktemp("straight")
        state = training.train_and_evaluate(config, workdir)
    finally:
        jax.config.update("jax_disable_most_optimizations", old)
    return config, workdir, state


@pytest.mark.slow  # a second training run, ~25-35 s (issue 27)
def test_resumed_run_is_bitwise_identical(straight_run, synth_data, tmp_path, fast_compile):
    config, _, straight = straight_run
    workdir = tmp_path / "resumed"
    half = tiny_config(synth_data, num_steps=2)
    first = training.train_and_evaluate(half, workdir)
    assert int(first.step) == 2
    # a record written after the last checkpoint by an "interrupted" run is dropped on resume
    with open(workdir / "metrics.jsonl", "a") as fh:
        fh.write(json.dumps({"step": 3, "train/loss": -1.0}) + "\n")
    resumed = training.train_and_evaluate(config, workdir)  # restores step 2 from disk, runs 2 more
    assert int(resumed.step) == int(straight.step) == 4
    for field in ("step", "params", "ema_params", "opt_state", "constants", "key"):
        assert leaves_equal(getattr(resumed, field), getattr(straight, field)), field
    steps = [r["step"] for r in read_metrics(workdir) if "train/loss" in r]
    assert steps == [1, 2, 3, 4]
    assert all(r["train/loss"] > 0 for r in read_metrics(workdir) if "train/loss" in r)


@pytest.mark.slow  # two runs with worker processes, ~40 s
def test_resume_through_input_workers_is_bitwise_identical(straight_run, synth_data, tmp_path, fast_compile):
    """Steps 1-2 with 2 input worker processes, 3-4 resumed with 1: the straight run (batches made in the
    loop's thread) exactly, and the header store of the folders written once and reused."""
    _, _, straight = straight_run
    workdir = tmp_path / "workers"
    half = tiny_config(synth_data, num_steps=2)
    half.data.num_workers, half.data.prefetch = 2, 1
    training.train_and_evaluate(half, workdir)
    store = (workdir / "train_manifest.jsonl").read_text()
    full = tiny_config(synth_data)
    full.data.num_workers, full.data.cache_mb = 1, 1
    resumed = training.train_and_evaluate(full, workdir)
    for field in ("step", "params", "ema_params", "opt_state", "constants", "key"):
        assert leaves_equal(getattr(resumed, field), getattr(straight, field)), field
    assert (workdir / "train_manifest.jsonl").read_text() == store  # nothing probed again


def test_training_changes_params_and_tracks_ema(straight_run, fast_compile):
    config, _, state = straight_run
    model = training.model_from_config(config)
    tx = training.optimizer_from_config(config)
    init = training.create_train_state(model, tx, config.training.seed)
    assert int(state.step) == 4
    assert not leaves_equal(state.params, init.params)
    assert leaves_equal(state.constants, init.constants)  # never trained
    # EMA with warm-up decays 2/11, 3/12, 4/13, 5/14: it lags the params but has moved from the init
    assert not leaves_equal(state.ema_params, state.params) and not leaves_equal(state.ema_params, init.params)
    assert np.array_equal(np.asarray(state.key), np.asarray(init.key))


def test_metrics_and_tensorboard_written(straight_run):
    _, workdir, _ = straight_run
    recs = read_metrics(workdir)
    assert [r["step"] for r in recs if "train/loss" in r] == [1, 2, 3, 4]
    assert [r["step"] for r in recs if "valid/loss" in r] == [2, 4]
    first = next(r for r in recs if "train/loss" in r)
    assert first["train/ema_decay"] == pytest.approx(2 / 11, rel=1e-6)
    assert all(math.isfinite(r.get("valid/loss", 0.0)) for r in recs)
    assert list((workdir / "tb").glob("events.out.tfevents.*"))


def test_checkpoints_are_self_describing(straight_run, fast_compile):
    config, workdir, state = straight_run
    ckdir = workdir / "checkpoints"
    assert sorted(int(p.name) for p in ckdir.iterdir() if p.name.isdigit()) == [3, 4]  # keep 2, newest last
    meta = training.read_checkpoint_metadata(workdir)
    assert meta["step"] == 4 and meta["sample_rate"] == 16000 and meta["jaxse_version"]
    assert meta["config"]["training"]["batch_size"] == 2 and meta["spec"]["n_fft"] == 510
    model, variables, meta2 = training.load_checkpoint(workdir)
    assert model == training.model_from_config(config) and meta2 == meta
    assert isinstance(model, ScoreModel)
    assert leaves_equal(variables["params"], state.ema_params)
    assert leaves_equal(variables["constants"], state.constants)
    # a step directory works too, and a specific step
    _, v3, m3 = training.load_checkpoint(ckdir / "3")
    assert m3["step"] == 3 and not leaves_equal(v3["params"], variables["params"])
    x = jnp.zeros((1, 256, 8), jnp.complex64)
    assert model.score(variables, x, jnp.full((1,), 0.5)).shape == x.shape
    # the full TrainState restores bit for bit
    tx = training.optimizer_from_config(config)
    abstract = training.abstract_train_state(model, tx, config.training.seed)
    with training.checkpoint_manager(workdir, read_only=True) as mngr:
        restored = training.restore_train_state(mngr, abstract)
    assert leaves_equal(restored, state)


# ---------------------------------------------------------------------------------- train.py end to end


def _run_train_py(args, timeout=300):
    env = dict(os.environ, JAX_DISABLE_MOST_OPTIMIZATIONS="1", JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run([sys.executable, str(REPO / "train.py"), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


@pytest.mark.slow  # ~35 s; resume is also covered by test_resumed_run_is_bitwise_identical (slow too)
def test_train_py_end_to_end_and_resume(synth_data, tmp_path):
    workdir = tmp_path / "run"
    base = ["--config", str(REPO / "configs" / "cpu_small.py"), "--workdir", str(workdir),
            *tiny_override_flags(synth_data),
            "--config.training.sample_every=2", "--config.sampling.num_steps=2", "--config.sampling.num_samples=1",
            "--config.sampling.num_frames=16"]
    p1 = _run_train_py(base + ["--config.training.num_steps=2"])
    assert "steps 0 -> 2" in p1.stderr and "2/2" in p1.stderr
    assert (workdir / "checkpoints" / "2").is_dir()
    wav = workdir / "samples" / "step_000002_0.wav"
    info = sf.info(str(wav))
    assert info.samplerate == 16000 and info.frames == 15 * 128
    x, _ = sf.read(str(wav))
    assert np.isfinite(x).all() and np.abs(x).max() > 0
    p2 = _run_train_py(base + ["--config.training.num_steps=3"])
    assert "steps 2 -> 3 (resumed from checkpoint 2)" in p2.stderr and "3/3" in p2.stderr
    assert (workdir / "checkpoints" / "3").is_dir()
    assert [r["step"] for r in read_metrics(workdir) if "train/loss" in r] == [1, 2, 3]
    assert training.read_checkpoint_metadata(workdir)["step"] == 3
    # a typo in a config field is an error (the config is locked)
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    bad = subprocess.run([sys.executable, str(REPO / "train.py"), *base, "--config.training.num_stepz=3"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and len(bad.stderr.splitlines()) == 1, bad.stderr  # one line, a usage error
    assert bad.stderr.startswith("train.py: error: unknown --config.training.num_stepz: training has no field")


# ------------------------------------------------------------------------------------------- real data


@pytest.mark.slow
def test_cpu_small_learns_on_shared_data(data_dir, tmp_path):
    """cpu_small for 100 steps on ../shared/data: the EMA validation loss falls (~2 min on 2 cores)."""
    config = cpu_small.get_config()
    config.data.train_dir = str(data_dir / "train")
    config.data.valid_dir = str(data_dir / "valid")
    config.training.num_steps = 100
    config.training.eval_every = 50
    config.training.sample_every = 0
    config.training.checkpoint_every = 100
    training.train_and_evaluate(config, tmp_path)
    recs = read_metrics(tmp_path)
    valid = [r["valid/loss"] for r in recs if "valid/loss" in r]
    train = [r["train/loss"] for r in recs if "train/loss" in r]
    assert len(valid) == 2 and train[-1] < train[0] and valid[-1] < valid[0]


# ------------------------------------------------------- warm start, progressive crops, export of the best


def test_crop_schedule_parsing(synth_data):
    c = tiny_config(synth_data)
    assert training.crop_phases(c) == [(0, 8, 2)]
    c.data.crop_schedule = "0:8x4, 10:16x2,20:32"
    phases = training.crop_phases(c)
    assert phases == [(0, 8, 4), (10, 16, 2), (20, 32, 2)]  # no batch: training.batch_size
    assert [training.phase_at(phases, s)[1] for s in (1, 10, 11, 20, 21, 10**6)] == [8, 8, 16, 16, 32, 32]
    for bad in ("5:8x2", "0:8x2,10:16,10:32", "0:8x2,abc", "0:0x2"):
        c.data.crop_schedule = bad
        with pytest.raises(ValueError, match="crop_schedule"):
            training.crop_phases(c)
    c.data.crop_schedule = "0:8x2,4:9x2"  # 9 frames: not a multiple of the network's 2
    with pytest.raises(ValueError, match="crop_schedule frames"):
        training.validate_config(c, training.model_from_config(c), training.make_mesh())
    c.data.crop_schedule = ""
    c.data.valid_frames = 7
    with pytest.raises(ValueError, match="valid_frames"):
        training.validate_config(c, training.model_from_config(c), training.make_mesh())


def test_optimizer_warmup_scales_the_first_updates(synth_data):
    grads = {"w": jnp.ones((3,))}
    params = {"w": jnp.zeros((3,))}
    plain = training.optimizer_from_config(tiny_config(synth_data, lr=1e-2))
    warm = training.optimizer_from_config(tiny_config(synth_data, lr=1e-2, warmup_steps=4))
    sp, sw = plain.init(params), warm.init(params)
    for k in range(6):
        up, sp = plain.update(grads, sp, params)
        uw, sw = warm.update(grads, sw, params)
        # Adam's bias-corrected step on a constant gradient is -lr; the warm-up scales it by min(1, (k+1)/4)
        np.testing.assert_allclose(uw["w"], up["w"] * min(1.0, (k + 1) / 4), rtol=1e-5)
    with pytest.raises(ValueError, match="warmup_steps"):
        training.optimizer_from_config(tiny_config(synth_data, warmup_steps=-1))


@pytest.mark.slow  # ~10 s (issue 27)
def test_warm_start_state_takes_weights_and_step_not_optimizer(straight_run, synth_data, fast_compile):
    config, workdir, straight = straight_run
    model = training.model_from_config(config)
    tx = training.optimizer_from_config(config)
    mesh = training.make_mesh()
    fresh = training.create_train_state(model, tx, 1, mesh=mesh)
    warm, info = training.warm_start_state(fresh, model, workdir, mesh)
    assert int(warm.step) == 4 and info == {"source": str(workdir), "step": 4}
    assert leaves_equal(warm.params, straight.ema_params) and leaves_equal(warm.ema_params, straight.ema_params)
    assert leaves_equal(warm.opt_state, fresh.opt_state) and leaves_equal(warm.key, fresh.key)
    other = tiny_config(synth_data)
    other.model.nf = 16
    big = training.model_from_config(other)
    with pytest.raises(ValueError, match="init_from"):
        training.warm_start_state(training.create_train_state(big, tx, 0, mesh=mesh), big, workdir, mesh)


@pytest.fixture(scope="module")
def warm_phased_run(straight_run, synth_data, tmp_path_factory):
    """Warm start from the straight run (step 4), 8-frame crops for step 5, 16-frame crops for 6, 7, with a
    fixed 16-frame validation every step and the best exported."""
    _, source, _ = straight_run
    old = jax.config.values["jax_disable_most_optimizations"]
    jax.config.update("jax_disable_most_optimizations", True)
    root = tmp_path_factory.mktemp("warm")
    try:
        config = tiny_config(synth_data, num_steps=7, eval_every=1, init_from=str(source), warmup_steps=2,
                             export_dir=str(root / "best"))
        config.data.crop_schedule = "0:8x2,5:16x2"
        config.data.valid_frames = 16
        state = training.train_and_evaluate(config, root / "run")
    finally:
        jax.config.update("jax_disable_most_optimizations", old)
    return config, root, state


@pytest.mark.slow  # its fixture trains twice, ~25 s (issue 27)
def test_warm_started_phased_run_logs_and_exports(warm_phased_run, fast_compile):
    config, root, state = warm_phased_run
    recs = read_metrics(root / "run")
    valid = {r["step"]: r["valid/loss"] for r in recs if "valid/loss" in r}
    assert sorted(valid) == [4, 5, 6, 7]  # the warm-start weights are scored first
    crops = {r["step"]: r["train/crop_frames"] for r in recs if "train/crop_frames" in r}
    assert crops == {5: 8.0, 6: 16.0, 7: 16.0}
    meta = training.read_checkpoint_metadata(root / "run")
    assert meta["init_from"]["step"] == 4 and meta["step"] == 7
    improving = [s for s in (5, 6, 7) if valid[s] < min(valid[k] for k in valid if k < s)]
    if not improving:
        assert not (root / "best").exists()
        return
    model, variables, emeta = training.load_checkpoint(root / "best")
    assert emeta["kind"] == "inference-prior" and emeta["step"] == improving[-1]
    assert emeta["valid_loss_ema"] == pytest.approx(valid[improving[-1]], rel=1e-6)
    assert emeta["train_config"]["data"]["crop_schedule"] == "0:8x2,5:16x2"
    assert model == training.model_from_config(config)
    if improving[-1] == 7:
        assert leaves_equal(variables["params"], state.ema_params)
    assert not any(p.name.endswith((".tmp", ".old")) for p in root.iterdir())


@pytest.mark.slow  # two training runs, ~30 s
def test_phased_run_resumes_exactly_across_a_phase_change(warm_phased_run, tmp_path, fast_compile):
    config, _, straight = warm_phased_run
    half = config.copy_and_resolve_references()
    half.training.num_steps = 5
    half.training.export_dir = ""
    training.train_and_evaluate(half, tmp_path / "run")  # warm start, step 5 (8 frames), checkpoint
    full = config.copy_and_resolve_references()
    full.training.export_dir = ""
    resumed = training.train_and_evaluate(full, tmp_path / "run")  # resumes at 5: init_from is not reapplied
    for field in ("step", "params", "ema_params", "opt_state", "constants", "key"):
        assert leaves_equal(getattr(resumed, field), getattr(straight, field)), field


def test_long_cpu_configs_continue_the_shipped_models():
    from configs import prior_cpu_coarse, prior_cpu_long, rvae_long

    mesh = training.make_mesh()
    for mod in (prior_cpu_long, prior_cpu_coarse, rvae_long):
        c = mod.get_config()
        model = training.model_from_config(c)
        training.validate_config(c, model, mesh)
        assert [p.name for p in map(Path, c.data.train_dir.split(","))] == ["train", "train_extra"]
        if c.training.init_from:  # the shipped model it continues exists and has the config's architecture
            assert (REPO / c.training.init_from).is_dir()
    long = prior_cpu_long.get_config()
    assert training.crop_phases(long) == [(0, 64, 8), (3000, 128, 4), (8000, 256, 2)]
    assert training.valid_frames(long) == 256
    shipped, _, _ = training.load_checkpoint(REPO / long.training.init_from)
    assert shipped == training.model_from_config(long)
    coarse = training.model_from_config(prior_cpu_coarse.get_config())
    assert coarse.net.nf == 8 and coarse.net.ch_mult == (1, 2, 4, 8)


def test_valid_loss_script_reproduces_the_logged_validation(straight_run, synth_data, fast_compile):
    sys.path.insert(0, str(REPO / "benchmarks"))
    import valid_loss

    config, workdir, _ = straight_run
    logged = {r["step"]: r["valid/loss"] for r in read_metrics(workdir) if "valid/loss" in r}
    row = valid_loss.valid_loss(workdir / "checkpoints" / "4", 8, synth_data / "valid", num_valid=2, batch=2)
    assert row["step"] == 4 and row["num_valid"] == 2
    assert row["valid_loss"] == pytest.approx(logged[4], rel=1e-5)
