"""What the benchmark (:mod:`jaxse.evaluation.benchmark`) times: the sizes of one measured call
(:class:`RunSettings`), the measured programs (:class:`Method`: the prior sampler of the ``ncsnpp`` family and
every enhancement method of :mod:`jaxse.registry` that runs on an unsupervised prior, built through the registry),
and the time models that extrapolate a measurement to the methods' full recipes."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp

from jaxse import registry

FULL_FRAMES = 256  # utterance length of the full recipes (the reference crop: batch 1 × 256 frames)
DIFFUSION, RVAE = "diffusion", "rvae"  # the two kinds of methods and networks (as the JSON names them)
PRIOR_FAMILY = "ncsnpp"  # the family whose prior sampler the "prior" method times
# The registry families benchmarked here -> their kind. The supervised methods (sgmse+, supervised) are not:
# their networks take the noisy spectrogram as an input; their RTF is in enhance.py's log.
BENCHMARKED_FAMILIES = {"ncsnpp": DIFFUSION, "rvae": RVAE}


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


@dataclasses.dataclass(frozen=True)
class Method:
    """A sampler to benchmark.

    ``program(net, settings, debug_loop)`` returns a pure ``fn(variables, key, x) -> array`` for a loaded
    network ``net`` (its ``model``, ``variables`` and ``spec``), with ``x`` the (batch, F, T) input (the noisy
    mixture; the prior only reads its shape); ``nfe(settings)``: network evaluations per call;
    ``rows(settings)``: the network's batch; ``config(settings)``: the sampler settings as a dict (recorded);
    ``full``: the full recipe; ``uses``: the :class:`RunSettings` fields it depends on.

    ``family``: ``"diffusion"`` (runs on score models) or ``"rvae"`` (runs on RVAEs: ``fn(variables, key, x)``
    with ``x`` one (F, T) utterance; ``nfe``: decoder forward passes; ``rows``: the decoder's chains;
    ``cost(settings)``: the pass counts of the method's settings, ``cost()``). ``sampler(settings)``: the prior
    sampler object (:meth:`jaxse.registry.Family.prior_sampler`; the prior method only).
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
    sampler: Callable[[RunSettings], Any] | None = None


def prior_method(num_steps: int | None = None) -> Method:
    """Unconditional sampling from the prior with the PC sampler of the ``ncsnpp`` family
    (:meth:`jaxse.registry.Family.prior_sampler`; ``num_steps``: its full recipe's steps, default the family's;
    the measured steps come from the settings)."""
    base = registry.family(PRIOR_FAMILY).prior_sampler(num_steps)

    def pc(s: RunSettings):
        return base.replace(num_steps=int(s.steps))

    def program(net, s: RunSettings, debug_loop: bool = False):
        sampler, model = pc(s), net.model

        def fn(variables, key, x):
            return sampler.sample(model, variables, key, x.shape, debug_loop=debug_loop)

        return fn

    full = RunSettings(steps=base.num_steps, em_iters=1, samples=1, batch=1, frames=FULL_FRAMES)
    return Method("prior", f"PC sampler from the prior ({base.nfe_per_step} NFE/step)", program,
                  lambda s: pc(s).nfe, lambda s: int(s.batch), lambda s: pc(s).to_dict(), full,
                  ("steps", "batch", "frames"), sampler=pc)


def _settings_fields(kind: str, s: RunSettings) -> dict:
    """The method settings that :class:`RunSettings` sets: the steps, EM iterations and samples of a
    diffusion posterior, the EM iterations of an RVAE method."""
    if kind == RVAE:
        return {"num_em": int(s.em_iters)}
    return {"num_steps": int(s.steps), "num_em": int(s.em_iters), "num_samples": int(s.samples)}


def _backend_program(m: registry.Method, kind: str, cfg: Callable):
    """``program(net, s)`` of a registry method: its backend (:meth:`jaxse.registry.Method.make_backend`) on the
    network's model and variables, the backend's per-row ``posterior`` on every utterance of ``x`` (all frames
    real). RVAE methods take one utterance (F, T) per call, the diffusion posteriors a batch (U, F, T)."""

    def program(net, s: RunSettings, debug_loop: bool = False):
        if debug_loop:
            raise ValueError(f"{m.name}: no unrolled form (the steps sweep unrolls the prior sampler only)")
        backend = m.make_backend(net.model, net.variables, cfg(s), net.spec)

        def fn(variables, key, x):
            mask = jnp.ones((x.shape[-1],), jnp.float32)
            if kind == RVAE:
                return backend.posterior(variables, key, x, mask)
            keys = jax.random.split(key, x.shape[0])
            return jax.vmap(lambda k, row: backend.posterior(variables, k, row, mask))(keys, x)

        return fn

    return program


def enhancement_method(name: str, **fixed) -> Method:
    """The benchmark program of the enhancement method ``name`` of :mod:`jaxse.registry` (its settings:
    :meth:`~jaxse.registry.Method.make_settings` with ``fixed`` and the fields of :class:`RunSettings`)."""
    m = registry.method(name)
    kind = BENCHMARKED_FAMILIES[m.family]
    base = m.make_settings(**fixed)

    def cfg(s: RunSettings):
        return m.make_settings(**{**fixed, **_settings_fields(kind, s)})

    program = _backend_program(m, kind, cfg)
    if kind == RVAE:
        full = RunSettings(steps=1, em_iters=base.num_em, samples=1, batch=1, frames=FULL_FRAMES)
        return Method(name, f"RVAE EM, {m.settings_method} (jaxse.rvae.posterior, one utterance)", program,
                      lambda s: cfg(s).nfe, lambda s: int(cfg(s).cost()["chains"]), lambda s: cfg(s).to_dict(), full,
                      ("em_iters", "frames"), RVAE, lambda s: cfg(s).cost())
    full = RunSettings(steps=base.num_steps, em_iters=base.num_em, samples=base.num_samples, batch=1,
                       frames=FULL_FRAMES)
    # Whether the EM count matters: compare the NFE at 1 and 2 EM iterations.
    probe = RunSettings(steps=1, em_iters=1, samples=1, batch=1, frames=FULL_FRAMES)
    uses_em = cfg(probe).nfe != cfg(probe.replace(em_iters=2)).nfe
    uses = ("steps",) + (("em_iters",) if uses_em else ()) + ("samples", "batch", "frames")
    return Method(name, f"posterior mean, {name} (jaxse.diffusion.udiffse)", program, lambda s: cfg(s).nfe,
                  lambda s: int(s.batch) * int(s.samples), lambda s: cfg(s).to_dict(), full, uses)


def posterior_method(name: str, **fixed) -> Method:
    """A diffusion posterior method (``udiffse``, ``udiffse+``); ``fixed``: other fields of its settings."""
    return enhancement_method(name, **fixed)


def rvae_method(name: str, method_name: str | None = None, **fixed) -> Method:
    """An RVAE EM method (``name``: ``vem``, ``mhem``, ``malaem`` or ``ldem``) on one utterance; ``fixed``:
    other fields of its settings. The EM count comes from the settings (the full recipe: the settings'
    ``num_em``); the frames are the utterance length. ``method_name``: the registry's name of the method
    (default: the one whose settings say ``method=name``)."""
    return enhancement_method(method_name or registry.method_named_by("rvae", name), **fixed)


# The methods of the CLI: the bare prior sampler, then every enhancement method of jaxse.registry that runs on
# an unsupervised prior (the diffusion prior or the RVAE).
METHODS: dict[str, Method] = {"prior": prior_method(), **{n: enhancement_method(n) for n in registry.METHODS
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


def describe(method: Method, s: RunSettings) -> str:
    return ", ".join(f"{k} {getattr(s, k)}" for k in method.uses)


# ------------------------------------------------------------------------------------------ time models


def audio_seconds(spec, frames: int) -> float:
    """Seconds of the shortest signal whose centred STFT has ``frames`` frames: ``(frames − 1) × hop``."""
    if hasattr(spec, "crop_length"):
        return spec.crop_length(frames) / spec.sample_rate
    return (int(frames) - 1) * spec.hop_length / spec.sample_rate


def full_recipe(method: Method, s: RunSettings, per_nfe: float, steady: float, spec) -> dict:
    """The method's full recipe: its NFE, and its time from the measured per-NFE time (``extrapolated``
    unless the measured settings are the recipe's)."""
    full = method.full
    nfe_full, rows_full, rows = method.nfe(full), method.rows(full), method.rows(s)
    same = all(getattr(full, k) == getattr(s, k) for k in method.uses)
    scale = (rows_full * full.frames) / (rows * s.frames)
    seconds = steady if same else nfe_full * per_nfe * scale
    audio = audio_seconds(spec, full.frames)
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


def rvae_decoder_flops(cfg, chains: int, frames: int) -> float:
    """FLOPs of the RVAE decoder (sizes ``cfg``: the model's ``cfg``) on ``(frames, chains, z_dim)`` latents: its
    matrix products (2 per multiply-add; the LSTM input and recurrent products of each direction and the output
    layer; the gate nonlinearities and additions are left out)."""
    directions = 2 if cfg.bidir_h else 1
    gates = 4 * cfg.dim_rnn_h
    per_frame = directions * 2 * gates * (cfg.z_dim + cfg.dim_rnn_h) + 2 * cfg.h_dim * cfg.x_dim
    return float(per_frame * int(chains) * int(frames))


def pass_units(cost: Mapping[str, int]) -> int:
    """Network passes of an RVAE method (its settings' ``cost()``) as forward-pass units: a backward pass counts
    twice, encoder and decoder passes alike."""
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
    audio = audio_seconds(spec, full.frames)
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
