"""Data parallelism: 8 fake CPU devices vs 1 device, and 2 processes (jax.distributed, gloo) vs 1 process.

Both run in subprocesses: the device count (XLA_FLAGS) must be set before JAX starts, and a process can
join only one distributed run.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(REPO))

from test_training import synth_data, tiny_override_flags  # noqa: E402,F401  (synth_data is a fixture)

from configs import cpu_small  # noqa: E402
from jaxse import training  # noqa: E402


def _env(**extra):
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_DISABLE_MOST_OPTIMIZATIONS="1")
    env.pop("XLA_FLAGS", None)
    env.update(extra)
    return env


EIGHT_DEVICES = textwrap.dedent(r"""
    import json, sys
    sys.path.insert(0, sys.argv[1])
    import jax, jax.numpy as jnp, numpy as np
    from configs import default
    from jaxse import training
    from jaxse.diffusion.sde import complex_normal

    assert jax.device_count() == 8, jax.devices()
    c = default.get_config()
    c.model.update(dict(nf=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), parameterization="noise"))
    model, spec, tx = training.model_from_config(c), training.spec_from_config(c), training.optimizer_from_config(c)
    mesh8, mesh1 = training.make_mesh(), training.make_mesh(jax.devices()[:1])
    rng = np.random.default_rng(0)
    steps = [rng.standard_normal((8, spec.crop_length(8))).astype(np.float32) for _ in range(3)]
    out, results = {}, {}
    for name, mesh in (("8", mesh8), ("1", mesh1)):
        state = training.create_train_state(model, tx, 0, spec.num_bins, mesh)
        step = training.make_train_step(model, spec, tx, 0.999, mesh)
        losses = []
        for w in steps:
            gb = training.global_batch({"waves": w / np.abs(w).max(-1, keepdims=True)}, mesh)
            if name == "8":
                assert len(gb["waves"].sharding.device_set) == 8 and gb["waves"].addressable_shards[0].data.shape[0] == 1
            state, m = step(state, gb)
            losses.append([float(m["loss"]), float(m["grad_norm"])])
        ev = training.make_eval_step(model, spec, mesh)(state.ema_variables,
                                                         training.global_batch({"waves": steps[0]}, mesh),
                                                         jax.random.PRNGKey(5))["loss"]
        draws = jax.jit(lambda k: complex_normal(k, (8, 16, 4)), out_shardings=training.batch_sharding(mesh))(
            jax.random.PRNGKey(3))
        results[name] = (state, losses, float(ev), np.asarray(draws))
    s8, s1 = results["8"][0], results["1"][0]
    assert all(len(x.sharding.device_set) == 8 and x.sharding.is_fully_replicated  # state replicated
               for x in jax.tree_util.tree_leaves(s8))

    def rel(a, b):
        return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in
                   zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b))) / max(
            float(np.max(np.abs(np.asarray(y)))) for y in jax.tree_util.tree_leaves(b))

    out["losses8"], out["losses1"] = results["8"][1], results["1"][1]
    out["eval8"], out["eval1"] = results["8"][2], results["1"][2]
    out["draws_equal"] = bool(np.array_equal(results["8"][3], results["1"][3]))
    out["rel_params"], out["rel_ema"] = rel(s8.params, s1.params), rel(s8.ema_params, s1.ema_params)
    out["rel_opt"] = max(rel(s8.opt_state[0].mu, s1.opt_state[0].mu), rel(s8.opt_state[0].nu, s1.opt_state[0].nu))
    out["step"] = [int(s8.step), int(s1.step)]
    print("RESULT " + json.dumps(out))
""")


@pytest.mark.slow  # an 8-device subprocess, ~30 s
def test_eight_devices_match_one_device(tmp_path):
    env = _env(XLA_FLAGS="--xla_force_host_platform_device_count=8")
    proc = subprocess.run([sys.executable, "-c", EIGHT_DEVICES, str(REPO)], cwd=tmp_path, capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.split("RESULT ", 1)[1])
    assert out["draws_equal"], "random draws depend on the sharding (jax_threefry_partitionable off?)"
    assert out["step"] == [3, 3]
    np.testing.assert_allclose(out["losses8"], out["losses1"], rtol=1e-5)
    assert out["eval8"] == pytest.approx(out["eval1"], rel=1e-5)
    assert out["rel_params"] < 1e-5 and out["rel_ema"] < 1e-5 and out["rel_opt"] < 1e-5, out


def tree_rel_err(a, b) -> float:
    """max |a - b| over all leaves / max |b| over all leaves.

    Relative to the whole tree, not leaf by leaf: a few parameters have an exactly zero gradient in exact
    arithmetic (e.g. the attention key bias: softmax ignores a per-row shift), so their gradients are
    rounding noise (~1e-13) that Adam normalises into lr-sized steps of arbitrary sign. Those leaves stay
    ~1e-9 in absolute value but differ at O(1) relative to themselves between any two summation orders.
    """
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert len(la) == len(lb)
    diff = max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in zip(la, lb))
    return diff / max(float(np.max(np.abs(np.asarray(y)))) for y in lb)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # 2 localhost processes, ~40 s; runs in .ci/run's slow pass
def test_two_processes_match_one_process(synth_data, tmp_path):  # noqa: F811
    cfg = ["--config", str(REPO / "configs" / "cpu_small.py"), *tiny_override_flags(synth_data),
           "--config.training.num_steps=3", "--config.training.checkpoint_every=3", "--config.training.sample_every=0",
           # the reference lr (cpu_small uses 10×): Adam turns rounding noise of exactly-zero gradients into
           # lr-sized steps, so the tolerance on parameters scales with lr (see tree_rel_err)
           "--config.training.lr=1e-4"]
    train_py = str(REPO / "train.py")
    one = tmp_path / "one"
    two = tmp_path / "two"
    port = _free_port()
    # the two processes read their batches through 2 input workers each, the single one in its own thread
    procs = [subprocess.Popen([sys.executable, train_py, *cfg, "--config.data.num_workers=2", "--workdir", str(two),
                               f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={i}"],
                              cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    single = subprocess.run([sys.executable, train_py, *cfg, "--config.data.num_workers=0", "--workdir", str(one)],
                            cwd=REPO, env=_env(),
                            capture_output=True, text=True, timeout=300)
    outs = []
    for p in procs:
        try:
            outs.append(p.communicate(timeout=300))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
    assert single.returncode == 0, single.stderr[-3000:]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    assert "2 process(es)" in outs[0][1] and "batch 2" in outs[0][1]
    assert "process(es)" not in outs[1][1] and "/3" not in outs[1][1]  # only process 0 reports and logs
    assert list((two / "tb").glob("events.out.tfevents.*"))
    recs = [json.loads(line) for line in (two / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs if "train/loss" in r] == [1, 2, 3]  # written once (process 0)

    states = {}
    for name, wd in (("one", one), ("two", two)):
        meta = training.read_checkpoint_metadata(wd)
        assert meta["step"] == 3
        config = cpu_small.get_config()
        config.model.update(dict(nf=8, ch_mult=(1, 2), num_res_blocks=1))
        config.training.lr = 1e-4
        model = training.model_from_config(config)
        tx = training.optimizer_from_config(config)
        with training.checkpoint_manager(wd, read_only=True) as mngr:
            states[name] = training.restore_train_state(mngr, training.abstract_train_state(model, tx, 0))
    for field in ("params", "ema_params"):
        assert tree_rel_err(getattr(states["two"], field), getattr(states["one"], field)) < 1e-5, field
    mu2, nu2 = states["two"].opt_state[0].mu, states["two"].opt_state[0].nu
    mu1, nu1 = states["one"].opt_state[0].mu, states["one"].opt_state[0].nu
    assert tree_rel_err(mu2, mu1) < 1e-5 and tree_rel_err(nu2, nu1) < 1e-5
    assert int(states["two"].step) == 3
