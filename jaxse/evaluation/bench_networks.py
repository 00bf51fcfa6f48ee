"""The networks the benchmark (:mod:`jaxse.evaluation.benchmark`) measures, built through :mod:`jaxse.registry`:
models of training configs (``configs/*.py``, by their family's ``model_from_config``, random weights from the
model's own ``init``), and trained ones (the shipped prior and RVAE, or ``--rvae-checkpoint``) from the methods'
loaders (:meth:`jaxse.registry.Method.load_backend`)."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp

from jaxse import registry
from jaxse.core.backend import CheckpointError
from jaxse.errors import one_line
from jaxse.evaluation.bench_methods import DIFFUSION, RVAE
from jaxse.evaluation.bench_timing import REPO, jax_flag, load_config_file, log
from jaxse.pytree import count_params

LARGE_PARAMS = 5_000_000  # networks at least this big get the reduced default settings
CONFIGS = REPO / "configs"
PRIOR_METHOD, RVAE_METHOD = "udiffse", "rvae-ldem"  # whose loaders read the shipped prior / RVAE


@dataclasses.dataclass(frozen=True)
class NetworkSpec:
    """``load() -> (model, variables or None, spec, info)``; ``None`` variables: initialise at random.

    ``model`` is the model object of its registry family (``family`` ``"diffusion"``: a score model with
    ``score``; ``"rvae"``: the RVAE with ``decode`` and its sizes ``cfg``), ``spec`` the family's spectral
    settings.
    """

    name: str
    description: str
    load: Callable[[], tuple]
    family: str = DIFFUSION


def model_of_config(config, **model_fields) -> tuple[Any, Any]:
    """``(model, spec)`` of a training config (``model_fields`` set in ``config.model`` first), built by its
    family (:func:`jaxse.registry.family_of_config`)."""
    for k, v in model_fields.items():
        config.model[k] = v
    family = registry.family_of_config(config)
    return family.model_from_config(config), family.spec_from_config(config)


def config_network(path, name: str | None = None) -> NetworkSpec:
    """A network built from a training config file (random weights)."""

    def load():
        model, spec = model_of_config(load_config_file(path))
        return model, None, spec, {"weights": "random init", "config": str(path)}

    return NetworkSpec(name or Path(path).stem, f"model of {path}", load)


def preset_network(name: str, description: str, config_file: str, family: str = DIFFUSION,
                   **model_fields) -> NetworkSpec:
    """The model of ``configs/<config_file>`` (with ``model_fields`` changed), random weights."""

    def load():
        model, spec = model_of_config(load_config_file(CONFIGS / config_file), **model_fields)
        return model, None, spec, {"weights": "random init"}

    return NetworkSpec(name, description, load, family)


def _load_shipped():
    method = registry.method(PRIOR_METHOD)
    try:
        backend = method.load_backend(None, method.make_settings())
        info = {"weights": "shipped prior (trained)", "checkpoint": str(method.default_checkpoint_path())}
        return backend.model, backend.variables, backend.spec, info
    except CheckpointError as exc:  # no prior in this installation: same layout, random weights
        log(f"tiny: {exc}; using configs/shipped_prior.py with random weights")
        model, _, spec, info = config_network(CONFIGS / "shipped_prior.py").load()
        return model, None, spec, {**info, "note": "shipped prior missing"}


def rvae_network(name: str, description: str, checkpoint=None, **model_fields) -> NetworkSpec:
    """An RVAE network: ``model_fields`` given: the RVAE of ``configs/rvae.py`` with those sizes, random weights;
    else ``checkpoint`` (anything the RVAE methods' loader reads: a directory with ``rvae.json``, a reference
    ``.pt``, a ``.npz``); else the RVAE shipped in ``jaxse/assets/rvae``, or, where there is none, the
    published architecture (``configs/rvae.py``) with random weights."""

    def load():
        method = registry.method(RVAE_METHOD)
        if model_fields:
            return preset_network(name, description, "rvae.py", RVAE, **model_fields).load()
        if checkpoint is not None:  # CheckpointError: one line, reported as this net's error
            backend = method.load_backend(checkpoint, method.make_settings())
            return backend.model, backend.variables, backend.spec, {"weights": "checkpoint",
                                                                    "checkpoint": str(checkpoint)}
        try:
            backend = method.load_backend(None, method.make_settings())
        except CheckpointError as exc:  # no RVAE in this installation: the published size, random weights
            log(f"{name}: no usable shipped RVAE at {method.default_checkpoint_path()}; using the published RVAE "
                "architecture with random weights (--rvae-checkpoint PATH measures trained weights)")
            model, _, spec, _ = preset_network(name, description, "rvae.py", RVAE).load()
            return model, None, spec, {
                "weights": "random init", "architecture": "published non-causal RVAE (RVAEConfig defaults)",
                "note": f"shipped RVAE missing ({one_line(exc, 200)})"}
        info = {"weights": "shipped RVAE (trained)", "checkpoint": str(method.default_checkpoint_path())}
        return backend.model, backend.variables, backend.spec, info

    return NetworkSpec(name, description, load, RVAE)


NETWORKS: dict[str, NetworkSpec] = {
    "tiny": NetworkSpec("tiny", "the shipped prior (NCSN++M nf 16, 0.44M)", _load_shipped),
    "nano": preset_network("nano", "NCSN++M nf 8 (smoke tests)", "udiffse_plus_28m.py", nf=8),
    "cpu_small": config_network(CONFIGS / "cpu_small.py", "cpu_small"),
    "28m": preset_network("28m", "UDiffSE+ NCSN++M (UDIFFSE_PLUS_28M)", "udiffse_plus_28m.py"),
    "65m": preset_network("65m", "UDiffSE NCSN++ (UDIFFSE_65M)", "udiffse_65m.py"),
    "rvae": rvae_network("rvae", "the shipped RVAE, else the published non-causal RVAE (1.03M) at random"),
    "rvae-nano": rvae_network("rvae-nano", "RVAE with 16-unit LSTMs (smoke tests)",
                              dim_rnn_g_x=16, dim_rnn_g_z=16, dim_rnn_h=16),
}


@dataclasses.dataclass
class LoadedNetwork:
    name: str
    model: Any  # the model object of its family (a score model; the RVAE)
    variables: Any
    spec: Any  # the family's spectral settings
    info: dict
    family: str = DIFFUSION

    @property
    def num_bins(self) -> int:
        return self.spec.num_bins

    @property
    def large(self) -> bool:
        return self.info["params"] >= LARGE_PARAMS


def _random_variables(model, num_bins: int, seed: int, abstract: bool):
    if abstract:
        return model.abstract_variables(num_bins)
    # The init program is not what is measured: compile it without XLA optimisations (2-3x faster).
    with jax_flag("jax_disable_most_optimizations", True):
        return model.init(jax.random.PRNGKey(seed), num_bins)


def _network_info(spec: NetworkSpec, model, variables, sspec, info: dict, dtype: str) -> dict:
    """The JSON record of a loaded network."""
    head = {"name": spec.name, "description": spec.description, "family": spec.family, **info}
    if spec.family == RVAE:
        return {**head, "params": count_params(variables), "net": {**model.cfg.to_dict(), "dtype": "float32"},
                "frame_multiple": 1, "num_bins": sspec.num_bins, "stft": sspec.to_dict()}
    return {**head, "params": count_params(variables["params"]), "parameterization": model.parameterization,
            "net": model.net.to_dict(), "frame_multiple": model.net.frame_multiple, "num_bins": sspec.num_bins}


def load_network(spec: NetworkSpec, dtype: str = "float32", seed: int = 0, abstract: bool = False) -> LoadedNetwork:
    """Build a network; random weights come from the model's own ``init`` (``abstract``: shapes only; diffusion
    networks only)."""
    t0 = time.perf_counter()
    if spec.family == RVAE and abstract:
        raise ValueError(f"{spec.name}: abstract loading is for diffusion networks only")
    model, variables, sspec, info = spec.load()
    if spec.family == RVAE:
        if dtype != "float32":
            log(f"{spec.name}: --dtype {dtype} does not apply to the RVAE (it runs in float32)")
    else:
        model = dataclasses.replace(model, net=dataclasses.replace(model.net, dtype=dtype))
    if variables is None:
        variables = _random_variables(model, sspec.num_bins, seed, abstract)
    if not abstract:
        if spec.family == RVAE:
            variables = jax.tree.map(jnp.asarray, variables)
        variables = jax.device_put(variables)
        jax.block_until_ready(variables)
    info = {**_network_info(spec, model, variables, sspec, info, dtype), "load_s": time.perf_counter() - t0}
    return LoadedNetwork(spec.name, model, variables, sspec, info, spec.family)
