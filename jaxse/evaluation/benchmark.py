"""Inference benchmark: compile and run times of the prior sampler, the diffusion posterior samplers (UDiffSE,
UDiffSE+) and the RVAE EM algorithms (VEM, MHEM, MALAEM, LDEM).

    python -m jaxse.benchmark -o bench.json                      # tiny, 28M and 65M nets, all methods, all sweeps
    python -m jaxse.benchmark --quick -o /tmp/quick.json         # smoke test: shipped prior, 64 frames, 2 steps
    python -m jaxse.benchmark --networks 28m --methods udiffse+ --steps 2 --sweeps none -o b28.json
    python -m jaxse.benchmark --config configs/cpu_small.py --sweeps steps -o small.json
    python -m jaxse.benchmark --networks rvae --methods rvae --em-iters 2 --sweeps none -o rvae.json
    python -m jaxse.benchmark --rvae-checkpoint runs/rvae_published --sweeps none -o rvae_pub.json

Methods and networks come in two families. The diffusion methods (``prior``, ``udiffse``, ``udiffse+``) run on
the diffusion networks (score models: ``tiny``, ``nano``, ``cpu_small``, ``28m``, ``65m``, ``--config`` files),
the RVAE methods (``rvae-vem``, ``rvae-mhem``, ``rvae-malaem``, ``rvae-ldem``; ``rvae`` names all four) on the
RVAE networks (``rvae``: the RVAE shipped in ``jaxse/assets/rvae`` if there is one, else the published
non-causal architecture (1.03M parameters) with random weights, or the model of ``--rvae-checkpoint``;
``rvae-nano``: 16-unit LSTMs, random weights, for smoke tests). A pair of a method and a network of different
families is skipped (logged, and listed under ``skipped`` in the JSON). Without ``--methods`` every network
gets all the methods of its family.

For every (network, method) pair the sampler is compiled once as a whole (``jax.jit(f).trace(...)`` →
``.lower()`` → ``.compile()``, each timed) and then called: the first call, then ``--repeats`` calls whose
median is the steady-state time (every call ends with ``jax.block_until_ready``). The bare network
evaluation (``ScoreModel.score``) is compiled and timed on its own at the sampler's network shape
(rows = utterances × posterior samples, F bins, T frames), with its FLOP count from XLA's cost analysis
(``compiled.cost_analysis()``; null where the backend gives none) and the achieved GFLOP/s. From these:
time per network evaluation (steady ÷ NFE, NFE from the method's config) and the sampler overhead ratio
``steady ÷ (NFE × forward)`` (1.0 = the sampler costs nothing beyond its network calls).

Full-size networks are far too slow on a small CPU for the published recipes (30 steps × 2 NFE × 5 EM
iterations × 4 samples for UDiffSE), so networks with ≥ 5M parameters are measured at reduced settings by
default (2 steps, 1 EM iteration, 1 sample, 256 frames) and every result carries a ``full_recipe`` block: the
recipe's NFE and network rows, and ``seconds = NFE_full × measured per-NFE time × (rows_full·frames_full) /
(rows·frames)``, with ``extrapolated: true`` whenever the measured settings differ from the recipe (the
assumption, time ∝ NFE × rows × frames, is written beside it).

RVAE methods: one :func:`jaxse.rvae.posterior.rvae_posterior` call on one utterance, a random (513, T) spectrogram
(T frames of the RVAE's STFT, hop 256: 256 frames ≈ 4.1 s of audio), at ``--em-iters`` EM iterations (default
2, far below the reference's 100) and otherwise the :class:`~jaxse.rvae.posterior.RVAEPosteriorConfig` defaults; timed
as above. The bare network is the RVAE decoder on the method's latent chains, ``(T, chains, 16)`` time-major;
its FLOPs are counted from the layer sizes (matrix products; XLA's cost analysis counts the body of the LSTM's
``lax.scan`` once, its figure is kept as ``xla_flops``). The pass counts of
:meth:`~jaxse.rvae.posterior.RVAEPosteriorConfig.cost` (decoder and encoder, forward and backward) give the time model:
``units = forward passes + 2 × backward passes`` (encoder and decoder alike), affine in the EM count, so
``per_em_iter_s`` is the measured time per unit × the units one more EM iteration adds, and the
``full_recipe`` (the reference ``num_em`` at the measured length; the RVAE runs whole utterances) is
``seconds = steady × units_full / units`` with its real-time factor (``extrapolated: true`` unless the
measured EM count is the recipe's). ``overhead_ratio`` is ``steady ÷ (units × decoder forward)``.

Sweeps (on ``--sweep-networks``, default the first diffusion network; the sweeps cover the diffusion methods
only):

* ``steps``: prior PC sampler for each step count as a ``lax.scan`` (one compiled step body: compile time
  flat in N), as a Python loop over one jitted PC step (compiled once, N dispatches), and unrolled in
  one jit (``debug_loop``: compile time grows with N);
* ``batch``: utterances per call and parallel posterior samples (throughput per utterance);
* ``length``: utterance length in frames;
* ``cache``: JAX's persistent compilation cache; the same program is compiled in three fresh processes,
  once without the cache and twice with ``jax_compilation_cache_dir`` set to a temporary directory (and the
  minimum compile time / entry size thresholds at 0): a cold start that fills it, then a warm one.

Methods and networks are registries (:data:`METHODS`, :data:`NETWORKS`): a new posterior method is one
entry, e.g. ``"name": posterior_method("name")`` or ``"rvae-name": rvae_method("name")``. The JSON (``-o``) is
rewritten atomically after every measurement, so a long run that is interrupted keeps what it measured
(``complete: false``). Progress goes to stderr, the tables to stdout. Nothing here assumes a CPU: the same
command runs on GPU/TPU.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import importlib.util
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxse import registry
from jaxse.pytree import count_params
from jaxse.diffusion import samplers
from jaxse.audio import write_bytes_atomic
from jaxse.diffusion.models import ScoreModel, UDIFFSE_65M, UDIFFSE_PLUS_28M
from jaxse.rvae.net import RVAEConfig, config_from_params, decoder_forward, init_params
from jaxse.rvae.posterior import RVAEPosteriorConfig, rvae_posterior
from jaxse.rvae.spectral import RVAESpecConfig
from jaxse.diffusion.sde import complex_normal
from jaxse.spectral import SpecConfig
from jaxse.diffusion.udiffse import PosteriorConfig, posterior_mean

SCHEMA = "jaxse.evaluation.benchmark/1"
REPO = Path(__file__).resolve().parents[2]
CHILD_TAG = "JAXSE_BENCHMARK_CHILD "
LARGE_PARAMS = 5_000_000  # networks at least this big get the reduced default settings
FULL_FRAMES = 256  # utterance length of the full recipes (the reference crop: batch 1 × 256 frames)
ALL_SWEEPS = ("steps", "batch", "length", "cache")
STEP_VARIANTS = ("scan", "loop", "unrolled")
DIFFUSION, RVAE = "diffusion", "rvae"  # the two families of methods and networks


def _log(message: str) -> None:
    sys.stderr.write(f"[benchmark {time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


# ------------------------------------------------------------------------------------------ settings


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """The sizes of one measured call.

    ``steps``: reverse diffusion steps; ``em_iters``: EM iterations (UDiffSE); ``samples``: parallel posterior
    samples per utterance; ``batch``: utterances per call (prior: samples drawn per call); ``frames``: STFT
    frames per utterance.
    """

    steps: int
    em_iters: int
    samples: int
    batch: int
    frames: int

    def replace(self, **changes) -> "RunSettings":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


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


# ------------------------------------------------------------------------------------------- methods


@dataclasses.dataclass(frozen=True)
class Method:
    """A sampler to benchmark.

    ``program(model, settings, debug_loop)`` returns a pure ``fn(variables, key, x) -> array`` with ``x``
    the (batch, F, T) input (the noisy mixture; the prior only reads its shape); ``nfe(settings)``: network
    evaluations per call; ``rows(settings)``: the network's batch; ``config(settings)``: the sampler settings
    as a dict (recorded); ``full``: the full recipe; ``uses``: the :class:`RunSettings` fields it depends on.

    ``family``: ``"diffusion"`` (runs on score models) or ``"rvae"`` (runs on RVAEs: ``program(rvae_config, ...)``
    returns ``fn(params, key, x)`` with ``x`` one (F, T) utterance; ``nfe``: decoder forward passes; ``rows``: the
    decoder's chains; ``cost(settings)``: :meth:`jaxse.rvae.posterior.RVAEPosteriorConfig.cost`).
    """

    name: str
    description: str
    program: Callable[..., Callable]
    nfe: Callable[[RunSettings], int]
    rows: Callable[[RunSettings], int]
    config: Callable[[RunSettings], dict]
    full: RunSettings
    uses: tuple[str, ...]
    family: str = DIFFUSION
    cost: Callable[[RunSettings], dict] | None = None


def prior_method(base: samplers.PCConfig = samplers.UDIFFSE_PC) -> Method:
    """Unconditional sampling from the prior with the PC sampler ``base`` (steps from the settings)."""

    def pc(s: RunSettings) -> samplers.PCConfig:
        return base.replace(num_steps=int(s.steps))

    def program(model: ScoreModel, s: RunSettings, debug_loop: bool = False):
        cfg = pc(s)

        def fn(variables, key, x):
            x_out, _ = samplers.sample(key, model.score_fn(variables), model.sde, cfg, x.shape, debug_loop=debug_loop)
            return x_out

        return fn

    full = RunSettings(steps=base.num_steps, em_iters=1, samples=1, batch=1, frames=FULL_FRAMES)
    return Method("prior", f"PC sampler from the prior ({base.nfe_per_step} NFE/step)", program,
                  lambda s: samplers.count_nfe(pc(s)), lambda s: int(s.batch), lambda s: pc(s).to_dict(), full,
                  ("steps", "batch", "frames"))


def posterior_method(name: str, **fixed) -> Method:
    """A :func:`jaxse.diffusion.udiffse.posterior_mean` method; ``fixed``: other :class:`PosteriorConfig` fields."""
    base = PosteriorConfig(method=name, **fixed)

    def cfg(s: RunSettings) -> PosteriorConfig:
        return dataclasses.replace(base, num_steps=int(s.steps), num_em=int(s.em_iters), num_samples=int(s.samples))

    def program(model: ScoreModel, s: RunSettings, debug_loop: bool = False):
        c = cfg(s)

        def fn(variables, key, x):
            s_hat, _ = posterior_mean(key, model.score_fn(variables), model.sde, c, x, None, debug_loop=debug_loop)
            return s_hat

        return fn

    full = RunSettings(steps=base.num_steps, em_iters=base.num_em, samples=base.num_samples, batch=1,
                       frames=FULL_FRAMES)
    # Whether the EM count matters: compare the NFE at 1 and 2 EM iterations.
    probe = RunSettings(steps=1, em_iters=1, samples=1, batch=1, frames=FULL_FRAMES)
    uses_em = cfg(probe).nfe != cfg(probe.replace(em_iters=2)).nfe
    uses = ("steps",) + (("em_iters",) if uses_em else ()) + ("samples", "batch", "frames")
    return Method(name, f"posterior mean, {name} (jaxse.diffusion.udiffse)", program, lambda s: cfg(s).nfe,
                  lambda s: int(s.batch) * int(s.samples), lambda s: cfg(s).to_dict(), full, uses)


def rvae_method(name: str, method_name: str | None = None, **fixed) -> Method:
    """A :func:`jaxse.rvae.posterior.rvae_posterior` method (``name``: ``vem``, ``mhem``, ``malaem`` or ``ldem``) on one
    utterance; ``fixed``: other :class:`RVAEPosteriorConfig` fields. The EM count comes from the settings (the
    full recipe: the config's ``num_em``); the frames are the utterance length. ``method_name``: the name of the
    method (default: the enhancement method of :mod:`jaxse.registry` with these settings)."""
    base = RVAEPosteriorConfig(method=name, **fixed)

    def cfg(s: RunSettings) -> RVAEPosteriorConfig:
        return dataclasses.replace(base, num_em=int(s.em_iters))

    def program(rvae: RVAEConfig, s: RunSettings, debug_loop: bool = False):
        c = cfg(s)

        def fn(params, key, x):
            s_hat, _ = rvae_posterior(key, params, c, x, None, debug_loop=debug_loop)
            return s_hat

        return fn

    full = RunSettings(steps=1, em_iters=base.num_em, samples=1, batch=1, frames=FULL_FRAMES)
    if method_name is None:
        method_name = registry.method_named_by("rvae", name)
    return Method(method_name, f"RVAE EM, {name} (jaxse.rvae.posterior, one utterance)", program,
                  lambda s: cfg(s).nfe, lambda s: int(cfg(s).cost()["chains"]), lambda s: cfg(s).to_dict(), full,
                  ("em_iters", "frames"), RVAE, lambda s: cfg(s).cost())


def _enhancement_method(name: str) -> Method:
    """The benchmark program of an enhancement method of :mod:`jaxse.registry` (by its family)."""
    m = registry.method(name)
    if m.family == "rvae":
        return rvae_method(m.settings_method, name)
    return posterior_method(m.settings_method)


# The methods of the CLI: the bare prior sampler, then every enhancement method of jaxse.registry that runs on
# an unsupervised prior (the diffusion prior or the RVAE). The supervised methods (sgmse+, supervised) are not
# benchmarked here: their networks take the noisy spectrogram as an input; their RTF is in enhance.py's log.
BENCHMARKED_FAMILIES = ("ncsnpp", "rvae")
METHODS: dict[str, Method] = {"prior": prior_method(), **{n: _enhancement_method(n) for n in registry.METHODS
                                                          if registry.method(n).family in BENCHMARKED_FAMILIES}}
METHOD_GROUPS = {"rvae": tuple(n for n, m in METHODS.items() if m.family == RVAE)}  # --methods shorthands


def methods_of(family: str) -> tuple[str, ...]:
    return tuple(n for n, m in METHODS.items() if m.family == family)


def expand_methods(names: Sequence[str]) -> tuple[str, ...]:
    """``names`` with the shorthands of :data:`METHOD_GROUPS` replaced by their methods (duplicates dropped)."""
    out: list[str] = []
    for n in names:
        for m in METHOD_GROUPS.get(n, (n,)):
            if m not in out:
                out.append(m)
    return tuple(out)


# ------------------------------------------------------------------------------------------ networks


@dataclasses.dataclass(frozen=True)
class NetworkSpec:
    """``load() -> (model, variables or None, spec, info)``; ``None`` variables: initialise at random.

    ``family`` ``"rvae"``: ``model`` is an :class:`~jaxse.rvae.net.RVAEConfig`, ``variables`` its parameter
    dict (``{"encoder", "decoder"}``) and ``spec`` an :class:`~jaxse.rvae.spectral.RVAESpecConfig`.
    """

    name: str
    description: str
    load: Callable[[], tuple]
    family: str = DIFFUSION


def _load_config_file(path) -> Any:
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


def config_network(path, name: str | None = None) -> NetworkSpec:
    """A network built from a training config file (random weights)."""

    def load():
        from jaxse.training import model_from_config, spec_from_config

        config = _load_config_file(path)
        info = {"weights": "random init", "config": str(path)}
        return model_from_config(config), None, spec_from_config(config), info

    return NetworkSpec(name or Path(path).stem, f"model of {path}", load)


def _fixed_network(name: str, description: str, model: ScoreModel) -> NetworkSpec:
    return NetworkSpec(name, description, lambda: (model, None, SpecConfig(), {"weights": "random init"}))


def _load_shipped():
    from jaxse.enhance import CheckpointError
    from jaxse.diffusion.backend import default_checkpoint_path, load_prior

    try:
        model, variables, spec = load_prior()
        info = {"weights": "shipped prior (trained)", "checkpoint": str(default_checkpoint_path())}
        return model, variables, spec, info
    except CheckpointError as exc:  # no prior in this installation: same layout, random weights
        _log(f"tiny: {exc}; using configs/shipped_prior.py with random weights")
        model, _, spec, info = config_network(REPO / "configs" / "shipped_prior.py").load()
        return model, None, spec, {**info, "note": "shipped prior missing"}


def rvae_network(name: str, description: str, checkpoint=None, config: RVAEConfig | None = None) -> NetworkSpec:
    """An RVAE network: ``config`` given: that architecture with random weights; else ``checkpoint`` (anything
    :func:`jaxse.enhance.load_rvae_prior` reads: a directory with ``rvae.json``, a reference ``.pt``, a ``.npz``);
    else the RVAE shipped in ``jaxse/assets/rvae``, or, where there is none, the published architecture
    (:class:`~jaxse.rvae.net.RVAEConfig` defaults) with random weights."""

    def load():
        from jaxse.enhance import CheckpointError
        from jaxse.rvae.backend import default_rvae_checkpoint_path, load_rvae_prior

        if config is not None:
            return config, None, RVAESpecConfig(), {"weights": "random init"}
        if checkpoint is not None:
            params, spec = load_rvae_prior(checkpoint)  # CheckpointError: one line, reported as this net's error
            return config_from_params(params), params, spec, {"weights": "checkpoint", "checkpoint": str(checkpoint)}
        try:
            params, spec = load_rvae_prior(None)
        except CheckpointError as exc:  # no RVAE in this installation: the published size, random weights
            _log(f"{name}: no usable shipped RVAE at {default_rvae_checkpoint_path()}; using the published RVAE "
                 "architecture with random weights (--rvae-checkpoint PATH measures trained weights)")
            return RVAEConfig(), None, RVAESpecConfig(), {
                "weights": "random init", "architecture": "published non-causal RVAE (RVAEConfig defaults)",
                "note": f"shipped RVAE missing ({' '.join(str(exc).split())[:200]})"}
        info = {"weights": "shipped RVAE (trained)", "checkpoint": str(default_rvae_checkpoint_path())}
        return config_from_params(params), params, spec, info

    return NetworkSpec(name, description, load, RVAE)


NETWORKS: dict[str, NetworkSpec] = {
    "tiny": NetworkSpec("tiny", "the shipped prior (NCSN++M nf 16, 0.44M)", _load_shipped),
    "nano": _fixed_network("nano", "NCSN++M nf 8 (smoke tests)", dataclasses.replace(
        UDIFFSE_PLUS_28M, net=dataclasses.replace(UDIFFSE_PLUS_28M.net, nf=8))),
    "cpu_small": config_network(REPO / "configs" / "cpu_small.py", "cpu_small"),
    "28m": _fixed_network("28m", "UDiffSE+ NCSN++M (UDIFFSE_PLUS_28M)", UDIFFSE_PLUS_28M),
    "65m": _fixed_network("65m", "UDiffSE NCSN++ (UDIFFSE_65M)", UDIFFSE_65M),
    "rvae": rvae_network("rvae", "the shipped RVAE, else the published non-causal RVAE (1.03M) at random"),
    "rvae-nano": rvae_network("rvae-nano", "RVAE with 16-unit LSTMs (smoke tests)",
                              config=RVAEConfig(dim_rnn_g_x=16, dim_rnn_g_z=16, dim_rnn_h=16)),
}


@contextlib.contextmanager
def _jax_flag(name: str, value):
    old = jax.config.values[name]
    jax.config.update(name, value)
    try:
        yield
    finally:
        jax.config.update(name, old)


@dataclasses.dataclass
class LoadedNetwork:
    name: str
    model: Any  # ScoreModel; RVAEConfig for the RVAE family
    variables: Any
    spec: Any  # SpecConfig; RVAESpecConfig for the RVAE family
    info: dict
    family: str = DIFFUSION

    @property
    def num_bins(self) -> int:
        return self.spec.num_bins

    @property
    def large(self) -> bool:
        return self.info["params"] >= LARGE_PARAMS


def _load_rvae_network(spec: NetworkSpec, dtype: str, seed: int, t0: float) -> LoadedNetwork:
    cfg, params, sspec, info = spec.load()
    if params is None:
        with _jax_flag("jax_disable_most_optimizations", True):  # as for the score models: init is not measured
            params = init_params(jax.random.PRNGKey(seed), cfg)
    params = jax.device_put(jax.tree.map(jnp.asarray, params))
    jax.block_until_ready(params)
    if dtype != "float32":
        _log(f"{spec.name}: --dtype {dtype} does not apply to the RVAE (it runs in float32)")
    info = {
        "name": spec.name,
        "description": spec.description,
        "family": RVAE,
        **info,
        "params": count_params(params),
        "net": {**cfg.to_dict(), "dtype": "float32"},
        "frame_multiple": 1,
        "num_bins": sspec.num_bins,
        "stft": sspec.to_dict(),
        "load_s": time.perf_counter() - t0,
    }
    return LoadedNetwork(spec.name, cfg, params, sspec, info, RVAE)


def load_network(spec: NetworkSpec, dtype: str = "float32", seed: int = 0, abstract: bool = False) -> LoadedNetwork:
    """Build a network; random weights come from the model's own ``init`` (``abstract``: shapes only; diffusion
    networks only)."""
    t0 = time.perf_counter()
    if spec.family == RVAE:
        if abstract:
            raise ValueError(f"{spec.name}: abstract loading is for diffusion networks only")
        return _load_rvae_network(spec, dtype, seed, t0)
    model, variables, sspec, info = spec.load()
    model = dataclasses.replace(model, net=dataclasses.replace(model.net, dtype=dtype))
    if variables is None:
        if abstract:
            variables = model.abstract_variables(sspec.num_bins)
        else:
            # The init program is not what is measured: compile it without XLA optimisations (2-3x faster).
            with _jax_flag("jax_disable_most_optimizations", True):
                variables = model.init(jax.random.PRNGKey(seed), sspec.num_bins)
    if not abstract:
        variables = jax.device_put(variables)
        jax.block_until_ready(variables)
    info = {
        "name": spec.name,
        "description": spec.description,
        "family": DIFFUSION,
        **info,
        "params": count_params(variables["params"]),
        "parameterization": model.parameterization,
        "net": model.net.to_dict(),
        "frame_multiple": model.net.frame_multiple,
        "num_bins": sspec.num_bins,
        "load_s": time.perf_counter() - t0,
    }
    return LoadedNetwork(spec.name, model, variables, sspec, info)


# ------------------------------------------------------------------------------------------- timing


def _cost(compiled) -> dict:
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
    compiled, times = compile_timed(fn, args)
    times.update(run_timed(lambda: compiled(*args), repeats))
    times.update(_cost(compiled))
    return times


def time_train_step(config, steps: int = 5) -> dict:
    """Compile time and steady speed of the jitted training step of a training config (any family), on
    random crops of the config's batch size and crop length, over all local devices (data parallel)."""
    from jaxse import training

    model = training.model_from_config(config)
    spec = training.spec_from_config(config)
    tx = training.optimizer_from_config(config)
    mesh = training.make_mesh()
    state = training.create_train_state(model, tx, 0, spec.num_bins, mesh)
    batch = int(config.training.batch_size)
    length = spec.crop_length(int(config.data.crop_frames))
    rng = np.random.default_rng(0)
    family = registry.family_of_model(model)
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


# ----------------------------------------------------------------------------------------- the runner


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


def _audio_seconds(spec, frames: int) -> float:
    """Seconds of the shortest signal whose centred STFT has ``frames`` frames: ``(frames − 1) × hop``."""
    if hasattr(spec, "crop_length"):
        return spec.crop_length(frames) / spec.sample_rate
    return (int(frames) - 1) * spec.hop_length / spec.sample_rate


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
            _log(f"{name}: loading")
            net = load_network(self.specs[name], self.opts.dtype, self.opts.seed)
            self.loaded[name] = net
            self.result["networks"][name] = net.info
            _log(f"{name}: {net.info['params']:,} parameters ({net.info['weights']}), {net.info['load_s']:.1f} s")
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
            _log(f"{net.name}: bare forward at ({rows}, {net.num_bins}, {frames})")
            x = 0.3 * complex_normal(jax.random.PRNGKey(1), (rows, net.num_bins, frames))
            t = jnp.full((rows,), 0.5, jnp.float32)
            r = time_program(net.model.score, (net.variables, x, t), repeats)
            r["shape"] = [rows, net.num_bins, frames]
            r["gflop"] = r["flops"] / 1e9 if r["flops"] else None
            r["gflops_per_s"] = r["flops"] / 1e9 / r["steady_s"] if r["flops"] else None
            self.forward_memo[key] = r
            rate = f", {r['gflop']:.1f} GFLOP, {r['gflops_per_s']:.1f} GFLOP/s" if r["flops"] else ""
            _log(f"  compile {r['compile_s']:.2f} s, steady {r['steady_s']:.3f} s{rate}")
        return self.forward_memo[key]

    def decoder_forward(self, net: LoadedNetwork, chains: int, frames: int, repeats: int) -> dict:
        """The RVAE decoder alone on ``chains`` latent sequences ``(frames, chains, z_dim)``; memoised."""
        cfg: RVAEConfig = net.model
        key = (net.name, "decoder", chains, frames)
        if key not in self.forward_memo:
            _log(f"{net.name}: bare decoder forward at ({frames}, {chains}, {cfg.z_dim})")
            z = jax.random.normal(jax.random.PRNGKey(1), (frames, chains, cfg.z_dim), jnp.float32)

            def fn(params, z):
                return decoder_forward(params["decoder"], z)[0]

            r = time_program(fn, (net.variables, z), repeats)
            r["shape"] = [frames, chains, cfg.z_dim]
            r["xla_flops"] = r["flops"]
            r["xla_note"] = "xla_flops and bytes_accessed count the body of the LSTM's lax.scan once"
            r["flops"] = rvae_decoder_flops(cfg, chains, frames)
            r["flops_source"] = "matrix products of the layer sizes (2 per multiply-add)"
            r["gflop"] = r["flops"] / 1e9
            r["gflops_per_s"] = r["flops"] / 1e9 / r["steady_s"]
            self.forward_memo[key] = r
            _log(f"  compile {r['compile_s']:.2f} s, steady {r['steady_s'] * 1e3:.2f} ms, "
                 f"{r['gflop'] * 1e3:.1f} MFLOP, {r['gflops_per_s']:.2f} GFLOP/s")
        return self.forward_memo[key]

    def program(self, net: LoadedNetwork, method: Method, s: RunSettings, repeats: int, variant: str = "scan") -> dict:
        """Compile and time ``method`` (``variant`` "scan" or "unrolled") at ``s``; memoised."""
        key = (net.name, method.name, s, variant)
        if key not in self.program_memo:
            _log(f"{net.name}/{method.name} [{variant}] {_describe(method, s)}: compiling and timing")
            fn = method.program(net.model, s, debug_loop=(variant == "unrolled"))
            k_run, x = self.inputs(net, s)
            r = time_program(fn, (net.variables, k_run, x), repeats)
            r.pop("flops")  # XLA counts a while-loop body once: the program's count is no FLOP total
            r.pop("bytes_accessed")
            self.program_memo[key] = r
            _log(f"  compile {r['compile_s']:.2f} s, steady {r['steady_s']:.3f} s")
        return dict(self.program_memo[key])

    def python_loop(self, net: LoadedNetwork, s: RunSettings, repeats: int) -> dict:
        """Prior PC sampler as a Python loop over one jitted step (compiled once per shape)."""
        pc = samplers.PCConfig(**METHODS["prior"].config(s))  # the registry's prior sampler
        model, sde = net.model, net.model.sde
        k_run, x = self.inputs(net, s)
        memo_key = (net.name, "loop-step", s.batch, s.frames)
        if memo_key not in self.program_memo:
            _log(f"{net.name}/prior [loop] compiling one PC step at ({s.batch}, {net.num_bins}, {s.frames})")

            def step(variables, state, key, t, dt, last):
                z_corr, z_pred = samplers.draw_step_noise(key, pc, state.shape, state.dtype)
                tv = jnp.full((state.shape[0],), t, t.dtype)
                new, _ = samplers.pc_step(model.score_fn(variables), sde, pc, state, tv, dt, z_corr, z_pred, last)
                return new

            args = (net.variables, x, k_run, jnp.float32(1.0), jnp.float32(0.1), jnp.asarray(False))
            self.program_memo[memo_key] = compile_timed(step, args)
        compiled, ctimes = self.program_memo[memo_key]
        # The same key use and grid as samplers.sample, prepared outside the timed loop.
        k_init, k_steps = jax.random.split(k_run)
        x0 = sde.prior_sample(k_init, x.shape)
        n = pc.num_steps
        keys = list(jax.random.split(k_steps, n))
        ts = list(samplers.timesteps(n, sde.t_eps, sde.T))
        dts = list(samplers.step_sizes(pc, sde))
        lasts = [jnp.asarray(i == n - 1) for i in range(n)]
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
        audio = _audio_seconds(net.spec, s.frames)
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
        cfg: RVAEConfig = net.model
        fwd = self.decoder_forward(net, chains, s.frames, repeats)
        prog = self.program(net, method, s, repeats)
        steady = prog["steady_s"]
        tm = rvae_time_model(method, s, steady)
        audio = _audio_seconds(net.spec, s.frames)
        return {
            "network": net.name,
            "method": method.name,
            "family": RVAE,
            "profile": profile,
            "settings": {k: (v if k in method.uses else None) for k, v in s.to_dict().items()},
            "rows": chains,
            "shapes": {"input": [net.num_bins, s.frames], "network": [s.frames, chains, cfg.z_dim]},
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
                _log(f"{name}: skipping {', '.join(skip)} ({name} is {what} network)")
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
        message = f"{type(exc).__name__}: {' '.join(str(exc).split())[:500]}"
        _log(f"ERROR {where}: {message}")
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
            _log(f"sweeps ({', '.join(sweeps)}) skipped: they cover diffusion networks only, and none is listed")
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
                _log(f"{net.name}: length sweep skips {frames} frames (not a multiple of {fm})")
                continue
            s = base.replace(frames=int(frames))
            r = self.program(net, method, s, repeats)
            audio = _audio_seconds(net.spec, s.frames)
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
                _log(f"{net.name}/{method.name}: compilation cache {label} (fresh process)")
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
                _log(f"  lower {r['lower_s']:.2f} s, compile {r['compile_s']:.2f} s, process {r['process_s']:.1f} s")
        finally:
            shutil.rmtree(cache_dir, ignore_errors=True)
        return runs

    # ----------------------------------------------------------------- all

    def run(self) -> dict:
        cache_dir = jax.config.values["jax_compilation_cache_dir"]
        if cache_dir and jax.config.values["jax_enable_compilation_cache"]:
            _log(f"warning: the persistent compilation cache is on ({cache_dir}): compile times may be cache hits")
        self.save()
        t0 = time.perf_counter()
        self.run_main()
        self.run_sweeps()
        self.result["environment"]["load_average_end"] = _load_average()
        self.result["wall_s"] = time.perf_counter() - t0
        self.result["errors"] = self.errors
        self.result["complete"] = True
        self.save()
        return self.result


def _describe(method: Method, s: RunSettings) -> str:
    return ", ".join(f"{k} {getattr(s, k)}" for k in method.uses)


def full_recipe(method: Method, s: RunSettings, per_nfe: float, steady: float, spec: SpecConfig) -> dict:
    """The method's full recipe: its NFE, and its time from the measured per-NFE time (``extrapolated``
    unless the measured settings are the recipe's)."""
    full = method.full
    nfe_full, rows_full, rows = method.nfe(full), method.rows(full), method.rows(s)
    same = all(getattr(full, k) == getattr(s, k) for k in method.uses)
    scale = (rows_full * full.frames) / (rows * s.frames)
    seconds = steady if same else nfe_full * per_nfe * scale
    audio = _audio_seconds(spec, full.frames)
    return {
        "extrapolated": not same,
        "settings": {k: (v if k in method.uses else None) for k, v in full.to_dict().items()},
        "config": method.config(full),
        "nfe": nfe_full,
        "rows": rows_full,
        "size_scale": scale,
        "seconds": seconds,
        "per_utterance_s": seconds / full.batch,
        "rtf": seconds / (full.batch * audio),
        "assumption": None if same else "time ∝ NFE × network rows × frames (per-NFE time measured at the "
                                        "reduced settings, sampler overhead included)",
    }


def rvae_decoder_flops(cfg: RVAEConfig, chains: int, frames: int) -> float:
    """FLOPs of the RVAE decoder on ``(frames, chains, z_dim)`` latents: its matrix products (2 per multiply-add;
    the LSTM input and recurrent products of each direction and the output layer; the gate nonlinearities and
    additions are left out)."""
    directions = 2 if cfg.bidir_h else 1
    gates = 4 * cfg.dim_rnn_h
    per_frame = directions * 2 * gates * (cfg.z_dim + cfg.dim_rnn_h) + 2 * cfg.h_dim * cfg.x_dim
    return float(per_frame * int(chains) * int(frames))


def pass_units(cost: Mapping[str, int]) -> int:
    """Network passes of an RVAE method (:meth:`~jaxse.rvae.posterior.RVAEPosteriorConfig.cost`) as forward-pass units:
    a backward pass counts twice, encoder and decoder passes alike."""
    return (int(cost["decoder_forward"]) + 2 * int(cost["decoder_backward"]) + int(cost["encoder_forward"])
            + 2 * int(cost["encoder_backward"]))


def rvae_time_model(method: Method, s: RunSettings, steady: float) -> dict:
    """The time model of an RVAE method: time ∝ :func:`pass_units`, which is affine in the EM count
    (``units = fixed + per_em × n``: the encoder pass or the final E-step, plus the EM iterations). Returns the
    measured ``units``, ``per_unit_s`` = steady ÷ units, and ``per_em_iter_s`` / ``fixed_s``: the time one more
    EM iteration adds and the rest."""
    n = int(s.em_iters)
    units = pass_units(method.cost(s))
    per_em = pass_units(method.cost(s.replace(em_iters=n + 1))) - units
    per_unit = steady / units
    return {"units": units, "units_per_em_iter": per_em, "per_unit_s": per_unit, "per_em_iter_s": per_em * per_unit,
            "fixed_s": steady - n * per_em * per_unit}


def rvae_full_recipe(method: Method, s: RunSettings, steady: float, spec) -> dict:
    """An RVAE method's full recipe (its config's ``num_em``, the measured utterance length: the RVAE runs whole
    utterances), ``extrapolated`` from the measured time with :func:`rvae_time_model` unless the measured EM count
    is the recipe's."""
    full = method.full.replace(frames=int(s.frames))
    same = int(full.em_iters) == int(s.em_iters)
    tm = rvae_time_model(method, s, steady)
    cost_full = method.cost(full)
    units_full = pass_units(cost_full)
    seconds = steady if same else units_full * tm["per_unit_s"]
    audio = _audio_seconds(spec, full.frames)
    return {
        "extrapolated": not same,
        "settings": {k: (v if k in method.uses else None) for k, v in full.to_dict().items()},
        "config": method.config(full),
        "em_iters": int(full.em_iters),
        "cost": cost_full,
        "nfe": method.nfe(full),
        "pass_units": units_full,
        "seconds": seconds,
        "per_utterance_s": seconds,
        "audio_s": audio,
        "rtf": seconds / audio,
        "assumption": None if same else "time ∝ network passes (forward passes + 2 × backward passes, encoder and "
                                        "decoder alike; M-steps and sampler arithmetic included in the measured "
                                        "time per pass)",
    }


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
    fn = method.program(net.model, s)
    shapes = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), net.variables)
    key = jax.eval_shape(jax.random.PRNGKey, 0)
    x = jax.ShapeDtypeStruct((s.batch, net.num_bins, s.frames), jnp.complex64)
    t_ready = time.perf_counter()
    _, times = compile_timed(fn, (shapes, key, x))
    times["setup_s"] = t_ready - t_start
    times["cache_dir_set"] = bool(cache_dir)
    return times


# ------------------------------------------------------------------------------------------ output


def _load_average():
    try:
        return list(os.getloadavg())
    except (OSError, AttributeError):
        return None


def environment() -> dict:
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
        "load_average_start": _load_average(),
    }


def _clean(obj):
    """JSON-safe copy: numpy scalars to Python, tuples to lists, non-finite floats to null."""
    if isinstance(obj, Mapping):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
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
    write_bytes_atomic(path, (json.dumps(_clean(obj), indent=1, allow_nan=False) + "\n").encode("utf-8"))


def _fs(v) -> str:
    """Seconds, compactly."""
    if v is None or not isinstance(v, (int, float)) or not math.isfinite(v):
        return "-"
    if v < 1e-3:
        return f"{v * 1e6:.0f}us"
    if v < 1.0:
        return f"{v * 1e3:.1f}ms"
    if v < 100:
        return f"{v:.2f}s"
    return f"{v:.0f}s"


def _fn(v, fmt: str = "{:.2f}") -> str:
    return "-" if v is None else fmt.format(v)


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h))
              for i, h in enumerate(headers)]
    line = "  ".join(str(h).rjust(w) if i > 1 else str(h).ljust(w) for i, (h, w) in enumerate(zip(headers, widths)))
    out = [line, "-" * len(line)]
    for r in rows:
        out.append("  ".join(str(c).rjust(w) if i > 1 else str(c).ljust(w) for i, (c, w) in enumerate(zip(r, widths))))
    return "\n".join(out)


def format_report(result: dict) -> str:
    """The tables printed after a run (the JSON holds everything)."""
    env = result["environment"]
    parts = [f"jax {env['jax']} / jaxlib {env['jaxlib']} / flax {env['flax']} on {env['device_count']}× "
             f"{env['device_kind']} ({env['backend']}), {env['cpu_count']} CPUs"
             + (", XLA optimisations off" if env["jax_disable_most_optimizations"] else "")]
    entries = {DIFFUSION: [], RVAE: []}
    for e in result["results"]:
        entries[_family(e)].append(e)
    headers = ["network", "method", "settings", "lower", "compile", "first", "steady", "NFE", "per-NFE", "forward",
               "GFLOP", "GFLOP/s", "overhead", "full NFE", "full time"]
    rows = []
    for e in entries[DIFFUSION]:
        if "error" in e:
            rows.append(_error_row(e, len(headers)))
            continue
        t, f, full = e["timing"], e["forward"], e["full_recipe"]
        star = "*" if full["extrapolated"] else ""
        rows.append([e["network"], e["method"], _describe_settings(e["settings"]), _fs(t["lower_s"]),
                     _fs(t["compile_s"]), _fs(t["first_call_s"]), _fs(t["steady_s"]), str(e["nfe"]),
                     _fs(e["per_nfe_s"]), _fs(f["steady_s"]), _fn(f["gflop"], "{:.1f}"),
                     _fn(f["gflops_per_s"], "{:.1f}"), _fn(e["overhead_ratio"]),
                     f"{full['nfe']}", f"{_fs(full['seconds'])}{star}"])
    if rows or not entries[RVAE]:
        parts.append(_table(headers, rows))
        if any(e.get("full_recipe", {}).get("extrapolated") for e in entries[DIFFUSION]):
            parts.append("* extrapolated: full-recipe NFE × measured per-NFE time × (rows·frames scale); "
                         "see full_recipe in the JSON")
    if entries[RVAE]:
        headers = ["network", "method", "settings", "lower", "compile", "first", "steady", "dec f/b", "enc f/b",
                   "per-EM", "decoder", "GFLOP", "GFLOP/s", "overhead", "RTF", "full EM", "full time", "full RTF"]
        rows = []
        for e in entries[RVAE]:
            if "error" in e:
                rows.append(_error_row(e, len(headers)))
                continue
            t, f, full, c = e["timing"], e["forward"], e["full_recipe"], e["cost"]
            star = "*" if full["extrapolated"] else ""
            rows.append([e["network"], e["method"], _describe_settings(e["settings"]), _fs(t["lower_s"]),
                         _fs(t["compile_s"]), _fs(t["first_call_s"]), _fs(t["steady_s"]),
                         f"{c['decoder_forward']}/{c['decoder_backward']}",
                         f"{c['encoder_forward']}/{c['encoder_backward']}", _fs(e["per_em_iter_s"]),
                         _fs(f["steady_s"]), _fn(f["gflop"], "{:.3g}"), _fn(f["gflops_per_s"], "{:.3g}"),
                         _fn(e["overhead_ratio"]), _fn(e["rtf"], "{:.3g}"), str(full["em_iters"]),
                         f"{_fs(full['seconds'])}{star}", f"{_fn(full['rtf'], '{:.3g}')}{star}"])
        parts.append("\nRVAE EM (one utterance per call; dec/enc f/b: decoder/encoder forward/backward passes, "
                     "decoder: bare forward on the chains; RTF = seconds / audio seconds)")
        parts.append(_table(headers, rows))
        if any(e.get("full_recipe", {}).get("extrapolated") for e in entries[RVAE]):
            parts.append("* extrapolated: full-recipe network passes × measured time per pass (backward = 2 forward); "
                         "see full_recipe in the JSON")
    if result.get("skipped"):
        parts.append(f"skipped (method and network of different families): "
                     f"{', '.join(sk['network'] + '/' + sk['method'] for sk in result['skipped'])}")
    sw = result.get("sweeps", {})
    if sw.get("steps"):
        parts.append("\nsteps sweep (prior PC sampler; scan = lax.scan, loop = Python loop over one jitted step, "
                     "compiled once for all step counts; unrolled = Python loop inside jit)")
        parts.append(_table(["network", "variant", "steps", "NFE", "lower", "compile", "first", "steady", "per-step"],
                            [[e["network"], e["variant"], str(e["steps"]), str(e["nfe"]), _fs(e["timing"]["lower_s"]),
                              _fs(e["timing"]["compile_s"]), _fs(e["timing"]["first_call_s"]),
                              _fs(e["timing"]["steady_s"]), _fs(e["per_step_s"])] for e in sw["steps"]]))
    if sw.get("batch"):
        parts.append("\nbatch sweep (utterances per call, posterior samples per utterance)")
        parts.append(_table(["network", "method", "batch", "samples", "rows", "compile", "steady", "per-utt", "utt/s"],
                            [[e["network"], e["method"], str(e["batch"]), _fn(e["samples"], "{}"), str(e["rows"]),
                              _fs(e["timing"]["compile_s"]), _fs(e["timing"]["steady_s"]), _fs(e["per_utterance_s"]),
                              _fn(e["utterances_per_s"], "{:.3g}")] for e in sw["batch"]]))
    if sw.get("length"):
        parts.append("\nlength sweep (STFT frames per utterance)")
        parts.append(_table(["network", "method", "frames", "audio", "compile", "steady", "per-frame", "RTF"],
                            [[e["network"], e["method"], str(e["frames"]), f"{e['audio_s']:.2f}s",
                              _fs(e["timing"]["compile_s"]), _fs(e["timing"]["steady_s"]), _fs(e["per_frame_s"]),
                              _fn(e["rtf"], "{:.3g}")] for e in sw["length"]]))
    if sw.get("cache"):
        parts.append("\npersistent compilation cache (each run a fresh process)")
        parts.append(_table(["network", "method", "run", "lower", "compile", "process", "cache files"],
                            [[e["network"], e["method"], e["run"], _fs(e["lower_s"]), _fs(e["compile_s"]),
                              _fs(e["process_s"]), _fn(e["cache_files"], "{}")] for e in sw["cache"]]))
    return "\n".join(parts)


def _family(e: dict) -> str:
    if e.get("family") in (DIFFUSION, RVAE):
        return e["family"]
    m = METHODS.get(e.get("method") or "")
    return m.family if m is not None else DIFFUSION


def _error_row(e: dict, width: int) -> list[str]:
    return ([e["network"], e.get("method") or "-", "ERROR: " + e["error"][:60]] + [""] * width)[:width]


def _describe_settings(s: dict) -> str:
    short = {"steps": "N", "em_iters": "EM", "samples": "b", "batch": "U", "frames": "T"}
    return " ".join(f"{short[k]}{v}" for k, v in s.items() if v is not None)


# --------------------------------------------------------------------------------------------- CLI


def _names(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(t) for t in _names(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m jaxse.benchmark",
        description="Compile and run times of the prior sampler, UDiffSE and UDiffSE+ (diffusion networks) and of "
                    "the RVAE EM algorithms VEM, MHEM, MALAEM and LDEM (RVAE networks); JSON + tables.")
    p.add_argument("-o", "--output", help="JSON file (written atomically, updated after every measurement)")
    p.add_argument("--config", action="append", default=[], metavar="FILE",
                   help="training config file (configs/*.py) whose model is benchmarked too, named after the "
                        "file (random weights); repeatable. Alone, it replaces the default --networks")
    p.add_argument("--networks", type=_names, default=None,
                   help=f"comma list from: {', '.join(NETWORKS)} (default tiny,28m,65m; --quick: tiny). rvae: the "
                        "shipped RVAE (jaxse/assets/rvae), else the published architecture with random weights")
    p.add_argument("--rvae-checkpoint", metavar="PATH",
                   help="weights of the rvae network: a directory with rvae.json (python -m jaxse.rvae_convert), a "
                        "reference .pt state_dict or a .npz. Adds rvae to --networks; alone, it replaces the default "
                        "--networks")
    p.add_argument("--methods", type=_names, default=None,
                   help=f"comma list from: {', '.join(METHODS)}, or 'rvae' (the four rvae-* methods), or 'none' "
                        "(sweeps only). Default: every method of each network's family (diffusion methods on "
                        "diffusion networks, rvae-* on RVAE networks); pairs of different families are skipped")
    p.add_argument("--steps", type=_positive,
                   help="reverse diffusion steps (default 30; 2 for nets >= 5M params; --quick 2)")
    p.add_argument("--em-iters", type=_positive,
                   help="EM iterations: UDiffSE (default 1; --quick 2) and the RVAE methods (default 2; the full "
                        "recipe, 100, is extrapolated from them)")
    p.add_argument("--samples", type=_positive, help="parallel posterior samples per utterance (default 1)")
    p.add_argument("--batch", type=_positive, help="utterances per call (prior: samples per call; default 1)")
    p.add_argument("--frames", type=_positive,
                   help="STFT frames per utterance (default 256; --quick 64). RVAE networks: frames of the RVAE STFT "
                        "(hop 256: 256 frames = 4.1 s; diffusion hop 128: 256 frames = 2.0 s)")
    p.add_argument("--repeats", type=_positive,
                   help="timed calls after the first (median; default 3, 2 for nets >= 5M params)")
    p.add_argument("--sweeps", default=",".join(ALL_SWEEPS),
                   help=f"comma list from {', '.join(ALL_SWEEPS)}, or 'none' / 'all' (default all)")
    p.add_argument("--sweep-networks", type=_names,
                   help="diffusion networks to sweep (default: the first diffusion network)")
    p.add_argument("--sweep-method", default="udiffse+",
                   help="diffusion method of the batch, length and cache sweeps (default udiffse+; the sweeps do "
                        "not cover the RVAE methods)")
    p.add_argument("--sweep-steps", type=_ints, help="step counts of the steps sweep (default 1,2,4,8)")
    p.add_argument("--sweep-batch", type=_ints, help="utterances per call in the batch sweep (default 1,2,4)")
    p.add_argument("--sweep-samples", type=_ints,
                   help="posterior samples per utterance in the batch sweep (default 1,2,4)")
    p.add_argument("--sweep-frames", type=_ints, help="frames of the length sweep (default 64,128,256,512)")
    p.add_argument("--step-variants", type=_names, default=STEP_VARIANTS,
                   help=f"steps-sweep loop forms from {', '.join(STEP_VARIANTS)} (default all)")
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes for smoke tests: shipped prior, 64 frames, 2 steps, 2 EM iterations, 2 repeats; "
                        "sweeps over steps 1,2, batch 1,2, samples 1,2, frames 64,128")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                   help="compute dtype of the network's convolutions/attention (parameters stay float32; "
                        "default float32; the RVAE always runs in float32)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the random weights, inputs and sampler noise (default 0)")
    p.add_argument("--cache-child", help=argparse.SUPPRESS)
    return p


def options_from_args(args: argparse.Namespace) -> Options:
    sweeps = _names(args.sweeps.lower())
    if sweeps in (("none",), ()):
        sweeps = ()
    elif sweeps == ("all",):
        sweeps = ALL_SWEEPS
    bad = [s for s in sweeps if s not in ALL_SWEEPS]
    if bad:
        raise ValueError(f"unknown sweep(s) {bad} (known: {', '.join(ALL_SWEEPS)}, none, all)")
    bad = [v for v in args.step_variants if v not in STEP_VARIANTS]
    if bad:
        raise ValueError(f"unknown step variant(s) {bad} (known: {', '.join(STEP_VARIANTS)})")
    if args.sweep_method not in METHODS:
        raise ValueError(f"unknown --sweep-method {args.sweep_method!r} (known: {', '.join(methods_of(DIFFUSION))})")
    if args.methods is None:
        methods = None
    elif tuple(m.lower() for m in args.methods) == ("none",):
        methods = ()
    else:
        methods = expand_methods(args.methods)
    if args.networks is not None:
        networks = args.networks
    elif args.config or args.rvae_checkpoint:
        networks = ()
    else:
        networks = ("tiny",) if args.quick else ("tiny", "28m", "65m")
    return Options(
        networks=tuple(networks), configs=tuple(args.config), methods=methods,
        rvae_checkpoint=args.rvae_checkpoint, steps=args.steps,
        em_iters=args.em_iters, samples=args.samples, batch=args.batch, frames=args.frames, repeats=args.repeats,
        sweeps=tuple(sweeps), sweep_networks=args.sweep_networks, sweep_method=args.sweep_method,
        sweep_steps=args.sweep_steps, sweep_batch=args.sweep_batch, sweep_samples=args.sweep_samples,
        sweep_frames=args.sweep_frames, step_variants=tuple(args.step_variants), quick=bool(args.quick),
        dtype=args.dtype, seed=int(args.seed), output=args.output)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry; returns the exit code (0 ok, 1 a measurement failed, 2 usage error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a malformed option (argparse printed why)
        return exc.code if isinstance(exc.code, int) else 2
    if args.cache_child:
        print(CHILD_TAG + json.dumps(_clean(cache_child(json.loads(args.cache_child)))), flush=True)
        return 0
    try:
        opts = options_from_args(args)
        bench = Benchmark(opts, argv)
    except (ValueError, FileNotFoundError) as exc:
        parser.print_usage(sys.stderr)
        sys.stderr.write(f"{parser.prog}: error: {exc}\n")
        return 2
    result = bench.run()
    print(format_report(result))
    if opts.output:
        _log(f"wrote {opts.output}")
    return 1 if bench.errors else 0


if __name__ == "__main__":
    sys.exit(main())
