"""The measuring instruments of the benchmark (:mod:`jaxse.evaluation.benchmark`) and the accelerator check
(:mod:`jaxse.evaluation.accelerator`): compile and run times of a pure function (:func:`time_program`), of the
training step of a config (:func:`time_train_step`), XLA's cost analysis, the environment record, config files
and atomic JSON."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxse import registry
from jaxse.audio import write_bytes_atomic
from jaxse.pytree import count_params

REPO = Path(__file__).resolve().parents[2]


def log(message: str) -> None:
    """A progress line on stderr (the tables go to stdout)."""
    sys.stderr.write(f"[benchmark {time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


@contextlib.contextmanager
def jax_flag(name: str, value):
    """``jax.config`` flag ``name`` set to ``value`` inside the block (restored after)."""
    old = jax.config.values[name]
    jax.config.update(name, value)
    try:
        yield
    finally:
        jax.config.update(name, old)


def complex_normal(key, shape, dtype=jnp.complex64):
    """Circular complex Gaussian with E|z|² = 1 (real and imaginary parts each N(0, 1/2)): the noisy
    spectrograms the benchmark feeds its programs (the same draw as the score core's samplers make)."""
    real_dtype = jnp.float64 if dtype == jnp.complex128 else jnp.float32
    kr, ki = jax.random.split(key)
    re = jax.random.normal(kr, shape, real_dtype)
    im = jax.random.normal(ki, shape, real_dtype)
    return ((re + 1j * im) / math.sqrt(2.0)).astype(dtype)


def load_config_file(path) -> Any:
    """``get_config()`` of a config file (``configs/*.py``); its folder's parent goes on ``sys.path`` so that
    the configs' ``from configs import ...`` resolves."""
    path = Path(path).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such config file")
    root = str(path.parent.parent)
    if root not in sys.path:
        sys.path.insert(0, root)
    spec = importlib.util.spec_from_file_location(f"_jaxse_benchmark_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


# ------------------------------------------------------------------------------------------- timing


def cost_analysis(compiled) -> dict:
    """FLOPs and bytes accessed from XLA's cost analysis (a dict, or a list of dicts on some versions)."""
    try:
        ca = compiled.cost_analysis()
    except Exception:  # not every backend implements it
        return {"flops": None, "bytes_accessed": None}
    if isinstance(ca, (list, tuple)):
        ca = ca[0] if ca else None
    if not isinstance(ca, Mapping):
        return {"flops": None, "bytes_accessed": None}

    def pos(v):
        try:
            v = float(v)
        except (TypeError, ValueError):
            return None
        return v if math.isfinite(v) and v > 0 else None

    return {"flops": pos(ca.get("flops")), "bytes_accessed": pos(ca.get("bytes accessed"))}


def compile_timed(fn: Callable, args: Sequence) -> tuple[Any, dict]:
    """``jax.jit(fn)`` traced, lowered and compiled for ``args``; returns ``(compiled, times)``.

    ``lower_s`` is trace + lowering (as in ``benchmarks/train_step.py``), ``trace_s`` the tracing part.
    """
    jitted = jax.jit(fn)
    t0 = time.perf_counter()
    traced = jitted.trace(*args)
    t1 = time.perf_counter()
    lowered = traced.lower()
    t2 = time.perf_counter()
    compiled = lowered.compile()
    t3 = time.perf_counter()
    return compiled, {"trace_s": t1 - t0, "lower_s": t2 - t0, "compile_s": t3 - t2}


def run_timed(call: Callable[[], Any], repeats: int) -> dict:
    """The first call, then the median of ``repeats`` calls; each waits for its result."""
    t0 = time.perf_counter()
    jax.block_until_ready(call())
    first = time.perf_counter() - t0
    times = []
    for _ in range(max(1, int(repeats))):
        t0 = time.perf_counter()
        jax.block_until_ready(call())
        times.append(time.perf_counter() - t0)
    return {"first_call_s": first, "steady_s": statistics.median(times), "times_s": times, "repeats": len(times)}


def time_program(fn: Callable, args: Sequence, repeats: int) -> dict:
    """Compile ``fn`` for ``args`` (timed), call it (:func:`run_timed`), and its XLA cost analysis."""
    compiled, times = compile_timed(fn, args)
    times.update(run_timed(lambda: compiled(*args), repeats))
    times.update(cost_analysis(compiled))
    return times


def time_train_step(config, steps: int = 5) -> dict:
    """Compile time and steady speed of the jitted training step of a training config (any family), on
    random crops of the config's batch size and crop length, over all local devices (data parallel)."""
    from jaxse import training

    family = registry.family_of_config(config)
    model = family.model_from_config(config)
    spec = family.spec_from_config(config)
    tx = training.optimizer_from_config(config)
    mesh = training.make_mesh()
    state = training.create_train_state(model, tx, 0, spec.num_bins, mesh)
    batch = int(config.training.batch_size)
    length = spec.crop_length(int(config.data.crop_frames))
    rng = np.random.default_rng(0)
    rows = {name: rng.uniform(-1, 1, (batch, length)).astype(np.float32) for name in family.batch_fields}
    waves = training.global_batch(rows, mesh)
    step = training.make_train_step(model, spec, tx, float(config.training.ema_decay), mesh,
                                    objective=family.objective(config, 1))
    t0 = time.perf_counter()
    lowered = step.lower(state, waves)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()
    state, metrics = compiled(state, waves)
    jax.block_until_ready(metrics)
    t3 = time.perf_counter()
    times = []
    for _ in range(max(1, int(steps))):
        s = time.perf_counter()
        state, metrics = compiled(state, waves)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - s)
    steady = statistics.median(times)
    return {
        "params": count_params(state.params),
        "batch": batch,
        "crop_frames": int(config.data.crop_frames),
        "device": str(jax.devices()[0].device_kind),
        "num_devices": jax.device_count(),
        "jax": jax.__version__,
        "lower_s": round(t1 - t0, 3),
        "compile_s": round(t2 - t1, 3),
        "first_call_s": round(t3 - t2, 3),
        "step_s_median": round(steady, 4),
        "steps_per_s": round(1.0 / steady, 3),
    }


# ------------------------------------------------------------------------------------------ output


def load_average():
    try:
        return list(os.getloadavg())
    except (OSError, AttributeError):
        return None


def environment() -> dict:
    """Versions, devices and the JAX settings that change timings (recorded with every run)."""
    import flax
    import jaxlib

    devices = jax.devices()
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    return {
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "flax": flax.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "os": platform.platform(),
        "machine": platform.machine(),
        "backend": jax.default_backend(),
        "device_kind": devices[0].device_kind,
        "devices": [str(d) for d in devices],
        "device_count": len(devices),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": affinity,
        "state_dtype": "complex64",
        "param_dtype": "float32",
        "jax_enable_x64": bool(jax.config.values["jax_enable_x64"]),
        "jax_disable_most_optimizations": bool(jax.config.values["jax_disable_most_optimizations"]),
        "jax_compilation_cache_dir": jax.config.values["jax_compilation_cache_dir"],
        "xla_flags": os.environ.get("XLA_FLAGS"),
        "load_average_start": load_average(),
    }


def clean(obj):
    """JSON-safe copy: numpy scalars to Python, tuples to lists, non-finite floats to null."""
    if isinstance(obj, Mapping):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if obj is None or isinstance(obj, str):
        return obj
    return str(obj)


def write_json_atomic(path, obj) -> None:
    """Write ``obj`` as JSON (NaN/inf as null) atomically (:func:`jaxse.audio.write_bytes_atomic`)."""
    write_bytes_atomic(path, (json.dumps(clean(obj), indent=1, allow_nan=False) + "\n").encode("utf-8"))
