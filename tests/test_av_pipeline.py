"""The audio-visual pipeline around the AV network: feature trees and aligned training crops, the av family's
training step, the masked padding of batched features, and enhance.py --method av-udiffse+ --visual with its
one-line errors (a tiny random AV prior; no real lip features exist here)."""

from __future__ import annotations

import csv
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
sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_enhance_cli import tiny_checkpoint  # noqa: E402,F401  (an audio-only prior, module-scoped fixture)

from jaxse.av.data import AVSpeechDataset, crop_frames_of  # noqa: E402
from jaxse.av.models import AVScoreModel  # noqa: E402
from jaxse.av.synthetic import synthetic_features  # noqa: E402
from jaxse.diffusion.ncsnpp import NCSNppConfig  # noqa: E402
from jaxse.spectral import SpecConfig  # noqa: E402

DIM = 6
TINY_AV = AVScoreModel(net=NCSNppConfig(nf=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(),
                                        output_scaling="none", cond_dim=DIM, xattn_first_d_head=0),
                       parameterization="noise")


def _speechlike(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000
    return (0.3 * np.sin(2 * np.pi * (150 + 30 * seed) * t) * (1 + np.sin(2 * np.pi * 4 * t))
            + 0.02 * rng.standard_normal(n)).astype(np.float32)


@pytest.fixture(scope="module")
def av_tree(tmp_path_factory):
    """Clean speech in ``audio/`` with synthetic features (dim 6) in ``visual/`` at the same relative paths."""
    root = tmp_path_factory.mktemp("av")
    for i, rel in enumerate(["s1/a.wav", "s1/b.wav", "s2/c.wav"]):
        x = _speechlike(16000 + 4000 * i, i)
        (root / "audio" / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / "visual" / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(root / "audio" / rel, x, 16000, subtype="FLOAT")
        np.save((root / "visual" / rel).with_suffix(".npy"), synthetic_features(x, rel, dim=DIM))
    return root


def test_training_crops_take_the_aligned_video_frames(av_tree):
    ds = AVSpeechDataset(av_tree / "audio", av_tree / "visual", dim=DIM, crop_frames=64, spec=SpecConfig())
    assert ds.visual_frames == 12  # 8064 samples -> int(8064 / 16000 * 25); 256 frames -> 51 as the reference
    assert crop_frames_of(0, SpecConfig().crop_length(256), 16000, 25.0) == (0, 51)
    batch = ds.train_batch(seed=3, step=5, global_batch_size=4)
    assert batch["waves"].shape == (4, 8064) and batch["visual"].shape == (4, 12, DIM)
    for row, (i, start) in enumerate(ds.global_batch_plan(3, 5, 4)):
        first = int(start / 16000 * 25)
        feats = ds.features(i)
        want = np.zeros((12, DIM), np.float32)
        got = feats[first:first + 12]
        want[:len(got)] = got
        np.testing.assert_array_equal(batch["visual"][row], want)
    valid = next(iter(ds.valid_batches(2)))
    assert valid["visual"].shape == (2, 12, DIM)


def test_missing_or_wrong_features_are_one_error(av_tree, tmp_path):
    with pytest.raises(ValueError, match=r"1 of 3 visual feature files are missing or bad, e.g. .*c.npy"):
        vis = tmp_path / "visual"
        for rel in ["s1/a.npy", "s1/b.npy"]:
            (vis / rel).parent.mkdir(parents=True, exist_ok=True)
            np.save(vis / rel, np.zeros((30, DIM), np.float32))
        AVSpeechDataset(av_tree / "audio", vis, dim=DIM, crop_frames=64, spec=SpecConfig())
    with pytest.raises(ValueError, match=r"3 of 3 .* shape \(\d+, 6\), expected \(frames, 5\)"):
        AVSpeechDataset(av_tree / "audio", av_tree / "visual", dim=5, crop_frames=64, spec=SpecConfig())


@pytest.mark.slow  # ~8 s (issue 27)
def test_padded_features_are_masked_out_of_the_attention(fast_compile):
    variables = TINY_AV.init(jax.random.PRNGKey(0))
    x = 0.3 * jax.random.normal(jax.random.PRNGKey(1), (1, 256, 16)).astype(jnp.complex64)
    t = jnp.full((1,), 0.4)
    v = jax.random.normal(jax.random.PRNGKey(2), (1, 5, DIM))
    score = jax.jit(TINY_AV.score)
    alone = score(variables, x, t, v)
    padded = jnp.concatenate([v, 7.0 * jnp.ones((1, 4, DIM))], axis=1)
    mask = jnp.arange(9)[None] < 5
    masked = float(jnp.max(jnp.abs(score(variables, x, t, padded, mask) - alone)))
    unmasked = float(jnp.max(jnp.abs(score(variables, x, t, padded, jnp.ones_like(mask)) - alone)))
    assert masked < 1e-5 and unmasked > 100 * max(masked, 1e-7), (masked, unmasked)  # unmasked, it would differ


@pytest.mark.slow  # ~20-50 s of DSM steps
def test_av_training_step_uses_the_visual_batch(av_tree, fast_compile):
    import optax

    from jaxse import training
    from jaxse.diffusion import training as dsm

    spec = SpecConfig()
    ds = AVSpeechDataset(av_tree / "audio", av_tree / "visual", dim=DIM, crop_frames=16, spec=spec)
    tx = optax.adam(1e-3)
    state = training.init_train_state(TINY_AV, tx, 0)
    batch = {k: jnp.asarray(v) for k, v in ds.train_batch(0, 0, 2).items()}
    step = jax.jit(lambda s, b: dsm.train_step(s, b, model=TINY_AV, spec=spec, tx=tx, ema_decay=0.999))
    new, metrics = step(state, batch)
    assert np.isfinite(float(metrics["loss"])) and int(new.step) == 1
    evaluate = jax.jit(lambda v, b: dsm.eval_step(v, b, jax.random.PRNGKey(0), model=TINY_AV, spec=spec)["loss"])
    variables = {"params": new.params, "constants": new.constants}
    loss_v = evaluate(variables, batch)
    loss_0 = evaluate(variables, dict(batch, visual=jnp.zeros_like(batch["visual"])))
    assert float(loss_v) != float(loss_0)  # the features reach the loss


# ------------------------------------------------------------------------------------- enhance.py, end to end


FAST = ["--batch-size", "2", "--chunk-frames", "64", "--config.num_steps=2", "--config.num_samples=1",
        "--config.corrector=none", "--noprogress"]


def run_cli(*args):
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_DISABLE_MOST_OPTIMIZATIONS="1")
    env.pop("XLA_FLAGS", None)
    return subprocess.run([sys.executable, str(REPO / "enhance.py"), *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def av_checkpoint(tmp_path_factory) -> Path:
    from tests.conftest import save_random_checkpoint

    return save_random_checkpoint(TINY_AV, tmp_path_factory.mktemp("avprior"))


@pytest.fixture(scope="module")
def noisy_tree(tmp_path_factory):
    """Four noisy inputs; features: good (a, and b chunked), missing (c), wrong dimension (d), 3 s too long (e)."""
    root = tmp_path_factory.mktemp("avnoisy")
    rng = np.random.default_rng(0)
    vis = root / "visual"
    (root / "noisy").mkdir()
    vis.mkdir()
    for i, (name, n) in enumerate([("a", 14000), ("b", 26000), ("c", 9000), ("d", 9000), ("e", 9000)]):
        x = _speechlike(n, i) + 0.1 * rng.standard_normal(n).astype(np.float32)
        sf.write(root / "noisy" / f"{name}.wav", x, 16000, subtype="FLOAT")
        frames = int(np.ceil(n / 640))
        if name == "d":
            np.save(vis / "d.npy", np.zeros((frames, DIM + 1), np.float32))
        elif name == "e":
            np.save(vis / "e.npy", np.zeros((frames + 75, DIM), np.float32))
        elif name != "c":
            np.save(vis / f"{name}.npy", synthetic_features(_speechlike(n, i), name, dim=DIM))
    return root


def _rows(path: Path) -> dict:
    with open(path, newline="") as fh:
        return {r["file"]: r for r in csv.DictReader(fh)}


@pytest.mark.slow
def test_enhance_av_with_visual_features_and_per_file_errors(noisy_tree, av_checkpoint, tmp_path):
    out = tmp_path / "out"
    p = run_cli(noisy_tree / "noisy", "-o", out, "--method", "av-udiffse+", "--checkpoint", av_checkpoint,
                "--visual", noisy_tree / "visual", *FAST)
    assert p.returncode == 1, p.stderr[-3000:]
    assert "visual features of dimension 6 at 25 fps" in p.stderr
    rows = _rows(out / "enhance_log.csv")
    assert rows["a.wav"]["status"] == rows["b.wav"]["status"] == "ok"  # b is chunked: its features cut with it
    assert "no visual features" in rows["c.wav"]["message"] and "c.npy" in rows["c.wav"]["message"]
    assert "expected an array (frames, 6)" in rows["d.wav"]["message"] or "dimension 7" in rows["d.wav"]["message"]
    assert "s of frames for" in rows["e.wav"]["message"]
    for name, n in (("a.wav", 14000), ("b.wav", 26000)):
        y, sr = sf.read(out / name)
        assert sr == 16000 and len(y) == n and np.isfinite(y).all()
    assert sorted(f.name for f in out.iterdir()) == ["a.wav", "b.wav", "enhance_log.csv"]


@pytest.mark.slow
@pytest.mark.parametrize("case", ["no_visual", "visual_for_audio_method", "av_ckpt_audio_method",
                                  "audio_ckpt_av_method"])
def test_av_usage_errors_are_one_line(case, noisy_tree, av_checkpoint, tiny_checkpoint, tmp_path):
    out = tmp_path / "out"
    args = {
        "no_visual": ["--method", "av-udiffse+", "--checkpoint", av_checkpoint],
        "visual_for_audio_method": ["--method", "udiffse+", "--visual", noisy_tree / "visual"],
        "av_ckpt_audio_method": ["--method", "udiffse+", "--checkpoint", av_checkpoint],
        "audio_ckpt_av_method": ["--method", "av-udiffse", "--checkpoint", tiny_checkpoint, "--visual",
                                 noisy_tree / "visual"],
    }[case]
    p = run_cli(noisy_tree / "noisy", "-o", out, *args, *FAST)
    assert p.returncode == 2, p.stderr[-2000:]
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith("enhance.py: error:")]
    assert len(lines) == 1, p.stderr[-2000:]
    expect = {"no_visual": "needs --visual FEATURE_DIR", "visual_for_audio_method": "--visual is for the audio-visual",
              "av_ckpt_audio_method": "use --method av-udiffse or av-udiffse+",
              "audio_ckpt_av_method": "it is audio-only: use --method udiffse or udiffse+"}[case]
    assert expect in lines[0], lines[0]
    assert not out.exists()


def test_python_api_takes_the_visual_features(noisy_tree, av_checkpoint, fast_compile):
    import jaxse

    cfg = {"num_steps": 2, "num_samples": 1, "corrector": "none"}
    path = noisy_tree / "noisy" / "a.wav"
    y = jaxse.enhance(path, method="av-udiffse+", checkpoint=av_checkpoint, config=cfg,
                      visual=noisy_tree / "visual" / "a.npy")
    assert y.shape == (14000,) and np.isfinite(y).all()
    same = jaxse.enhance(path, method="av-udiffse+", checkpoint=av_checkpoint, config=cfg,
                         visual=np.load(noisy_tree / "visual" / "a.npy"))
    np.testing.assert_array_equal(y, same)
    with pytest.raises(ValueError, match="needs visual="):
        jaxse.enhance(path, method="av-udiffse+", checkpoint=av_checkpoint, config=cfg)
    with pytest.raises(ValueError, match="visual= is for the audio-visual methods"):
        jaxse.enhance(path, method="udiffse+", visual=np.zeros((10, DIM)))
    with pytest.raises(ValueError, match="s of frames for"):
        jaxse.enhance(path, method="av-udiffse+", checkpoint=av_checkpoint, config=cfg,
                      visual=np.zeros((200, DIM), np.float32))


def test_visual_dropout_zeroes_a_reproducible_share_of_training_rows(av_tree):
    ds = AVSpeechDataset(av_tree / "audio", av_tree / "visual", dim=DIM, crop_frames=64, spec=SpecConfig(),
                         visual_dropout=0.25)
    rows = [(i, s) for i in range(3) for s in range(0, 4000, 7)]
    share = np.mean([ds.dropped(i, s) for i, s in rows])
    assert 0.2 < share < 0.3
    plans = [ds.global_batch_plan(1, step, 4) for step in range(40)]
    plan = next(p for p in plans if any(ds.dropped(*r) for r in p) and not all(ds.dropped(*r) for r in p))
    step = plans.index(plan)
    batch, again = ds.train_batch(seed=1, step=step, global_batch_size=4), ds.train_batch(seed=1, step=step,
                                                                                         global_batch_size=4)
    np.testing.assert_array_equal(batch["visual"], again["visual"])
    for row, (i, s) in enumerate(plan):
        want = np.zeros((12, DIM), np.float32) if ds.dropped(i, s) else ds.visual_crop(i, s)
        np.testing.assert_array_equal(batch["visual"][row], want)
    plain = AVSpeechDataset(av_tree / "audio", av_tree / "visual", dim=DIM, crop_frames=64, spec=SpecConfig())
    assert not any(plain.dropped(i, s) for i, s in rows)
    with pytest.raises(ValueError, match="visual_dropout"):
        AVSpeechDataset(av_tree / "audio", av_tree / "visual", dim=DIM, spec=SpecConfig(), visual_dropout=1.0)
