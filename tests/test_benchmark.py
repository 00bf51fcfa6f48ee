"""``python -m jaxse.benchmark``: the JSON schema of a quick run (no timing assertions: machines are noisy).

One quick run (shipped prior at 32 frames, 1 step, XLA optimisations off) is shared by the schema tests; the
compilation-cache sweep (three fresh processes) has its own small run; one mixed run (a 16-unit RVAE and the
shipped prior, methods of both families, 32 frames, 1 EM iteration) checks the RVAE rows and the skipping of
pairs of different families. Plus the pure helpers: the method registry's NFE, the full-recipe extrapolations
(diffusion and RVAE), atomic JSON, cost-analysis robustness and usage errors.
"""

from __future__ import annotations

import json
import math

import jax
import pytest

from jaxse.pytree import count_params
from jaxse.evaluation import benchmark
from jaxse.evaluation.benchmark import METHODS, Options, RunSettings
from jaxse.rvae.net import RVAEConfig, init_params
from jaxse.rvae.posterior import RVAEPosteriorConfig
from jaxse.rvae.spectral import RVAESpecConfig
from jaxse.diffusion.samplers import PCConfig, count_nfe
from jaxse.spectral import SpecConfig
from jaxse.diffusion.udiffse import PosteriorConfig

STEPS, EM, FRAMES = 1, 2, 32
DIFFUSION_METHODS = ("prior", "udiffse", "udiffse+")
RVAE_METHODS = ("rvae-vem", "rvae-mhem", "rvae-malaem", "rvae-ldem")


def _expected_nfe(method: str, steps: int, em: int) -> int:
    if method == "prior":
        return count_nfe(PCConfig(num_steps=steps))
    if method == "udiffse":
        return steps * 2 * em  # corrector + predictor per step, per EM iteration
    return steps * 2


def _positive_finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


def _check_timing(t: dict, where: str) -> None:
    for k in ("trace_s", "lower_s", "compile_s", "first_call_s", "steady_s"):
        assert _positive_finite(t[k]), f"{where}: {k}={t[k]!r}"
    assert t["repeats"] == len(t["times_s"]) >= 1
    assert all(_positive_finite(v) for v in t["times_s"]), where


def _run_unoptimised(out, args) -> dict:
    """``python -m jaxse.benchmark ARGS -o OUT`` with XLA optimisations off (restored after); its JSON."""
    old = jax.config.values["jax_disable_most_optimizations"]
    jax.config.update("jax_disable_most_optimizations", True)
    try:
        rc = benchmark.main([*args, "-o", str(out)])
    finally:
        jax.config.update("jax_disable_most_optimizations", old)
    assert rc == 0
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    return _run_unoptimised(tmp_path_factory.mktemp("bench") / "quick.json", [
        "--quick", "--networks", "tiny", "--steps", str(STEPS), "--em-iters", str(EM), "--frames", str(FRAMES),
        "--repeats", "1", "--sweeps", "steps,batch,length", "--sweep-steps", "1,2", "--sweep-batch", "1,2",
        "--sweep-samples", "1,2", "--sweep-frames", "32,64"])


@pytest.mark.slow  # the shared --quick benchmark run takes ~90 s
def test_header_and_environment(quick):
    assert quick["schema"] == benchmark.SCHEMA
    assert quick["complete"] is True and quick["errors"] == 0
    env = quick["environment"]
    for k in ("jax", "jaxlib", "flax", "backend", "device_kind"):
        assert isinstance(env[k], str) and env[k]
    assert env["jax"] == jax.__version__
    assert env["device_count"] >= 1 and env["cpu_count"] >= 1
    assert env["jax_disable_most_optimizations"] is True
    net = quick["networks"]["tiny"]
    assert net["params"] > 0 and net["num_bins"] == 256 and net["net"]["dtype"] == "float32"
    assert net["family"] == "diffusion"
    assert quick["options"]["methods"] is None  # default: the methods of each network's family
    assert quick["skipped"] == []


@pytest.mark.slow  # the shared --quick benchmark run takes ~90 s
def test_main_rows(quick):
    rows = quick["results"]
    assert [(r["network"], r["method"]) for r in rows] == [("tiny", m) for m in DIFFUSION_METHODS]
    for r in rows:
        where = r["method"]
        assert "error" not in r
        assert r["nfe"] == _expected_nfe(r["method"], STEPS, EM), where
        _check_timing(r["timing"], where)
        fwd = r["forward"]
        _check_timing(fwd, where + " forward")
        assert fwd["shape"] == r["shapes"]["network"] == [r["rows"], 256, FRAMES]
        assert r["shapes"]["input"] == [1, 256, FRAMES]
        if fwd["flops"] is not None:  # XLA cost analysis available
            assert fwd["flops"] > 0 and _positive_finite(fwd["gflops_per_s"])
        assert r["per_nfe_s"] == pytest.approx(r["timing"]["steady_s"] / r["nfe"])
        assert r["overhead_ratio"] == pytest.approx(r["timing"]["steady_s"] / (r["nfe"] * fwd["steady_s"]))
        for k in ("per_nfe_s", "overhead_ratio", "rtf", "audio_s_per_utterance"):
            assert _positive_finite(r[k]), (where, k)
        full = r["full_recipe"]
        assert full["extrapolated"] is True and full["assumption"]
        assert _positive_finite(full["seconds"])
    full = {r["method"]: r["full_recipe"]["nfe"] for r in rows}
    assert full == {"prior": 60, "udiffse": 300, "udiffse+": 60}
    assert rows[0]["settings"]["em_iters"] is None  # the prior does not use it
    assert rows[1]["config"]["num_em"] == EM and rows[2]["config"]["method"] == "udiffse+"


@pytest.mark.slow  # the shared --quick benchmark run takes ~90 s
def test_steps_sweep_has_every_variant_per_step_count(quick):
    entries = quick["sweeps"]["steps"]
    got = {(e["steps"], e["variant"]) for e in entries}
    assert got == {(n, v) for n in (1, 2) for v in ("scan", "loop", "unrolled")}
    for e in entries:
        _check_timing(e["timing"], f"steps {e['steps']} {e['variant']}")
        assert e["nfe"] == count_nfe(PCConfig(num_steps=e["steps"]))
        assert _positive_finite(e["per_step_s"])
    loops = [e for e in entries if e["variant"] == "loop"]
    assert all(e["timing"]["compiled_once"] for e in loops)


@pytest.mark.slow  # the shared --quick benchmark run takes ~90 s
def test_batch_and_length_sweeps(quick):
    batch = quick["sweeps"]["batch"]
    assert [(e["vary"], e["batch"], e["samples"], e["rows"]) for e in batch] == [
        ("batch", 1, 1, 1), ("batch", 2, 1, 2), ("samples", 1, 2, 2)]
    for e in batch:
        assert e["method"] == "udiffse+" and e["nfe"] == _expected_nfe("udiffse+", STEPS, EM)
        _check_timing(e["timing"], "batch")
        assert e["per_utterance_s"] == pytest.approx(e["timing"]["steady_s"] / e["batch"])
    length = quick["sweeps"]["length"]
    assert [e["frames"] for e in length] == [32, 64]
    for e in length:
        _check_timing(e["timing"], "length")
        assert _positive_finite(e["rtf"]) and _positive_finite(e["audio_s"])


@pytest.mark.slow  # the shared --quick benchmark run takes ~90 s
def test_report_table(quick):
    text = benchmark.format_report(quick)
    for word in ("GFLOP/s", "overhead", "udiffse+", "steps sweep", "batch sweep", "length sweep", "unrolled"):
        assert word in text


@pytest.mark.slow  # three benchmark subprocesses, ~20 s
def test_cache_sweep_two_cached_runs_and_one_without(tmp_path, fast_compile):
    out = tmp_path / "cache.json"
    rc = benchmark.main(["--quick", "--networks", "tiny", "--methods", "none", "--sweeps", "cache",
                         "--sweep-method", "prior", "--steps", "1", "--frames", "32", "-o", str(out)])
    assert rc == 0
    result = json.loads(out.read_text())
    assert result["results"] == []
    runs = result["sweeps"]["cache"]
    assert [r["cache"] for r in runs] == [False, True, True]
    assert sum(1 for r in runs if r["cache"]) == 2
    for r in runs:
        for k in ("lower_s", "compile_s", "process_s"):
            assert _positive_finite(r[k]), (r["run"], k)
    assert runs[0]["cache_files"] is None and runs[1]["cache_files"] >= 1 and runs[2]["cache_files"] >= 1


# ---------------------------------------------------------------------------------------------- helpers


@pytest.mark.parametrize("steps,em,samples", [(1, 1, 1), (3, 2, 4), (30, 5, 4)])
def test_registry_nfe_and_rows(steps, em, samples):
    s = RunSettings(steps=steps, em_iters=em, samples=samples, batch=3, frames=64)
    assert METHODS["prior"].nfe(s) == count_nfe(PCConfig(num_steps=steps)) == 2 * steps
    for name in ("udiffse", "udiffse+"):
        cfg = PosteriorConfig(method=name, num_steps=steps, num_em=em, num_samples=samples)
        assert METHODS[name].nfe(s) == cfg.nfe == _expected_nfe(name, steps, em)
        assert METHODS[name].rows(s) == 3 * samples
    assert METHODS["prior"].rows(s) == 3
    assert "em_iters" in METHODS["udiffse"].uses and "em_iters" not in METHODS["udiffse+"].uses


def test_full_recipe_extrapolation():
    method = METHODS["udiffse"]
    s = RunSettings(steps=2, em_iters=1, samples=1, batch=1, frames=128)
    full = benchmark.full_recipe(method, s, per_nfe=0.5, steady=2.0, spec=SpecConfig())
    assert full["extrapolated"] is True and full["nfe"] == 300 and full["rows"] == 4
    assert full["size_scale"] == pytest.approx(4 * 256 / 128)
    assert full["seconds"] == pytest.approx(300 * 0.5 * 8)
    assert full["rtf"] == pytest.approx(full["seconds"] / (255 * 128 / 16000))
    same = benchmark.full_recipe(method, method.full, per_nfe=0.5, steady=7.0, spec=SpecConfig())
    assert same["extrapolated"] is False and same["seconds"] == 7.0 and same["assumption"] is None


def test_json_is_atomic_and_strict(tmp_path):
    path = tmp_path / "sub" / "x.json"
    benchmark.write_json_atomic(path, {"a": float("nan"), "b": (1, 2.5), "c": float("inf")})
    assert json.loads(path.read_text()) == {"a": None, "b": [1, 2.5], "c": None}
    assert [p.name for p in path.parent.iterdir()] == ["x.json"]  # no temporary left behind


def test_cost_analysis_is_robust():
    class Raises:
        def cost_analysis(self):
            raise NotImplementedError

    class AsList:
        def cost_analysis(self):
            return [{"flops": 12.0, "bytes accessed": 3.0}]

    class Empty:
        def cost_analysis(self):
            return None

    assert benchmark._cost(Raises()) == {"flops": None, "bytes_accessed": None}
    assert benchmark._cost(AsList()) == {"flops": 12.0, "bytes_accessed": 3.0}
    assert benchmark._cost(Empty()) == {"flops": None, "bytes_accessed": None}


@pytest.mark.parametrize("args", [["--networks", "nope"], ["--methods", "nope"], ["--sweeps", "bogus"],
                                  ["--step-variants", "while"], ["--sweep-method", "x"],
                                  ["--sweep-method", "rvae-vem"], ["--sweep-networks", "rvae-nano"],
                                  ["--rvae-checkpoint", "/nonexistent/rvae"]])
def test_usage_errors(args, capsys):
    assert benchmark.main(["--quick", *args]) == 2
    err = capsys.readouterr().err
    assert "error" in err
    if "rvae-vem" in args:  # one clear line: the sweeps are for the diffusion methods
        assert "diffusion methods only" in err.strip().splitlines()[-1]


# ------------------------------------------------------------------------------------------------- RVAE

RVAE_EM, RVAE_FRAMES = 1, 32
MIXED_METHODS = ("prior", "rvae-vem", "rvae-ldem")


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """The 16-unit RVAE first and the shipped prior, with one diffusion and two RVAE methods: each network runs
    the methods of its family and skips the others."""
    return _run_unoptimised(tmp_path_factory.mktemp("bench") / "mixed.json", [
        "--networks", "rvae-nano,tiny", "--methods", ",".join(MIXED_METHODS), "--steps", "1", "--em-iters",
        str(RVAE_EM), "--frames", str(RVAE_FRAMES), "--repeats", "1", "--sweeps", "none"])


@pytest.mark.slow  # the shared mixed benchmark run takes ~25 s
def test_rvae_mixed_run_skips_pairs_of_different_families(mixed):
    assert mixed["complete"] is True and mixed["errors"] == 0
    assert mixed["options"]["methods"] == list(MIXED_METHODS)
    assert [(r["network"], r["method"], r["family"]) for r in mixed["results"]] == [
        ("rvae-nano", "rvae-vem", "rvae"), ("rvae-nano", "rvae-ldem", "rvae"), ("tiny", "prior", "diffusion")]
    assert {(k["network"], k["method"]) for k in mixed["skipped"]} == {
        ("rvae-nano", "prior"), ("tiny", "rvae-vem"), ("tiny", "rvae-ldem")}
    assert all(k["reason"] for k in mixed["skipped"])
    nets = mixed["networks"]
    assert nets["rvae-nano"]["family"] == "rvae" and nets["tiny"]["family"] == "diffusion"
    assert nets["rvae-nano"]["weights"] == "random init" and nets["rvae-nano"]["num_bins"] == 513
    assert 0 < nets["rvae-nano"]["params"] < 200_000 and nets["rvae-nano"]["net"]["dim_rnn_h"] == 16
    prior = mixed["results"][2]
    assert prior["nfe"] == _expected_nfe("prior", 1, RVAE_EM) and prior["shapes"]["input"] == [1, 256, RVAE_FRAMES]


@pytest.mark.slow  # the shared mixed benchmark run takes ~25 s
def test_rvae_rows(mixed):
    audio = (RVAE_FRAMES - 1) * 256 / 16000  # the RVAE STFT's hop is 256
    for r in mixed["results"][:2]:
        where = r["method"]
        cfg = RVAEPosteriorConfig(method=where[len("rvae-"):], num_em=RVAE_EM)
        assert r["settings"] == {"steps": None, "em_iters": RVAE_EM, "samples": None, "batch": None,
                                 "frames": RVAE_FRAMES}, where
        assert r["config"]["num_em"] == RVAE_EM and r["config"]["method"] == cfg.method
        assert r["cost"] == cfg.cost() and r["nfe"] == cfg.nfe == r["cost"]["decoder_forward"], where
        chains = cfg.cost()["chains"]
        assert r["rows"] == chains == (10 if cfg.method == "ldem" else 1)
        assert r["shapes"] == {"input": [513, RVAE_FRAMES], "network": [RVAE_FRAMES, chains, 16]}
        _check_timing(r["timing"], where)
        fwd = r["forward"]
        _check_timing(fwd, where + " decoder")
        assert fwd["shape"] == [RVAE_FRAMES, chains, 16]
        assert fwd["flops"] == benchmark.rvae_decoder_flops(RVAEConfig(dim_rnn_h=16), chains, RVAE_FRAMES)
        assert _positive_finite(fwd["gflop"]) and _positive_finite(fwd["gflops_per_s"])
        for k in ("per_em_iter_s", "per_pass_unit_s", "fixed_s", "overhead_ratio", "rtf", "audio_s_per_utterance"):
            assert _positive_finite(r[k]), (where, k)
        steady = r["timing"]["steady_s"]
        assert r["audio_s_per_utterance"] == pytest.approx(audio)
        assert r["rtf"] == pytest.approx(steady / audio)
        assert r["pass_units"] == benchmark.pass_units(cfg.cost())
        assert r["fixed_s"] + RVAE_EM * r["per_em_iter_s"] == pytest.approx(steady)
        full = r["full_recipe"]
        ref = RVAEPosteriorConfig(method=cfg.method)
        assert full["extrapolated"] is True and full["assumption"]
        assert full["em_iters"] == ref.num_em == 100 and full["cost"] == ref.cost() and full["nfe"] == ref.nfe
        assert full["settings"]["frames"] == RVAE_FRAMES and full["audio_s"] == pytest.approx(audio)
        assert full["seconds"] == pytest.approx(steady * benchmark.pass_units(ref.cost()) / r["pass_units"])
        assert _positive_finite(full["rtf"]) and full["rtf"] == pytest.approx(full["seconds"] / audio)


@pytest.mark.slow  # the shared mixed benchmark run takes ~25 s
def test_rvae_report_table_mixed(mixed):
    text = benchmark.format_report(mixed)
    for word in ("RVAE EM", "per-EM", "full RTF", "rvae-ldem", "EM1 T32", "per-NFE", "skipped", "tiny/rvae-vem"):
        assert word in text, word


def test_rvae_time_model_and_full_recipe():
    method = METHODS["rvae-mhem"]
    s = RunSettings(steps=1, em_iters=2, samples=1, batch=1, frames=64)
    units = 3 * 21 + 1  # (em + 1) chains of 1 + 2·10 decoder passes, one encoder pass
    tm = benchmark.rvae_time_model(method, s, steady=3.2)
    assert tm["units"] == units and tm["units_per_em_iter"] == 21
    assert tm["per_em_iter_s"] == pytest.approx(3.2 * 21 / units)
    assert tm["fixed_s"] + 2 * tm["per_em_iter_s"] == pytest.approx(3.2)
    spec = RVAESpecConfig()
    full = benchmark.rvae_full_recipe(method, s, steady=3.2, spec=spec)
    assert full["extrapolated"] is True and full["em_iters"] == 100 and full["pass_units"] == 101 * 21 + 1
    assert full["seconds"] == pytest.approx(3.2 * (101 * 21 + 1) / units)
    assert full["rtf"] == pytest.approx(full["seconds"] / (63 * 256 / 16000))
    same = benchmark.rvae_full_recipe(method, s.replace(em_iters=100), steady=7.0, spec=spec)
    assert same["extrapolated"] is False and same["seconds"] == 7.0 and same["assumption"] is None
    # VEM: a backward pass counts twice, the encoder like the decoder
    vem = RVAEPosteriorConfig(method="vem", num_em=2).cost()
    assert benchmark.pass_units(vem) == 5 + 2 * 2 + 5 + 2 * 2


def test_rvae_registry_and_method_selection():
    assert benchmark.methods_of("rvae") == RVAE_METHODS and benchmark.methods_of("diffusion") == DIFFUSION_METHODS
    assert benchmark.expand_methods(["rvae", "rvae-vem", "prior"]) == RVAE_METHODS + ("prior",)
    s = RunSettings(steps=7, em_iters=3, samples=4, batch=2, frames=64)
    for name in RVAE_METHODS:
        m, cfg = METHODS[name], RVAEPosteriorConfig(method=name[len("rvae-"):], num_em=3)
        assert m.family == "rvae" and m.uses == ("em_iters", "frames")
        assert m.nfe(s) == cfg.nfe and m.cost(s) == cfg.cost() and m.rows(s) == cfg.cost()["chains"]
    bench = benchmark.Benchmark(Options(networks=("tiny", "rvae"), sweeps=()))
    assert bench.methods_for("tiny") == (list(DIFFUSION_METHODS), [])  # default: each network's family
    assert bench.methods_for("rvae") == (list(RVAE_METHODS), [])
    bench = benchmark.Benchmark(Options(networks=("tiny", "rvae"), methods=("rvae", "udiffse"), sweeps=()))
    assert bench.methods_for("tiny") == (["udiffse"], list(RVAE_METHODS))
    assert bench.methods_for("rvae") == (list(RVAE_METHODS), ["udiffse"])


def test_rvae_networks_shipped_or_random_and_checkpoint(tmp_path):
    from jaxse.rvae.backend import default_rvae_checkpoint_path
    from jaxse.rvae.convert import save_rvae

    model, params, spec, info = benchmark.NETWORKS["rvae"].load()
    if default_rvae_checkpoint_path().exists():
        assert info["weights"] == "shipped RVAE (trained)" and params is not None
    else:  # the published architecture, random weights
        assert info["weights"] == "random init" and params is None and model.cfg == RVAEConfig()
    small = RVAEConfig(dim_rnn_g_x=8, dim_rnn_g_z=8, dim_rnn_h=8, bidir_h=False)
    saved = init_params(jax.random.PRNGKey(3), small)
    save_rvae(tmp_path / "ckpt", saved)
    bench = benchmark.Benchmark(Options(networks=(), rvae_checkpoint=str(tmp_path / "ckpt"), sweeps=()))
    assert bench.network_names == ["rvae"]
    net = bench.network("rvae")
    assert net.family == "rvae" and net.model.cfg == small and net.info["weights"] == "checkpoint"
    assert net.info["checkpoint"] == str(tmp_path / "ckpt") and net.info["params"] == count_params(saved)
    assert jax.tree.all(jax.tree.map(lambda a, b: bool((a == b).all()), net.variables, saved))
