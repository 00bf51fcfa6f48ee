"""The benchmark's runner (:mod:`jaxse.evaluation.benchmark`): the options of a run (:class:`Options`), the
settings each network is measured at, the measurements (:class:`Benchmark`: the main table of every (network,
method) pair, the bare networks, the sweeps) and the fresh processes of the compilation-cache sweep."""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

import jax
import jax.numpy as jnp

from jaxse.errors import one_line
from jaxse.evaluation.bench_methods import (DIFFUSION, METHOD_GROUPS, METHODS, RVAE, Method, RunSettings,
                                            audio_seconds, describe, expand_methods, full_recipe, methods_of,
                                            rvae_decoder_flops, rvae_full_recipe, rvae_time_model)
from jaxse.evaluation.bench_networks import NETWORKS, LoadedNetwork, config_network, load_network, rvae_network
from jaxse.evaluation.bench_timing import (REPO, compile_timed, complex_normal, environment, load_average, log,
                                           run_timed, time_program, write_json_atomic)

SCHEMA = "jaxse.evaluation.benchmark/1"
CHILD_TAG = "JAXSE_BENCHMARK_CHILD "
ALL_SWEEPS = ("steps", "batch", "length", "cache")
STEP_VARIANTS = ("scan", "loop", "unrolled")

SMALL_DEFAULTS = RunSettings(steps=30, em_iters=1, samples=1, batch=1, frames=256)
LARGE_DEFAULTS = RunSettings(steps=2, em_iters=1, samples=1, batch=1, frames=256)
QUICK_DEFAULTS = RunSettings(steps=2, em_iters=2, samples=1, batch=1, frames=64)
SMALL_REPEATS, LARGE_REPEATS, QUICK_REPEATS = 3, 2, 2
# RVAE methods (only em_iters and frames apply): a few EM iterations of the reference's 100, one utterance of
# 256 frames at hop 256 (4.1 s); --quick: 64 frames.
RVAE_DEFAULTS = RunSettings(steps=1, em_iters=2, samples=1, batch=1, frames=256)
RVAE_QUICK_DEFAULTS = RunSettings(steps=1, em_iters=2, samples=1, batch=1, frames=64)

SWEEP_DEFAULTS = {
    "steps": (1, 2, 4, 8),
    "batch": (1, 2, 4),
    "samples": (1, 2, 4),
    "frames": (64, 128, 256, 512),
}
SWEEP_QUICK = {"steps": (1, 2), "batch": (1, 2), "samples": (1, 2), "frames": (64, 128)}



@dataclasses.dataclass
class Options:
    networks: tuple[str, ...] = ("tiny", "28m", "65m")
    configs: tuple[str, ...] = ()
    methods: tuple[str, ...] | None = None  # None: every method of each network's family
    rvae_checkpoint: str | None = None
    steps: int | None = None
    em_iters: int | None = None
    samples: int | None = None
    batch: int | None = None
    frames: int | None = None
    repeats: int | None = None
    sweeps: tuple[str, ...] = ALL_SWEEPS
    sweep_networks: tuple[str, ...] | None = None
    sweep_method: str = "udiffse+"
    sweep_steps: tuple[int, ...] | None = None
    sweep_batch: tuple[int, ...] | None = None
    sweep_samples: tuple[int, ...] | None = None
    sweep_frames: tuple[int, ...] | None = None
    step_variants: tuple[str, ...] = STEP_VARIANTS
    quick: bool = False
    dtype: str = "float32"
    seed: int = 0
    output: str | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _per_network_settings(opts: Options, net: LoadedNetwork) -> tuple[RunSettings, int, str]:
    if net.family == RVAE:
        if opts.quick:
            base, repeats, profile = RVAE_QUICK_DEFAULTS, QUICK_REPEATS, "quick"
        else:
            base, repeats, profile = RVAE_DEFAULTS, SMALL_REPEATS, "rvae (reduced EM)"
        changes = {k: getattr(opts, k) for k in ("em_iters", "frames") if getattr(opts, k) is not None}
        return base.replace(**changes), int(opts.repeats if opts.repeats is not None else repeats), profile
    if opts.quick:
        base, repeats, profile = QUICK_DEFAULTS, QUICK_REPEATS, "quick"
    elif net.large:
        base, repeats, profile = LARGE_DEFAULTS, LARGE_REPEATS, "large (reduced)"
    else:
        base, repeats, profile = SMALL_DEFAULTS, SMALL_REPEATS, "small"
    changes = {k: getattr(opts, k) for k in ("steps", "em_iters", "samples", "batch", "frames")
               if getattr(opts, k) is not None}
    s = base.replace(**changes)
    fm = net.model.net.frame_multiple
    if s.frames % fm:
        raise ValueError(f"{net.name}: --frames {s.frames} is not a multiple of the network's {fm}")
    return s, int(opts.repeats if opts.repeats is not None else repeats), profile


class Benchmark:
    """Runs the measurements of :class:`Options` and collects the JSON-ready result."""

    def __init__(self, opts: Options, argv: Sequence[str] | None = None):
        self.opts = opts
        self.specs = dict(NETWORKS)
        names = list(opts.networks)
        for path in opts.configs:
            if not Path(path).is_file():
                raise FileNotFoundError(f"--config {path}: no such file")
            spec = config_network(path)
            self.specs[spec.name] = spec
            if spec.name not in names:
                names.append(spec.name)
        if opts.rvae_checkpoint is not None:
            if not Path(opts.rvae_checkpoint).exists():
                raise FileNotFoundError(f"--rvae-checkpoint {opts.rvae_checkpoint}: no such file or directory")
            self.specs["rvae"] = rvae_network("rvae", f"the RVAE of {opts.rvae_checkpoint}",
                                              checkpoint=opts.rvae_checkpoint)
            if "rvae" not in names:
                names.append("rvae")
        for n in names:
            if n not in self.specs:
                raise ValueError(f"unknown network {n!r} (known: {', '.join(self.specs)})")
        methods = None if opts.methods is None else expand_methods(opts.methods)
        for m in methods or ():
            if m not in METHODS:
                raise ValueError(f"unknown method {m!r} (known: {', '.join([*METHODS, *METHOD_GROUPS])})")
        for n in opts.sweep_networks or ():
            if n not in self.specs:
                raise ValueError(f"unknown sweep network {n!r} (known: {', '.join(self.specs)})")
            if opts.sweeps and self.specs[n].family != DIFFUSION:
                raise ValueError(f"--sweep-networks {n}: the sweeps cover diffusion networks only ({n} is an RVAE)")
        if opts.sweeps and METHODS.get(opts.sweep_method, METHODS["prior"]).family != DIFFUSION:
            raise ValueError(f"--sweep-method {opts.sweep_method}: the sweeps cover the diffusion methods only "
                             f"({', '.join(methods_of(DIFFUSION))}); measure RVAE methods with --sweeps none")
        self.network_names = names
        opts = dataclasses.replace(opts, networks=tuple(names), methods=methods)
        self.opts = opts
        self.loaded: dict[str, LoadedNetwork] = {}
        self.forward_memo: dict = {}
        self.program_memo: dict = {}
        self.errors = 0
        self.result = {
            "schema": SCHEMA,
            "complete": False,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "argv": list(argv) if argv is not None else None,
            "options": opts.to_dict(),
            "environment": environment(),
            "networks": {},
            "results": [],
            "skipped": [],
            "sweeps": {},
        }

    def methods_for(self, name: str) -> tuple[list[str], list[str]]:
        """``(measured, skipped)``: the methods of ``--methods`` (default: all of the network's family) that apply
        to network ``name``, and those of the other family."""
        family = self.specs[name].family
        if self.opts.methods is None:
            return list(methods_of(family)), []
        run = [m for m in self.opts.methods if METHODS[m].family == family]
        return run, [m for m in self.opts.methods if METHODS[m].family != family]

    # ----------------------------------------------------------------- helpers

    def save(self) -> None:
        if self.opts.output:
            write_json_atomic(self.opts.output, self.result)

    def network(self, name: str) -> LoadedNetwork:
        if name not in self.loaded:
            log(f"{name}: loading")
            net = load_network(self.specs[name], self.opts.dtype, self.opts.seed)
            self.loaded[name] = net
            self.result["networks"][name] = net.info
            log(f"{name}: {net.info['params']:,} parameters ({net.info['weights']}), {net.info['load_s']:.1f} s")
        return self.loaded[name]

    def inputs(self, net: LoadedNetwork, s: RunSettings):
        key = jax.random.PRNGKey(self.opts.seed)
        k_x, k_run = jax.random.split(key)
        # diffusion: (batch, F, T); RVAE: one utterance (F, T) (the EM algorithms take one per call)
        shape = (net.num_bins, s.frames) if net.family == RVAE else (s.batch, net.num_bins, s.frames)
        x = 0.3 * complex_normal(k_x, shape)
        return k_run, jax.block_until_ready(x)

    def forward(self, net: LoadedNetwork, rows: int, frames: int, repeats: int) -> dict:
        key = (net.name, rows, frames)
        if key not in self.forward_memo:
            log(f"{net.name}: bare forward at ({rows}, {net.num_bins}, {frames})")
            x = 0.3 * complex_normal(jax.random.PRNGKey(1), (rows, net.num_bins, frames))
            t = jnp.full((rows,), 0.5, jnp.float32)
            r = time_program(net.model.score, (net.variables, x, t), repeats)
            r["shape"] = [rows, net.num_bins, frames]
            r["gflop"] = r["flops"] / 1e9 if r["flops"] else None
            r["gflops_per_s"] = r["flops"] / 1e9 / r["steady_s"] if r["flops"] else None
            self.forward_memo[key] = r
            rate = f", {r['gflop']:.1f} GFLOP, {r['gflops_per_s']:.1f} GFLOP/s" if r["flops"] else ""
            log(f"  compile {r['compile_s']:.2f} s, steady {r['steady_s']:.3f} s{rate}")
        return self.forward_memo[key]

    def decoder_forward(self, net: LoadedNetwork, chains: int, frames: int, repeats: int) -> dict:
        """The RVAE decoder alone (the model's ``decode``) on ``chains`` latent sequences ``(frames, chains,
        z_dim)``; memoised."""
        cfg = net.model.cfg
        key = (net.name, "decoder", chains, frames)
        if key not in self.forward_memo:
            log(f"{net.name}: bare decoder forward at ({frames}, {chains}, {cfg.z_dim})")
            z = jax.random.normal(jax.random.PRNGKey(1), (frames, chains, cfg.z_dim), jnp.float32)
            r = time_program(net.model.decode, (net.variables, z), repeats)
            r["shape"] = [frames, chains, cfg.z_dim]
            r["xla_flops"] = r["flops"]
            r["xla_note"] = "xla_flops and bytes_accessed count the body of the LSTM's lax.scan once"
            r["flops"] = rvae_decoder_flops(cfg, chains, frames)
            r["flops_source"] = "matrix products of the layer sizes (2 per multiply-add)"
            r["gflop"] = r["flops"] / 1e9
            r["gflops_per_s"] = r["flops"] / 1e9 / r["steady_s"]
            self.forward_memo[key] = r
            log(f"  compile {r['compile_s']:.2f} s, steady {r['steady_s'] * 1e3:.2f} ms, "
                 f"{r['gflop'] * 1e3:.1f} MFLOP, {r['gflops_per_s']:.2f} GFLOP/s")
        return self.forward_memo[key]

    def program(self, net: LoadedNetwork, method: Method, s: RunSettings, repeats: int, variant: str = "scan") -> dict:
        """Compile and time ``method`` (``variant`` "scan" or "unrolled") at ``s``; memoised."""
        key = (net.name, method.name, s, variant)
        if key not in self.program_memo:
            log(f"{net.name}/{method.name} [{variant}] {describe(method, s)}: compiling and timing")
            fn = method.program(net, s, debug_loop=(variant == "unrolled"))
            k_run, x = self.inputs(net, s)
            r = time_program(fn, (net.variables, k_run, x), repeats)
            r.pop("flops")  # XLA counts a while-loop body once: the program's count is no FLOP total
            r.pop("bytes_accessed")
            self.program_memo[key] = r
            log(f"  compile {r['compile_s']:.2f} s, steady {r['steady_s']:.3f} s")
        return dict(self.program_memo[key])

    def python_loop(self, net: LoadedNetwork, s: RunSettings, repeats: int) -> dict:
        """Prior PC sampler as a Python loop over one jitted step (compiled once per shape)."""
        sampler = METHODS["prior"].sampler(s)  # the prior family's sampler at these steps
        model = net.model
        k_run, x = self.inputs(net, s)
        memo_key = (net.name, "loop-step", s.batch, s.frames)
        if memo_key not in self.program_memo:
            log(f"{net.name}/prior [loop] compiling one PC step at ({s.batch}, {net.num_bins}, {s.frames})")

            def step(variables, state, key, t, dt, last):
                return sampler.step(model, variables, state, key, t, dt, last)

            args = (net.variables, x, k_run, jnp.float32(1.0), jnp.float32(0.1), jnp.asarray(False))
            self.program_memo[memo_key] = compile_timed(step, args)
        compiled, ctimes = self.program_memo[memo_key]
        # The same key use and grid as the whole sampler, prepared outside the timed loop.
        x0, keys, ts, dts, lasts = sampler.loop_inputs(model, k_run, x.shape)
        n = len(keys)
        jax.block_until_ready((x0, keys, ts, dts, lasts))

        def call():
            state = x0
            for i in range(n):
                state = compiled(net.variables, state, keys[i], ts[i], dts[i], lasts[i])
            return state

        r = dict(ctimes)
        r.update(run_timed(call, repeats))
        r["compiled_once"] = True  # one step program shared by every step count
        return r

    # ----------------------------------------------------------------- main table

    def measure(self, net: LoadedNetwork, method: Method, s: RunSettings, repeats: int, profile: str) -> dict:
        if method.family != net.family:
            raise ValueError(f"{method.name} is a {method.family} method and {net.name} a {net.family} network")
        if method.family == RVAE:
            return self.measure_rvae(net, method, s, repeats, profile)
        nfe = method.nfe(s)
        rows = method.rows(s)
        fwd = self.forward(net, rows, s.frames, repeats)
        prog = self.program(net, method, s, repeats)
        per_nfe = prog["steady_s"] / nfe
        audio = audio_seconds(net.spec, s.frames)
        entry = {
            "network": net.name,
            "method": method.name,
            "family": DIFFUSION,
            "profile": profile,
            "settings": {k: (v if k in method.uses else None) for k, v in s.to_dict().items()},
            "rows": rows,
            "shapes": {"input": [s.batch, net.num_bins, s.frames], "network": [rows, net.num_bins, s.frames]},
            "audio_s_per_utterance": audio,
            "config": method.config(s),
            "nfe": nfe,
            "timing": prog,
            "per_nfe_s": per_nfe,
            "forward": fwd,
            "overhead_ratio": prog["steady_s"] / (nfe * fwd["steady_s"]),
            "sampler_gflops_per_s_est": (nfe * fwd["flops"] / 1e9 / prog["steady_s"]) if fwd["flops"] else None,
            "rtf": prog["steady_s"] / (s.batch * audio),
            "full_recipe": full_recipe(method, s, per_nfe, prog["steady_s"], net.spec),
        }
        return entry

    def measure_rvae(self, net: LoadedNetwork, method: Method, s: RunSettings, repeats: int, profile: str) -> dict:
        """One :func:`~jaxse.rvae.posterior.rvae_posterior` call at ``s.em_iters`` EM iterations on ``s.frames`` frames,
        the bare decoder on the method's chains, and the full recipe (reference ``num_em``, same length)."""
        cost = method.cost(s)
        chains = method.rows(s)
        z_dim = net.model.cfg.z_dim
        fwd = self.decoder_forward(net, chains, s.frames, repeats)
        prog = self.program(net, method, s, repeats)
        steady = prog["steady_s"]
        tm = rvae_time_model(method, s, steady)
        audio = audio_seconds(net.spec, s.frames)
        return {
            "network": net.name,
            "method": method.name,
            "family": RVAE,
            "profile": profile,
            "settings": {k: (v if k in method.uses else None) for k, v in s.to_dict().items()},
            "rows": chains,
            "shapes": {"input": [net.num_bins, s.frames], "network": [s.frames, chains, z_dim]},
            "audio_s_per_utterance": audio,
            "config": method.config(s),
            "cost": cost,
            "nfe": method.nfe(s),  # decoder forward passes
            "timing": prog,
            "em_iters": int(s.em_iters),
            "pass_units": tm["units"],
            "per_pass_unit_s": tm["per_unit_s"],
            "per_em_iter_s": tm["per_em_iter_s"],
            "fixed_s": tm["fixed_s"],
            "forward": fwd,
            "overhead_ratio": steady / (tm["units"] * fwd["steady_s"]),
            "rtf": steady / audio,
            "full_recipe": rvae_full_recipe(method, s, steady, net.spec),
        }

    def run_main(self) -> None:
        for name in self.network_names:
            run, skip = self.methods_for(name)
            family = self.specs[name].family
            if skip:
                what = "an RVAE" if family == RVAE else "a diffusion"
                log(f"{name}: skipping {', '.join(skip)} ({name} is {what} network)")
                self.result["skipped"].extend(
                    {"network": name, "method": m, "reason": f"{METHODS[m].family} method, {family} network"}
                    for m in skip)
            if skip and not run:  # nothing of --methods applies: not even loaded
                continue
            try:
                net = self.network(name)
                s, repeats, profile = _per_network_settings(self.opts, net)
            except Exception as exc:
                self._error({"network": name, "method": None, "family": family}, exc)
                continue
            for m in run:
                method = METHODS[m]
                try:
                    entry = self.measure(net, method, s, repeats, profile)
                except Exception as exc:
                    self._error({"network": name, "method": m, "family": family}, exc)
                    continue
                self.result["results"].append(entry)
                self.save()

    def _error(self, where: dict, exc: Exception) -> None:
        self.errors += 1
        message = f"{type(exc).__name__}: {one_line(exc, 500)}"
        log(f"ERROR {where}: {message}")
        self.result["results"].append({**where, "error": message})
        self.save()

    # ----------------------------------------------------------------- sweeps

    def sweep_values(self, name: str) -> tuple[int, ...]:
        given = getattr(self.opts, f"sweep_{name}")
        if given is not None:
            return tuple(given)
        return (SWEEP_QUICK if self.opts.quick else SWEEP_DEFAULTS)[name]

    def run_sweeps(self) -> None:
        sweeps = self.opts.sweeps
        if not sweeps:
            return
        diffusion = [n for n in self.network_names if self.specs[n].family == DIFFUSION]
        targets = list(self.opts.sweep_networks or diffusion[:1])
        if not targets:
            log(f"sweeps ({', '.join(sweeps)}) skipped: they cover diffusion networks only, and none is listed")
            return
        method = METHODS[self.opts.sweep_method]
        out = self.result["sweeps"]
        for name in targets:
            try:
                net = self.network(name)
                base, repeats, _ = _per_network_settings(self.opts, net)
            except Exception as exc:
                self._error({"network": name, "method": None, "sweep": "setup"}, exc)
                continue
            for sweep in ("steps", "batch", "length", "cache"):
                if sweep not in sweeps:
                    continue
                fn = getattr(self, f"sweep_{sweep}")
                try:
                    entries = fn(net, method, base, repeats)
                except Exception as exc:
                    self._error({"network": name, "method": method.name, "sweep": sweep}, exc)
                    continue
                out.setdefault(sweep, []).extend(entries)
                self.save()

    def sweep_steps(self, net, method, base, repeats) -> list:
        prior = METHODS["prior"]
        entries = []
        for n in self.sweep_values("steps"):
            s = base.replace(steps=int(n))
            for variant in self.opts.step_variants:
                if variant == "loop":
                    r = self.python_loop(net, s, repeats)
                else:
                    r = self.program(net, prior, s, repeats, variant)
                nfe = prior.nfe(s)
                entries.append({"network": net.name, "method": "prior", "variant": variant, "steps": int(n),
                                "batch": s.batch, "frames": s.frames, "nfe": nfe, "timing": r,
                                "per_step_s": r["steady_s"] / n, "per_nfe_s": r["steady_s"] / nfe})
        return entries

    def sweep_batch(self, net, method, base, repeats) -> list:
        points = [("batch", base.replace(batch=int(b))) for b in self.sweep_values("batch")]
        if "samples" in method.uses:
            seen = {pt for _, pt in points}
            points += [("samples", pt) for pt in (base.replace(samples=int(b)) for b in self.sweep_values("samples"))
                       if pt not in seen]
        entries = []
        for vary, s in points:
            r = self.program(net, method, s, repeats)
            nfe = method.nfe(s)
            entries.append({"network": net.name, "method": method.name, "vary": vary, "batch": s.batch,
                            "samples": s.samples if "samples" in method.uses else None,
                            "rows": method.rows(s), "frames": s.frames, "nfe": nfe, "timing": r,
                            "per_utterance_s": r["steady_s"] / s.batch,
                            "utterances_per_s": s.batch / r["steady_s"],
                            "per_nfe_row_s": r["steady_s"] / (nfe * method.rows(s))})
        return entries

    def sweep_length(self, net, method, base, repeats) -> list:
        entries = []
        fm = net.model.net.frame_multiple
        for frames in self.sweep_values("frames"):
            if frames % fm:
                log(f"{net.name}: length sweep skips {frames} frames (not a multiple of {fm})")
                continue
            s = base.replace(frames=int(frames))
            r = self.program(net, method, s, repeats)
            audio = audio_seconds(net.spec, s.frames)
            entries.append({"network": net.name, "method": method.name, "frames": s.frames, "batch": s.batch,
                            "rows": method.rows(s), "nfe": method.nfe(s), "audio_s": audio, "timing": r,
                            "per_frame_s": r["steady_s"] / (s.frames * s.batch),
                            "rtf": r["steady_s"] / (audio * s.batch)})
        return entries

    def sweep_cache(self, net, method, base, repeats) -> list:
        spec = {"network": net.name, "method": method.name,
                "settings": base.to_dict(), "dtype": self.opts.dtype, "seed": self.opts.seed,
                "disable_most_optimizations": bool(jax.config.values["jax_disable_most_optimizations"])}
        for path in self.opts.configs:
            if Path(path).stem == net.name:
                spec["config_file"] = str(path)
        cache_dir = tempfile.mkdtemp(prefix="jaxse_bench_cache_")
        runs = []
        try:
            for label, use_cache in (("off", False), ("on, cold", True), ("on, warm", True)):
                log(f"{net.name}/{method.name}: compilation cache {label} (fresh process)")
                r = run_cache_child(spec, cache_dir if use_cache else None)
                entries = [p for p in Path(cache_dir).rglob("*") if p.is_file()]
                r.update({"network": net.name, "method": method.name, "settings": base.to_dict(), "run": label,
                          "cache": use_cache,
                          "cache_config": {"jax_compilation_cache_dir": "<temporary directory>",
                                           "jax_persistent_cache_min_compile_time_secs": 0.0,
                                           "jax_persistent_cache_min_entry_size_bytes": 0} if use_cache else None,
                          "cache_files": len(entries) if use_cache else None,
                          "cache_bytes": sum(p.stat().st_size for p in entries) if use_cache else None})
                runs.append(r)
                log(f"  lower {r['lower_s']:.2f} s, compile {r['compile_s']:.2f} s, process {r['process_s']:.1f} s")
        finally:
            shutil.rmtree(cache_dir, ignore_errors=True)
        return runs

    # ----------------------------------------------------------------- all

    def run(self) -> dict:
        cache_dir = jax.config.values["jax_compilation_cache_dir"]
        if cache_dir and jax.config.values["jax_enable_compilation_cache"]:
            log(f"warning: the persistent compilation cache is on ({cache_dir}): compile times may be cache hits")
        self.save()
        t0 = time.perf_counter()
        self.run_main()
        self.run_sweeps()
        self.result["environment"]["load_average_end"] = load_average()
        self.result["wall_s"] = time.perf_counter() - t0
        self.result["errors"] = self.errors
        self.result["complete"] = True
        self.save()
        return self.result


# ------------------------------------------------------------------------------- compilation cache


def run_cache_child(spec: dict, cache_dir: str | None) -> dict:
    """Compile ``spec``'s program in a fresh Python process (cache off, or on in ``cache_dir``)."""
    payload = dict(spec, cache_dir=cache_dir)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("JAX_COMPILATION_CACHE", "JAX_PERSISTENT_CACHE", "JAX_ENABLE_COMPILATION_CACHE"))}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"  # the parent may hold most of an accelerator's memory
    cmd = [sys.executable, "-m", "jaxse.benchmark", "--cache-child", json.dumps(payload)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(CHILD_TAG)]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise RuntimeError(f"cache child failed (exit {proc.returncode}): {' | '.join(tail)}")
    r = json.loads(lines[-1][len(CHILD_TAG):])
    r["process_s"] = wall
    return r


def cache_child(payload: dict) -> dict:
    """In the child: set the cache flags before anything compiles, build the program, lower and compile it."""
    t_start = time.perf_counter()
    cache_dir = payload.get("cache_dir")
    if cache_dir:
        jax.config.update("jax_enable_compilation_cache", True)
        jax.config.update("jax_compilation_cache_dir", cache_dir)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    else:
        jax.config.update("jax_enable_compilation_cache", False)
    jax.config.update("jax_disable_most_optimizations", bool(payload.get("disable_most_optimizations")))
    name = payload["network"]
    spec = config_network(payload["config_file"], name) if payload.get("config_file") else NETWORKS[name]
    net = load_network(spec, payload["dtype"], payload["seed"], abstract=True)
    s = RunSettings(**payload["settings"])
    method = METHODS[payload["method"]]
    fn = method.program(net, s)
    shapes = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), net.variables)
    key = jax.eval_shape(jax.random.PRNGKey, 0)
    x = jax.ShapeDtypeStruct((s.batch, net.num_bins, s.frames), jnp.complex64)
    t_ready = time.perf_counter()
    _, times = compile_timed(fn, (shapes, key, x))
    times["setup_s"] = t_ready - t_start
    times["cache_dir_set"] = bool(cache_dir)
    return times

