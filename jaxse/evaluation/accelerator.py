"""The accelerator check: one prepared command that measures what a GPU/TPU machine does with jaxse.

    bash benchmarks/accelerator_check.sh [--wheels DIR] [--json FILE] [--budget-s S]   # on the GPU/TPU machine
    python -m jaxse.evaluation.accelerator --quick --json /tmp/check.json               # reduced, any CPU

It prints, and writes to ``--json`` (rewritten atomically after every measurement, so a run stopped early
keeps what it measured):

1. the device: platform, kind, count, memory (``device.memory_stats()``; the host's memory on CPU);
2. the bare score network, per network evaluation (NFE): compile time, steady time (median of
   ``--repeats`` calls after the first) and memory (XLA's ``memory_analysis`` of the compiled program:
   arguments + outputs + temporaries) of the 28M NCSN++M (UDiffSE+) and the 65M NCSN++ (UDiffSE) at
   1 × 256 and 4 × 512 frames, in float32 and bfloat16 compute (parameters float32);
3. the full-recipe real-time factor of UDiffSE+ and UDiffSE (the default settings of the methods in
   :mod:`jaxse.registry`: 30 steps, b = 4 samples, UDiffSE 5 EM iterations) on one 4 s utterance (512 frames)
   with the 28M network, and UDiffSE with the 65M, measured (the whole compiled enhancement program of the
   engine, :class:`jaxse.engine.batch.Enhancer`, STFT to waveform, on the backend that
   :meth:`jaxse.registry.Method.make_backend` makes; random weights: the cost does not depend on them);
4. training steps per second of the 28M recipe (``configs/udiffse_plus_28m.py``, its batch of 4 × 256-frame
   crops) over all local devices;
5. the project's goals beside the measured figures (UDiffSE+ 28M RTF ≤ 0.5, UDiffSE 65M RTF ≤ 2; the
   per-NFE ratio to the reference PyTorch code needs ``benchmarks/against_reference.py`` on the same machine).

Items run in that order of importance within ``--budget-s`` (default 570 s of the 10 minutes a check may
take): an item that would start after the budget is spent is listed as skipped. ``--quick`` measures the same
items at toy sizes (nf 8 networks, 64 frames, 2 steps, a 1 s utterance, ``configs/cpu_small.py``) so that the
script is exercised on a CPU in the tests. The networks are the models of ``configs/udiffse_plus_28m.py`` and
``configs/udiffse_65m.py``, built by their family (:meth:`jaxse.registry.Family.model_from_config`).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxse import registry
from jaxse.errors import one_line
from jaxse.evaluation.bench_networks import CONFIGS, model_of_config
from jaxse.evaluation.bench_timing import (compile_timed, complex_normal, cost_analysis, environment,
                                           load_config_file, run_timed, time_train_step, write_json_atomic)

SCHEMA = "jaxse.evaluation.accelerator/1"
GOALS = {"udiffse+ 28m rtf": 0.5, "udiffse 65m rtf": 2.0}


@dataclasses.dataclass(frozen=True)
class Plan:
    """What one check measures (the full check, or its ``--quick`` reduction)."""

    networks: dict  # name -> (score model, spectral settings), as their family builds them from a config
    shapes: tuple  # (rows, frames) of the bare forward
    dtypes: tuple
    seconds: float  # utterance length of the RTF runs
    recipes: tuple  # (method, network, the method's settings)
    train_config: str
    train_steps: int
    repeats: int
    quick: bool


NETWORK_CONFIGS = {"28m": "udiffse_plus_28m.py", "65m": "udiffse_65m.py"}  # the networks' training configs


def _network(name: str, **model_fields) -> tuple:
    """``(model, spec)`` of the training config of network ``name`` (``model_fields`` changed)."""
    return model_of_config(load_config_file(CONFIGS / NETWORK_CONFIGS[name]), **model_fields)


def _settings(method: str, **fields):
    return registry.method(method).make_settings(**fields)


def make_plan(quick: bool) -> Plan:
    if quick:
        reduced = dict(num_steps=2, num_samples=1)
        return Plan(networks={"28m-nf8": _network("28m", nf=8), "65m-nf8": _network("65m", nf=8)},
                    shapes=((1, 64), (2, 64)), dtypes=("float32", "bfloat16"), seconds=1.0,
                    recipes=(("udiffse+", "28m-nf8", _settings("udiffse+", **reduced)),
                             ("udiffse", "28m-nf8", _settings("udiffse", num_em=1, **reduced))),
                    train_config="cpu_small.py", train_steps=2, repeats=1, quick=True)
    return Plan(networks={"28m": _network("28m"), "65m": _network("65m")}, shapes=((1, 256), (4, 512)),
                dtypes=("float32", "bfloat16"), seconds=4.0,
                recipes=(("udiffse+", "28m", _settings("udiffse+")),
                         ("udiffse", "28m", _settings("udiffse")),
                         ("udiffse", "65m", _settings("udiffse"))),
                train_config="udiffse_plus_28m.py", train_steps=5, repeats=3, quick=False)


def device_info() -> dict:
    d = jax.local_devices()[0]
    info = {"platform": d.platform, "device_kind": d.device_kind, "local_devices": jax.local_device_count(),
            "devices": jax.device_count()}
    try:
        stats = d.memory_stats() or {}
    except Exception:  # not every backend has memory statistics
        stats = {}
    if stats.get("bytes_limit"):
        info["memory_gib"] = stats["bytes_limit"] / 2**30
        info["memory_source"] = "device memory_stats bytes_limit"
    else:
        try:
            pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
            info["memory_gib"] = pages * size / 2**30
            info["memory_source"] = "host memory (no device memory statistics)"
        except (ValueError, OSError, AttributeError):
            info["memory_gib"] = None
    return info


def _memory(compiled) -> dict:
    try:
        m = compiled.memory_analysis()
        parts = {k: int(getattr(m, f"{k}_size_in_bytes")) for k in ("argument", "output", "temp")}
    except Exception:  # not every backend gives it
        return {"memory_gib": None}
    return {"memory_gib": sum(parts.values()) / 2**30, **{f"{k}_gib": v / 2**30 for k, v in parts.items()}}


def _device_peak_gib() -> float | None:
    try:
        stats = jax.local_devices()[0].memory_stats() or {}
    except Exception:
        return None
    peak = stats.get("peak_bytes_in_use")
    return peak / 2**30 if peak else None


def forward_check(model, variables, spec, rows: int, frames: int, repeats: int) -> dict:
    """One bare score-network evaluation (``model.score``) at ``(rows, F, frames)``: compile, steady time,
    FLOPs, memory."""
    x = 0.3 * complex_normal(jax.random.PRNGKey(1), (rows, spec.num_bins, frames))
    t = jnp.full((rows,), 0.5, jnp.float32)
    compiled, times = compile_timed(model.score, (variables, x, t))
    out = {**times, **run_timed(lambda: compiled(variables, x, t), repeats), **cost_analysis(compiled), **_memory(compiled)}
    out["tflops_per_s"] = out["flops"] / out["steady_s"] / 1e12 if out.get("flops") else None
    return out


def rtf_check(method: str, model, variables, cfg, spec, seconds: float) -> dict:
    """The whole compiled enhancement program (STFT, sampler, inverse STFT) of ``method`` (settings ``cfg``) with
    ``model`` on one utterance of ``seconds``: the engine on the method's backend for the model."""
    from jaxse import parallel
    from jaxse.engine.batch import Enhancer

    n = int(round(seconds * spec.sample_rate))
    frames = parallel.round_up(spec.num_frames(n), 64)
    backend = registry.method(method).make_backend(model, variables, cfg, spec)
    enh = Enhancer(backend, batch_size=1, chunk_frames=frames, row_by_row=False)
    rng = np.random.default_rng(0)
    wave = (0.1 * rng.standard_normal(n)).astype(np.float32)
    kd = parallel.key_data(0, "accelerator-check")
    enh.program(frames, 1)
    call = lambda: enh.run_rows(frames, [wave], [1.0], [kd])  # noqa: E731  (returns host arrays: synchronous)
    t0 = time.perf_counter()
    call()
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    call()
    steady = time.perf_counter() - t0
    return {"settings": cfg.to_dict(), "nfe": backend.nfe, "frames": frames, "audio_s": seconds,
            "compile_s": sum(enh.compile_seconds.values()), "first_call_s": first, "steady_s": steady,
            "rtf": steady / seconds, "per_nfe_s": steady / backend.nfe}


class Check:
    def __init__(self, plan: Plan, output: str | None, budget_s: float, log: Callable[[str], None]):
        self.plan, self.output, self.budget_s, self.log = plan, output, float(budget_s), log
        self.t0 = time.perf_counter()
        self.variables: dict[tuple, Any] = {}
        self.result = {"schema": SCHEMA, "quick": plan.quick, "environment": environment(), "device": device_info(),
                       "forward": [], "rtf": [], "train": None, "skipped": [], "errors": [], "complete": False}

    def save(self) -> None:
        if self.output:
            write_json_atomic(self.output, self.result)

    def model(self, name: str, dtype: str) -> tuple[Any, Any, Any]:
        """``(model, variables, spec)`` of network ``name`` computing in ``dtype`` (random weights, made once)."""
        base, spec = self.plan.networks[name]
        model = dataclasses.replace(base, net=dataclasses.replace(base.net, dtype=dtype))
        if name not in self.variables:
            self.variables[name] = jax.block_until_ready(model.init(jax.random.PRNGKey(0), spec.num_bins))
        return model, self.variables[name], spec

    def item(self, what: str, fn: Callable[[], dict], where: str) -> None:
        elapsed = time.perf_counter() - self.t0
        if elapsed > self.budget_s:
            self.result["skipped"].append({"item": what, "why": f"budget of {self.budget_s:.0f} s spent"})
            self.log(f"skipped {what}: budget spent")
            return
        try:
            r = fn()
        except Exception as exc:  # one failed measurement (e.g. out of memory) does not end the check
            msg = one_line(exc, 500) or type(exc).__name__
            self.result["errors"].append({"item": what, "error": msg})
            self.log(f"FAILED {what}: {msg}")
        else:
            r = {"item": what, **r}
            if where == "train":
                self.result["train"] = r
            else:
                self.result[where].append(r)
            self.log(summary_line(where, r))
        self.save()

    def run(self) -> dict:
        p = self.plan
        d = self.result["device"]
        self.log(f"device: {d['platform']} {d['device_kind']} x{d['local_devices']}, "
                 f"{_f(d.get('memory_gib'), '{:.1f}')} GiB ({d.get('memory_source', '')})")
        self.save()
        for rows, frames in p.shapes:
            for name in p.networks:
                for dtype in p.dtypes:
                    def fwd(name=name, dtype=dtype, rows=rows, frames=frames):
                        model, variables, spec = self.model(name, dtype)
                        return {"network": name, "dtype": dtype, "rows": rows, "frames": frames,
                                **forward_check(model, variables, spec, rows, frames, p.repeats)}
                    self.item(f"forward {name} {dtype} {rows}x{frames}", fwd, "forward")
            if (rows, frames) == p.shapes[0]:  # the RTFs and the training step before the larger shapes
                for method, name, cfg in p.recipes:
                    def rtf(method=method, name=name, cfg=cfg):
                        model, variables, spec = self.model(name, "float32")
                        return {"method": method, "network": name, "dtype": "float32",
                                **rtf_check(method, model, variables, cfg, spec, p.seconds)}
                    self.item(f"rtf {method} {name}", rtf, "rtf")
                self.item(f"train {p.train_config}", self.train, "train")
        self.result["device_peak_gib"] = _device_peak_gib()
        self.result["goals"] = goals(self.result)
        self.result["complete"] = True
        self.result["wall_s"] = time.perf_counter() - self.t0
        self.save()
        return self.result

    def train(self) -> dict:
        config = load_config_file(CONFIGS / self.plan.train_config)
        return {"config": self.plan.train_config, **time_train_step(config, self.plan.train_steps)}


def goals(result: dict) -> list[dict]:
    """The measured figure beside each goal (full check only: the quick one runs toy sizes)."""
    out = []
    for r in result["rtf"]:
        key = f"{r['method']} {r['network']} rtf"
        if key in GOALS:
            out.append({"goal": f"{key} <= {GOALS[key]}", "measured": r["rtf"], "met": r["rtf"] <= GOALS[key]})
    return out


def _f(v, fmt: str = "{:.3f}") -> str:
    return "-" if v is None else fmt.format(v)


def summary_line(where: str, r: dict) -> str:
    if where == "forward":
        return (f"forward {r['network']:>8} {r['dtype']:>8} {r['rows']}x{r['frames']:<4} compile {r['compile_s']:6.1f} s"
                f"  per NFE {r['steady_s'] * 1e3:9.2f} ms  {_f(r.get('tflops_per_s'), '{:.2f}')} TFLOP/s"
                f"  memory {_f(r.get('memory_gib'), '{:.2f}')} GiB")
    if where == "rtf":
        return (f"rtf {r['method']:>8} {r['network']:>8} NFE {r['nfe']} x b={r['settings']['num_samples']}, "
                f"{r['audio_s']:.0f} s audio: compile {r['compile_s']:.1f} s, run {r['steady_s']:.2f} s, "
                f"RTF {r['rtf']:.3f} ({r['per_nfe_s'] * 1e3:.1f} ms per NFE)")
    return (f"train {r['config']}: {r['params']:,} params, batch {r['batch']} x {r['crop_frames']} frames on "
            f"{r['num_devices']} device(s): compile {r['compile_s']:.1f} s, {r['steps_per_s']:.3f} steps/s")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m jaxse.evaluation.accelerator",
                                 description="Per-NFE time, compile time and memory of the 28M and 65M networks, "
                                             "full-recipe UDiffSE/UDiffSE+ RTF and training speed on this machine.")
    ap.add_argument("--quick", action="store_true", help="toy sizes (a smoke test of the check on any CPU)")
    ap.add_argument("--json", default="accelerator_check.json", help="output JSON (default accelerator_check.json)")
    ap.add_argument("--budget-s", type=float, default=570.0,
                    help="start no measurement after this many seconds (default 570)")
    args = ap.parse_args(argv)
    log = lambda m: print(m, flush=True)  # noqa: E731
    check = Check(make_plan(args.quick), args.json, args.budget_s, log)
    result = check.run()
    for g in result["goals"]:
        log(f"goal {g['goal']}: measured {g['measured']:.3f} -> {'met' if g['met'] else 'NOT met'}")
    log(f"{len(result['forward'])} forward, {len(result['rtf'])} RTF, {'1' if result['train'] else '0'} training "
        f"measurement(s); {len(result['skipped'])} skipped, {len(result['errors'])} failed; "
        f"{result['wall_s']:.0f} s; JSON: {args.json}")
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
