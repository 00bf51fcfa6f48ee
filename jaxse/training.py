"""The training loop of every model family (``train.py``): state, optimizer, EMA, data, parallelism,
checkpoints, logs and resume. The family (``config.model.family``, :mod:`jaxse.registry`; resolved once per
run and passed down) supplies the model, its spectral settings, the loss (train and eval steps: the diffusion
prior's denoising score matching in :mod:`jaxse.diffusion.training`, the RVAE's β-ELBO in
:mod:`jaxse.rvae.training`), prior samples, warm start, checkpoint loading and export, the metrics logged as
their last value and the start of early-stopping patience. Optimizer: Adam (lr 1e-4, b1 .9, b2 .999, eps 1e-8
for the diffusion prior), no clipping, constant rate after an optional linear warm-up; EMA (families that keep one):
``ema ← ema − (1 − d_k)·(ema − params)``, ``d_k = min(decay, (1 + k)/(10 + k))``.

EMA warm-up convention (torch_ema ``use_num_updates=True``): ``update()`` first increments its counter and
then uses it, so ``k`` counts the updates *including the current one*: the first update after the first
optimizer step uses ``k = 1`` (d = 2/11), the n-th uses ``k = n``. Here ``k = state.step + 1`` where
``state.step`` is the number of optimizer steps done before this one. The EMA starts as a copy of the
initial parameters (as torch_ema's shadow parameters do).

Randomness: the step-``s`` draws (t and z) use ``fold_in(state.key, s)``, and the data of step ``s`` are a
pure function of ``(seed, s)`` (:meth:`jaxse.data.CleanSpeechDataset.train_batch`), so a run resumed from
a checkpoint reproduces the uninterrupted run exactly. The draws are made for the *global* batch inside the
jitted step; with ``jax_threefry_partitionable`` (the default since JAX 0.5) their values do not depend on
how the batch is sharded.

Parallelism: ``jax.jit`` over a 1-D device mesh with axis ``"data"`` (all devices of all processes, ordered
by process). The batch is sharded along ``"data"``, the :class:`TrainState` is replicated and donated.
Each process loads only its rows of the global batch and the global array is assembled with
``jax.make_array_from_process_local_data``.

Checkpoints (orbax, ``WORKDIR/checkpoints/<step>``) hold two items: ``state`` (the full TrainState) and
``metadata`` (JSON: the config, ``model.to_dict()``, ``spec.to_dict()``, sample rate, step, jaxse
version). :func:`jaxse.core.loading.load_checkpoint` rebuilds the model from the metadata alone (checkpoint
I/O and the :class:`~jaxse.core.train_state.TrainState` live in :mod:`jaxse.core`; the names below are
re-exported here for existing callers).

The run is set up by :func:`_setup` (config, family, model, data: a :class:`_Run`), then trained by a
:class:`_Trainer` (state, loop, validation, samples, exports of new bests, checkpoints).

Public API (all importable; :func:`train_and_evaluate` is what ``train.py`` runs):

* state and maths: :class:`TrainState`, :func:`init_train_state`, :func:`create_train_state`,
  :func:`abstract_train_state`, :func:`ema_decay_at`, :func:`ema_update` (the families' losses and steps:
  :mod:`jaxse.diffusion.training`, :mod:`jaxse.rvae.training`);
* config -> objects: :func:`model_from_config`, :func:`spec_from_config`, :func:`optimizer_from_config`,
  :func:`validate_config` (with :func:`check_config_values`: the values no family's run can train with, one
  line each, e.g. ``training.lr must be a finite number > 0, got -1.0``), :func:`check_workdir`;
* parallelism: :func:`make_mesh`, :func:`replicated`, :func:`batch_sharding`, :func:`global_batch`,
  :func:`to_host`, :func:`make_train_step`, :func:`make_eval_step`, :func:`make_sample_fn`
  (``initialize_distributed``: :mod:`jaxse.parallel`);
* checkpoints (from :mod:`jaxse.core.checkpoint` and :mod:`jaxse.core.loading`): :func:`checkpoint_manager`,
  :func:`checkpoint_metadata`, :func:`save_checkpoint`, :func:`restore_train_state`,
  :func:`read_checkpoint_metadata`, :func:`load_checkpoint`;
* crop schedule (from :mod:`jaxse.data`): :func:`crop_phases`, :func:`phase_at`, :func:`valid_frames`.

Functions that take a model also take its ``family`` (a :class:`jaxse.registry.Family`) where the caller has
it; without it the family is looked up from the model.

Validation loss and checkpoints are also produced at the last step, whatever the intervals.

Model families (``config.model.family``, default ``"ncsnpp"``): the same loop, state, parallelism,
checkpoints, logging and resume also train the RVAE speech model (``"rvae"``, ``configs/rvae.py``), whose
loss, step and settings live in :mod:`jaxse.rvae.training`. Per family: :func:`model_from_config` and
:func:`spec_from_config` build the model and its STFT settings, :func:`make_train_step` /
:func:`make_eval_step` pick the step, the data set gets the family's options (silence trimming, chunk
sampling and validation), and the RVAE's TrainState has ``ema_params = None`` (no EMA). Options used by the
RVAE config, available to both families:

* ``training.num_epochs`` with ``training.num_steps = 0``: the run length in epochs of
  ``ceil(chunks / batch_size)`` steps (``chunks``: :attr:`jaxse.data.CleanSpeechDataset.total_chunks`);
* ``training.early_stop_patience_epochs`` (> 0): stop when the validation loss has not improved for that
  many epochs (counted from the family's :meth:`~jaxse.registry.Family.patience_start` at the earliest: the
  end of the RVAE's KL warm-up); the best step and loss are
  stored in every checkpoint's metadata (``"best"``), so a resumed run stops where the uninterrupted one does;
* ``training.keep_best``: also keep the checkpoint with the lowest validation loss (orbax ``BestN``) besides
  the ``keep_checkpoints`` newest, saving a checkpoint whenever the validation loss improves;
* ``data.trim_top_db``, ``data.sample_by_length``, ``data.valid_chunks``: see :class:`jaxse.data.CleanSpeechDataset`.

Long runs on small machines (both families unless noted):

* ``training.init_from``: warm start from an exported prior, a workdir or an RVAE directory
  (:func:`warm_start_state`: its weights, its step, a fresh optimizer), with ``training.warmup_steps`` of linear
  learning-rate warm-up (:func:`optimizer_from_config`); a workdir with checkpoints resumes and ignores it. The
  source's validation loss is measured first and is the bar for the first export;
* ``data.crop_schedule`` and ``data.valid_frames`` (diffusion prior): progressive crops with a fixed
  validation length (:func:`jaxse.data.crop_phases`, :func:`jaxse.data.valid_frames`); the data of step ``s``
  stay a pure function of ``(seed, s)``, so resuming across a phase change is exact;
* ``training.export_dir`` (single process): every new lowest validation loss is exported there, replacing the
  previous export atomically (:func:`jaxse.export.export_training_variables`), so that a lost workdir costs
  only the optimizer state;
* ``training.max_seconds`` (> 0; 0: no limit): a wall-clock budget for the loop of this process (compilation
  included, setup not): the run stops after the first step that ends past it, logs, validates (exporting a new
  best), saves a checkpoint and returns, as at its last step; rerunning the command resumes from there. In a
  multi-process run the lead process decides, at the logging steps, for all;
* ``data.train_dir`` may name several folders, comma-separated, or manifests (:mod:`jaxse.data.files`); the batches
  come from :mod:`jaxse.data.pipeline` (``data.num_workers`` processes, ``data.prefetch``, ``data.cache_mb``).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

import jaxse
from jaxse import registry
from jaxse.core.checkpoint import (checkpoint_manager, checkpoint_metadata, read_checkpoint_metadata,  # noqa: F401
                                   restore_metadata, restore_train_state, save_checkpoint)
from jaxse.errors import JaxseError, one_line
from jaxse.core.loading import load_checkpoint  # noqa: F401
from jaxse.core.train_state import TrainState, ema_decay_at, ema_update  # noqa: F401
from jaxse.data import crop_phases, phase_at, valid_frames  # noqa: F401  (re-exported: the crop schedule)
from jaxse.parallel import batch_sharding, replicated, to_host, to_host_tree
from jaxse.pytree import count_params

logger = logging.getLogger(__name__)

DATA_AXIS = "data"

# Sub-keys of the run key (``PRNGKey(seed)``), by purpose.
_KEY_INIT, _KEY_TRAIN, _KEY_VALID, _KEY_SAMPLE = range(4)


# ------------------------------------------------------------------------------ config -> objects


def _family_of(model, family: registry.Family | None) -> registry.Family:
    """``family``, or the model's family (:func:`jaxse.registry.family_of_model`) when the caller has none."""
    return registry.family_of_model(model) if family is None else family


def uses_ema(model, family: registry.Family | None = None) -> bool:
    """Whether the model's family keeps an EMA of the parameters (the diffusion prior does, the RVAE not)."""
    return _family_of(model, family).uses_ema


def eval_variables(state: TrainState, model, family: registry.Family | None = None) -> dict:
    """The variables validation, samples and export use: the EMA ones, or the params without EMA."""
    return state.ema_variables if uses_ema(model, family) else state.variables


def model_from_config(config):
    """The model of ``config.model`` built by its family (``config.model.family``, :mod:`jaxse.registry`)."""
    return registry.family_of_config(config).model_from_config(config)


def spec_from_config(config):
    """The spectral settings of ``config.spec`` at ``config.data.sample_rate``, as the family defines them."""
    return registry.family_of_config(config).spec_from_config(config)


def optimizer_from_config(config) -> optax.GradientTransformation:
    """Adam with torch's semantics (eps added to sqrt(v̂), bias-corrected moments), constant learning rate.

    With ``training.warmup_steps = W > 0`` the learning rate rises linearly, ``lr·min(1, (c + 1)/W)`` at the
    optimizer's ``c``-th update (its own count, which starts again at 0 with a fresh optimizer state, e.g.
    after a warm start, :func:`warm_start_state`). ``W = 0`` (the reference recipe) keeps the constant rate
    and the optimizer state of earlier checkpoints.
    """
    tc = config.training
    lr = float(tc.lr)
    warmup = int(tc.get("warmup_steps", 0))
    if warmup < 0:
        raise ValueError(f"training.warmup_steps must be >= 0, got {warmup}")
    if warmup > 0:
        lr = lambda count: float(tc.lr) * jnp.minimum(1.0, (count + 1.0) / warmup)  # noqa: E731
    return optax.adam(learning_rate=lr, b1=float(tc.b1), b2=float(tc.b2), eps=float(tc.eps))


# ---------------------------------------------------------------------------------- state creation


def _run_keys(seed: int):
    return jax.random.split(jax.random.PRNGKey(int(seed)), 4)


def init_train_state(model, tx: optax.GradientTransformation, seed: int, num_bins: int = 256,
                     family: registry.Family | None = None) -> TrainState:
    """A fresh :class:`TrainState` (traceable; :func:`create_train_state` jits it onto a mesh)."""
    keys = _run_keys(seed)
    variables = model.init(keys[_KEY_INIT], num_bins)
    params = variables["params"]
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        ema_params=jax.tree.map(lambda p: jnp.array(p, copy=True), params) if uses_ema(model, family) else None,
        opt_state=tx.init(params),
        constants=variables["constants"],
        key=keys[_KEY_TRAIN],
    )


def create_train_state(model, tx, seed: int, num_bins: int = 256, mesh: Mesh | None = None,
                       family: registry.Family | None = None) -> TrainState:
    """A fresh TrainState, replicated over ``mesh`` (default: :func:`make_mesh`)."""
    mesh = make_mesh() if mesh is None else mesh
    fn = functools.partial(init_train_state, model, tx, int(seed), int(num_bins), family)
    return jax.jit(fn, out_shardings=replicated(mesh))()


def abstract_train_state(model, tx, seed: int = 0, num_bins: int = 256, mesh: Mesh | None = None,
                         family: registry.Family | None = None):
    """Shapes, dtypes and (replicated) shardings of the TrainState, for restoring without allocating."""
    mesh = make_mesh() if mesh is None else mesh
    shapes = jax.eval_shape(functools.partial(init_train_state, model, tx, int(seed), int(num_bins), family))
    sharding = replicated(mesh)
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), shapes)


def warm_start_state(state: TrainState, model, source, mesh: Mesh, steps_per_epoch: int | None = None,
                     family: registry.Family | None = None) -> tuple[TrainState, dict]:
    """``state`` with the weights of a trained model: ``(state, info)``, for ``training.init_from``.

    ``source``: an exported prior, a training workdir or checkpoint (diffusion: its EMA weights become both
    the parameters and their EMA), or an RVAE directory (``rvae.json`` + ``rvae_params.npz``). The optimizer
    state stays fresh (pair with ``training.warmup_steps``); the step counter continues from the source's
    step, so the EMA warm-up, the data stream and the run length carry on where the source stopped. For an
    RVAE source that records its epoch, the step is that epoch at this run's ``steps_per_epoch`` (the KL
    warm-up is counted in epochs, and the data may differ from the source's). The source's architecture
    must equal ``model``'s: ``ValueError`` otherwise.
    """
    variables, step = _family_of(model, family).warm_start(model, Path(source), steps_per_epoch)
    rep = replicated(mesh)
    host = jax.tree.map(np.asarray, jax.device_get(variables["params"]))
    # Separate device buffers for params and EMA (the train step donates the whole state).
    changes = {"step": jax.device_put(np.int32(step), rep), "params": jax.device_put(host, rep)}
    if state.ema_params is not None:
        changes["ema_params"] = jax.device_put(host, rep)
        changes["constants"] = jax.device_put(jax.device_get(variables["constants"]), rep)
    return state.replace(**changes), {"source": str(Path(source)), "step": step}


# ------------------------------------------------------------------------------------ parallelism


def make_mesh(devices=None) -> Mesh:
    """1-D mesh ``("data",)`` over ``devices`` (default: all devices of all processes), ordered by (process, id)
    so that process ``p`` holds the ``p``-th contiguous block of the global batch, i.e. exactly the rows
    ``CleanSpeechDataset.train_batch(..., process_index=p)`` loads (:func:`jaxse.parallel.make_mesh`)."""
    from jaxse import parallel

    return parallel.make_mesh(devices, axis=DATA_AXIS)


def global_batch(local_rows, mesh: Mesh):
    """The global batch (sharded along ``"data"``) from this process's rows (all processes call this); a dict
    of row arrays (a family's batch fields) gives the dict of global arrays."""
    if isinstance(local_rows, dict):
        return {k: global_batch(v, mesh) for k, v in local_rows.items()}
    local_rows = np.asarray(local_rows)
    n_proc = len({d.process_index for d in mesh.devices.flat})
    global_shape = (local_rows.shape[0] * n_proc,) + local_rows.shape[1:]
    return jax.make_array_from_process_local_data(batch_sharding(mesh), local_rows, global_shape)


def make_train_step(model, spec, tx, ema_decay: float, mesh: Mesh, objective=None,
                    family: registry.Family | None = None) -> Callable:
    """Jitted ``(state, batch) -> (state, metrics)`` of the model's family; ``batch`` is a dict of arrays
    (``{"waves": (B, L)}`` for the clean-speech families) sharded on ``"data"``, the state replicated and
    donated. ``objective``: the family's loss settings (:meth:`jaxse.registry.Family.objective`; ``None``:
    its defaults); ``ema_decay`` is unused by a family without EMA."""
    fn = _family_of(model, family).train_step(model, spec, tx, float(ema_decay), objective)
    rep = replicated(mesh)
    return jax.jit(fn, in_shardings=(rep, batch_sharding(mesh)), out_shardings=(rep, rep), donate_argnums=(0,))


def make_eval_step(model, spec, mesh: Mesh, objective=None, family: registry.Family | None = None) -> Callable:
    """Jitted ``(variables, batch, key) -> {"loss": scalar, ...}`` (replicated) of the model's family."""
    fn = _family_of(model, family).eval_step(model, spec, objective)
    rep = replicated(mesh)
    return jax.jit(fn, in_shardings=(rep, batch_sharding(mesh), rep), out_shardings=rep)


def make_sample_fn(model, spec, mesh: Mesh, config, pc_config=None, family: registry.Family | None = None
                   ) -> Callable:
    """Jitted ``(variables, key) -> waves (num_samples, crop_length(num_frames))`` of ``config.sampling``:
    prior samples of a family with a sampler (replicated: every process gets the same waves)."""
    fn = _family_of(model, family).sample_fn(model, spec, config, pc_config)
    rep = replicated(mesh)
    return jax.jit(fn, in_shardings=(rep, rep), out_shardings=rep)


# ------------------------------------------------------------------------------------ main loop


def _check_divisible(what: str, n: int, by: int, unit: str) -> None:
    if n % by:
        raise ValueError(f"{what}={n} is not a multiple of the {unit} ({by})")


def _config_number(config, path: str, rule: str, ok: Callable[[float], bool], integer: bool = False,
                   required: bool = True) -> None:
    """``ValueError`` (one line naming the field and the rule) unless the field at ``path`` (``"group.field"``)
    is a number (an integer when ``integer``; never NaN or inf) for which ``ok`` holds; an absent field passes
    unless ``required``."""
    group, name = path.split(".")
    section = config.get(group) if hasattr(config, "get") else None
    kind = ("an integer" if integer else "a finite number") + (f" {rule}" if rule else "")
    if section is None or name not in section:
        if required:
            raise ValueError(f"{path} is missing from the config (it must be {kind})")
        return
    value = section[name]
    try:
        number = float(value)
        good = (not isinstance(value, bool) and math.isfinite(number) and (not integer or number == int(number))
                and ok(number))
    except (TypeError, ValueError):
        good = False
    if not good:
        raise ValueError(f"{path} must be {kind}, got {value!r}")


def check_config_values(config) -> None:
    """The values of ``config.training`` and ``config.data`` that every family's run needs: ``ValueError`` (one line
    naming the field and the rule, e.g. ``training.lr must be a finite number > 0, got -1.0``) for one that cannot
    train. Batch sizes, crop frames, the logging/validation/checkpoint intervals and the checkpoints kept are
    at least 1; the learning rate and Adam's eps finite and > 0, its b1 and b2 in [0, 1), the EMA decay in
    [0, 1]; ``training.num_steps`` >= 1, or 0 with ``training.num_epochs`` >= 1 (a run length in epochs);
    ``sample_every``, ``num_valid``, ``warmup_steps``, ``early_stop_patience_epochs`` and ``data.valid_frames``
    >= 0 (0: off, or the default); ``training.max_seconds`` a number >= 0 (0: no limit). Family-specific checks:
    :meth:`jaxse.registry.Family.validate_config`."""
    at_least_1, at_least_0 = (">= 1", lambda v: v >= 1), (">= 0", lambda v: v >= 0)
    checks = [
        ("training.batch_size", *at_least_1, True), ("training.eval_batch_size", *at_least_1, True),
        ("training.lr", "> 0", lambda v: v > 0, False), ("training.eps", "> 0", lambda v: v > 0, False),
        ("training.b1", "in [0, 1)", lambda v: 0 <= v < 1, False),
        ("training.b2", "in [0, 1)", lambda v: 0 <= v < 1, False),
        ("training.ema_decay", "in [0, 1]", lambda v: 0 <= v <= 1, False),
        ("training.log_every", *at_least_1, True), ("training.eval_every", *at_least_1, True),
        ("training.checkpoint_every", *at_least_1, True), ("training.keep_checkpoints", *at_least_1, True),
        ("training.num_valid", *at_least_0, True), ("training.seed", "", lambda v: True, True),
        ("data.crop_frames", *at_least_1, True), ("data.sample_rate", "> 0", lambda v: v > 0, True),
    ]
    for path, rule, ok, integer in checks:
        _config_number(config, path, rule, ok, integer)
    optional = [("training.sample_every", ">= 0 (0: no samples)"), ("training.warmup_steps", ">= 0 (0: none)"),
                ("training.num_epochs", ">= 0"), ("training.early_stop_patience_epochs", ">= 0 (0: off)"),
                ("data.valid_frames", ">= 0 (0: data.crop_frames)")]
    for path, rule in optional:
        _config_number(config, path, rule, lambda v: v >= 0, integer=True, required=False)
    _config_number(config, "training.max_seconds", ">= 0 (0: no limit)", lambda v: v >= 0, required=False)
    epochs = int(config.training.get("num_epochs", 0))
    _config_number(config, "training.num_steps", ">= 1 (or 0 with training.num_epochs >= 1: a run length in epochs)",
                   lambda v: v >= 1 or (v == 0 and epochs >= 1), integer=True)


def validate_config(config, model, mesh: Mesh, family: registry.Family | None = None) -> None:
    """Everything about ``config`` that can be checked before any data is read (``ValueError``, one line):
    :func:`check_config_values`, the batch sizes against the devices, the crop lengths against the network's
    frame multiple, and the family's own checks (:meth:`jaxse.registry.Family.validate_config`)."""
    check_config_values(config)
    tc = config.training
    n_dev = mesh.devices.size
    _check_divisible("training.batch_size", int(tc.batch_size), n_dev, "number of devices")
    _check_divisible("training.eval_batch_size", int(tc.eval_batch_size), n_dev, "number of devices")
    mult = int(model.frame_multiple)
    _check_divisible("data.crop_frames", int(config.data.crop_frames), mult, "network's frame multiple")
    _check_divisible("data.valid_frames", valid_frames(config), mult, "network's frame multiple")
    for after, frames, batch in crop_phases(config):
        _check_divisible(f"data.crop_schedule frames (after step {after})", frames, mult, "network's frame multiple")
        _check_divisible(f"data.crop_schedule batch (after step {after})", batch, n_dev, "number of devices")
    if str(tc.get("export_dir", "") or "") and jax.process_count() > 1:
        raise ValueError("training.export_dir works in single-process runs; in a multi-process run export "
                         "with python -m jaxse.export WORKDIR")
    _family_of(model, family).validate_config(config, model)


def _due(step: int, every: int, last: int) -> bool:
    return (every > 0 and step % every == 0) or step == last


class SetupError(JaxseError, ValueError):
    """A training run that cannot start: a bad config or bad data (one line, before anything is written)."""


def _batch_dict(rows) -> dict:
    """A data set's batch as the dict the steps take: clean-speech rows ``(B, L)`` are ``{"waves": rows}``."""
    return rows if isinstance(rows, dict) else {"waves": rows}


def _run_length(config, steps_per_epoch: int) -> int:
    """``training.num_steps``, or ``training.num_epochs × steps_per_epoch`` when num_steps is 0."""
    tc = config.training
    num_steps = int(tc.num_steps)
    if num_steps == 0 and int(tc.get("num_epochs", 0)) > 0:
        num_steps = int(tc.num_epochs) * int(steps_per_epoch)
    return num_steps


# ------------------------------------------------------------------------------------ setup


@dataclasses.dataclass(frozen=True)
class _Run:
    """A training run as :func:`_setup` builds it: the config, its family (resolved once), the family's model,
    spectral settings and objective, the optimizer, the mesh, the data sets and the run length."""

    config: Any
    workdir: Path
    family: registry.Family
    model: Any
    spec: Any
    tx: optax.GradientTransformation
    mesh: Mesh
    train_ds: Any
    valid_ds: Any  # None without ``data.valid_dir``
    phases: list  # :func:`crop_phases` of the config
    phase_data: dict  # crop frames -> the training data set at that crop length
    steps_per_epoch: int
    num_steps: int
    objective: Any  # the family's loss settings (:meth:`jaxse.registry.Family.objective`)
    pipeline: Any = None  # :class:`jaxse.data.pipeline.PipelineSettings` (None: the defaults, in-process)


def check_workdir(workdir) -> None:
    """``ValueError`` (one line) unless ``workdir`` is a directory or can be created as one: a regular file, a path
    under a file, or a missing directory under a read-only one cannot hold a run. Creates nothing."""
    import os

    workdir = Path(workdir)
    if workdir.exists():
        if not workdir.is_dir():
            raise ValueError(f"--workdir {workdir}: not a directory (a file is there)")
        if not os.access(workdir, os.W_OK | os.X_OK):
            raise ValueError(f"--workdir {workdir}: not writable")
        return
    parent = workdir.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"--workdir {workdir}: cannot be created under {parent} (a file, not a directory)")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"--workdir {workdir}: cannot be created ({parent} is not writable)")


def _setup(config, workdir) -> _Run:
    """The :class:`_Run` of ``config`` in ``workdir`` (created on process 0).

    Everything that can be wrong with the config or the data fails here as a one-line :class:`SetupError`,
    before the workdir is touched.
    """
    from jaxse.data.files import WORKDIR_MANIFEST, header_store
    from jaxse.data.pipeline import PipelineSettings, share_cache

    workdir = Path(workdir)
    try:
        check_workdir(workdir)
        check_config_values(config)
        pipeline = PipelineSettings.from_config(config)
        family = registry.family_of_config(config)
        model = family.model_from_config(config)
        spec = family.spec_from_config(config)
        tx = optimizer_from_config(config)
        mesh = make_mesh()
        validate_config(config, model, mesh, family=family)
        with header_store(workdir / WORKDIR_MANIFEST) as headers:  # a resume of a folder run probes nothing again
            train_ds = family.make_dataset(config, spec, "train", int(config.data.crop_frames))
            valid_ds = (family.make_dataset(config, spec, "valid", valid_frames(config)) if config.data.valid_dir
                        else None)
    except (ValueError, OSError) as exc:
        raise SetupError(one_line(exc, None)) from exc
    if jax.process_index() == 0:
        try:
            workdir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SetupError(f"--workdir {workdir}: cannot create it ({one_line(exc, None)})") from exc
        headers.save()  # the headers probed, for the next start (WORKDIR/train_manifest.jsonl)
    share_cache((train_ds, valid_ds), pipeline.cache_mb)  # one bounded decode cache for the run's data sets
    phases = crop_phases(config)
    phase_data = {frames: train_ds.with_crop_frames(frames) for _, frames, _ in phases}
    steps_per_epoch = max(1, math.ceil(train_ds.total_chunks / int(config.training.batch_size)))
    return _Run(config=config, workdir=workdir, family=family, model=model, spec=spec, tx=tx, mesh=mesh,
                train_ds=train_ds, valid_ds=valid_ds, phases=phases, phase_data=phase_data,
                steps_per_epoch=steps_per_epoch, num_steps=_run_length(config, steps_per_epoch),
                objective=family.objective(config, steps_per_epoch), pipeline=pipeline)


# ------------------------------------------------------------------------------------ main loop


class _Trainer:
    """The training of one :class:`_Run`: its state (resumed, warm-started or fresh), the compiled steps, the
    best validation loss so far (kept in every checkpoint's metadata, for exact resumes), logs, samples,
    exports of new bests and checkpoints."""

    def __init__(self, run: _Run):
        from jaxse.logging_utils import MetricWriter, ProgressBar

        self.run = run
        self.tc = tc = run.config.training
        self.pidx, self.pcount = jax.process_index(), jax.process_count()
        self.lead = self.pidx == 0
        self.seed = int(tc.seed)
        self.extra_meta: dict = {}
        data_info = run.family.data_info(run.train_ds, run.steps_per_epoch)
        if data_info:
            self.extra_meta["data"] = data_info
        self.keep_best = bool(tc.get("keep_best", False))
        self.manager = checkpoint_manager(run.workdir, keep=int(tc.keep_checkpoints), keep_best=self.keep_best)
        self.best_step, self.best_loss = None, math.inf
        self.state, self.start, self.warm = self._initial_state()
        self.export_dir = str(tc.get("export_dir", "") or "")
        self.valid = self._valid_set()
        self.p_train = make_train_step(run.model, run.spec, run.tx, float(tc.ema_decay), run.mesh,
                                       objective=run.objective, family=run.family)
        self.p_eval = make_eval_step(run.model, run.spec, run.mesh, objective=run.objective, family=run.family)
        self.keys = _run_keys(self.seed)
        self.sample_fn = None
        if int(tc.sample_every) > 0:
            self.sample_fn = make_sample_fn(run.model, run.spec, run.mesh, run.config, family=run.family)
        self.patience_epochs = int(tc.get("early_stop_patience_epochs", 0))
        self.patience_steps = self.patience_epochs * run.steps_per_epoch if self.patience_epochs > 0 else None
        self.patience_from = run.family.patience_start(run.objective)  # e.g. the end of the RVAE's KL warm-up
        self.writer = MetricWriter(run.workdir, enabled=self.lead, resume_step=self.start)
        self.bar = ProgressBar(run.num_steps, initial=self.start, enabled=self.lead)
        self.pending: list = []  # per-step metrics (device arrays) since the last log
        self.t_log, self.n_log = time.perf_counter(), 0
        self.prev = None
        self.last_loss = math.nan
        self.valid_loss = None
        self.max_seconds = float(tc.get("max_seconds", 0) or 0)  # wall-clock budget of the loop (0: none)
        self.t_start = time.perf_counter()

    # ---------------------------------------------------------------------------- setup of the state

    def _initial_state(self) -> tuple[TrainState, int, dict | None]:
        """``(state, start step, warm-start info or None)``: the workdir's latest checkpoint (and its best
        validation step and loss), else a fresh state, warm-started from ``training.init_from`` when given."""
        run = self.run
        abstract = abstract_train_state(run.model, run.tx, self.seed, run.spec.num_bins, run.mesh, family=run.family)
        state = restore_train_state(self.manager, abstract)
        if state is not None:
            start = int(to_host(state.step))
            logger.info("resumed from %s at step %d", self.manager.directory, start)
            best = restore_metadata(self.manager, start).get("best") or {}
            if best.get("step") is not None:
                self.best_step, self.best_loss = int(best["step"]), float(best["valid_loss"])
            return state, start, None
        state = create_train_state(run.model, run.tx, self.seed, run.spec.num_bins, run.mesh, family=run.family)
        init_from = str(self.tc.get("init_from", "") or "")
        warm = None
        if init_from:
            state, warm = warm_start_state(state, run.model, init_from, run.mesh, run.steps_per_epoch,
                                           family=run.family)
            self.extra_meta["init_from"] = warm
        return state, int(to_host(state.step)), warm

    def _valid_set(self) -> list | None:
        """This process's rows of every validation batch, or ``None`` (no validation data or no full batch)."""
        ds, tc = self.run.valid_ds, self.tc
        if ds is None:
            return None
        chunks = bool(self.run.config.data.get("valid_chunks", False))
        if ds.num_valid_batches(int(tc.eval_batch_size), int(tc.num_valid), chunks) == 0:
            logger.warning("no full validation batch (eval_batch_size=%d, num_valid=%d, %d files): validation off",
                           tc.eval_batch_size, tc.num_valid, len(ds))
            return None
        return list(ds.valid_batches(int(tc.eval_batch_size), int(tc.num_valid), self.pidx, self.pcount,
                                     chunks=chunks))

    def _announce(self) -> None:
        """The run's first line (model size, devices, data, steps) and, at step 0, the config in the logs."""
        run, start, warm = self.run, self.start, self.warm
        if not self.lead:
            return
        resumed = f" (resumed from checkpoint {start})" if start and warm is None else ""
        if warm is not None:
            resumed = f" (warm start from {warm['source']}, step {warm['step']}: fresh optimizer)"
        ds = run.train_ds
        epochs = f", {run.steps_per_epoch} steps/epoch ({ds.total_chunks} chunks)" if run.family.counts_epochs else ""
        crops = f"batch {int(self.tc.batch_size)}" if len(run.phases) == 1 else "crops " + ", ".join(
            f"{f}x{b} after {a}" for a, f, b in run.phases)
        self.bar.write(f"jaxse {jaxse.__version__}: {count_params(self.state.params) / 1e6:.2f}M params, "
                       f"{run.mesh.devices.size} device(s) ({jax.devices()[0].platform}), {self.pcount} process(es), "
                       f"{crops}, {len(ds)} training files ({ds.total_duration / 3600:.2f} h){epochs}, "
                       f"steps {start} -> {run.num_steps}{resumed}, workdir {run.workdir}")
        if start == 0:
            self.writer.write_text(0, "config", "```\n" + str(run.config) + "\n```")

    # ---------------------------------------------------------------------------- the loop

    def train(self) -> TrainState:
        """Run the steps ``start + 1 .. num_steps`` (or until early stopping); returns the final state."""
        run, start = self.run, self.start
        self._announce()
        if self.warm is not None and self.valid is not None:
            # The source's loss on this run's validation set: the bar for the first export, a point of the curve.
            self.best_loss = self.evaluate(start)
            self.best_step = start
            if self.lead:
                self.bar.write(f"step {start}: warm-start weights, valid loss{self._which} {self.best_loss:.4f}")
        self.t_log = self.t_start = time.perf_counter()
        stop = start > 0 and self.patience_over(start)
        if stop and self.lead:
            self.bar.write(f"stopped early already: no validation improvement since step {self.best_step}")
        self.batches = self._pipeline(start, start if stop else run.num_steps)
        try:
            for step in range(start + 1, run.num_steps + 1):
                if stop:
                    break
                stop = self._step(step)
        finally:
            self.batches.close()
            self.manager.wait_until_finished()
            self.manager.close()
            self.bar.close()
            self.writer.close()
        return self.state

    def _pipeline(self, start: int, stop: int):
        """The local batches of steps ``start + 1 .. stop`` (:class:`jaxse.data.pipeline.TrainBatches`: made in
        ``data.num_workers`` processes, or in this thread with 0)."""
        from jaxse.data.pipeline import PipelineSettings, TrainBatches

        run, settings = self.run, self.run.pipeline or PipelineSettings()
        return TrainBatches(run.phase_data, run.phases, self.seed, start, stop, self.pidx, self.pcount,
                            num_workers=settings.num_workers, prefetch=settings.prefetch)

    def _step(self, step: int) -> bool:
        """Training step ``step`` with its logs, validation, samples and checkpoint; whether to stop early."""
        run, tc = self.run, self.tc
        _, frames, _ = phase_at(run.phases, step)
        local = self.batches.next(step)
        self.state, metrics = self.p_train(self.state, global_batch(_batch_dict(local), run.mesh))
        self.pending.append(metrics)
        if self.prev is not None:  # keep one step in flight: data loading overlaps compute, memory bounded
            jax.block_until_ready(self.prev)
        self.prev = metrics["loss"]
        self.n_log += 1
        out_of_time = self._out_of_time(step)
        if _due(step, int(tc.log_every), run.num_steps) or out_of_time:
            self._log_train(step, frames)
        valid_now, improved, stop = self._validate(step, force=out_of_time)
        if self.sample_fn is not None and int(tc.sample_every) > 0 and step % int(tc.sample_every) == 0:
            self.write_samples(step)
        if _due(step, int(tc.checkpoint_every), run.num_steps) or stop or out_of_time or (self.keep_best and improved):
            metrics_ck = {"valid_loss": valid_now} if self.keep_best and valid_now is not None else None
            save_checkpoint(self.manager, self.state, self.metadata(step), step, metrics=metrics_ck)
        postfix = {"loss": self.last_loss} if math.isfinite(self.last_loss) else {}
        if self.valid_loss is not None:
            postfix["valid"] = self.valid_loss
        self.bar.update(step, **postfix)
        if stop and self.lead:
            self.bar.write(f"early stop at step {step}: the validation loss has not improved for "
                           f"{self.patience_epochs} epochs (best {self.best_loss:.4f} at step {self.best_step})")
        if out_of_time and not stop and step < run.num_steps and self.lead:
            self.bar.write(f"stopped at step {step}: training.max_seconds={self.max_seconds:g} spent "
                           f"({time.perf_counter() - self.t_start:.0f} s); rerun the command to continue")
        return stop or out_of_time

    def _out_of_time(self, step: int) -> bool:
        """Whether ``training.max_seconds`` (> 0) of the loop are spent after ``step``. With several processes the
        lead's clock decides, at the logging steps only (one small collective there), so that all stop together."""
        if self.max_seconds <= 0:
            return False
        if self.pcount == 1:
            return time.perf_counter() - self.t_start > self.max_seconds
        if not _due(step, int(self.tc.log_every), self.run.num_steps):
            return False
        from jax.experimental import multihost_utils

        over = np.int32(time.perf_counter() - self.t_start > self.max_seconds)
        return bool(multihost_utils.broadcast_one_to_all(over))

    def _log_train(self, step: int, frames: int) -> None:
        """The train metrics since the last log (means, or the last value of the family's
        :attr:`~jaxse.registry.Family.last_value_metrics`); a non-finite loss stops the run."""
        run = self.run
        host = [{k: float(to_host(v)) for k, v in m.items()} for m in self.pending]
        now = time.perf_counter()
        last = run.family.last_value_metrics
        scalars = {f"train/{k}": host[-1][k] if k in last else float(np.mean([h[k] for h in host]))
                   for k in host[0]}
        scalars["train/steps_per_sec"] = self.n_log / max(now - self.t_log, 1e-9)
        if run.family.counts_epochs:
            scalars["train/epoch"] = step / run.steps_per_epoch
        if len(run.phases) > 1:
            scalars["train/crop_frames"] = float(frames)
        self.last_loss = scalars["train/loss"]
        self.writer.write_scalars(step, scalars)
        self.pending, self.t_log, self.n_log = [], now, 0
        if not math.isfinite(self.last_loss):
            raise FloatingPointError(f"training loss is {self.last_loss} at step {step}")

    def patience_over(self, step: int) -> bool:
        """Early stopping: no validation improvement for ``patience_steps`` (counted from the family's
        :meth:`~jaxse.registry.Family.patience_start` at the earliest, e.g. after the RVAE's KL warm-up)."""
        if self.patience_steps is None or self.best_step is None:
            return False
        return step - max(self.best_step, self.patience_from) >= self.patience_steps

    # ---------------------------------------------------------------------------- evaluate and export

    @property
    def _which(self) -> str:
        return " (EMA)" if self.run.family.uses_ema else ""

    def metadata(self, step: int) -> dict:
        """The checkpoint metadata of ``step``: config, model, spec, data facts, warm start and the best so far."""
        best = {"step": self.best_step, "valid_loss": self.best_loss if self.best_step is not None else None}
        return checkpoint_metadata(self.run.config, self.run.model, self.run.spec, step,
                                   extra={**self.extra_meta, "best": best})

    def _validate(self, step: int, force: bool = False) -> tuple[float | None, bool, bool]:
        """Validation where it is due (or ``force``: the last step of a timed run): ``(valid loss or None,
        improved on the best, stop early)``; a new best is exported to ``training.export_dir`` when set."""
        if not (force or _due(step, int(self.tc.eval_every), self.run.num_steps)):
            return None, False, False
        valid_now = self.valid_loss = self.evaluate(step)
        if valid_now is None:
            return None, False, False
        improved = valid_now < self.best_loss
        if improved:
            self.best_step, self.best_loss = step, valid_now
            if self.export_dir and self.lead:
                self.export_best(step, valid_now)
        if self.lead:
            self.bar.write(f"step {step}: train loss {self.last_loss:.4f}, valid loss{self._which} {valid_now:.4f}")
        return valid_now, improved, self.patience_over(step)

    def evaluate(self, step: int) -> float | None:
        """The mean validation metrics (logged as ``valid/...``); returns the loss (``None``: no validation)."""
        if self.valid is None:
            return None
        run = self.run
        variables = eval_variables(self.state, run.model, run.family)
        outs = [self.p_eval(variables, global_batch(_batch_dict(b), run.mesh),
                            jax.random.fold_in(self.keys[_KEY_VALID], i)) for i, b in enumerate(self.valid)]
        scalars = {f"valid/{k}": float(np.mean([to_host(o[k]) for o in outs])) for k in outs[0]}
        self.writer.write_scalars(step, scalars)
        return scalars["valid/loss"]

    def write_samples(self, step: int) -> None:
        """Prior samples of the EMA weights as ``WORKDIR/samples/step_XXXXXX_k.wav`` and in the logs."""
        spec = self.run.spec
        waves = to_host(self.sample_fn(self.state.ema_variables, self.keys[_KEY_SAMPLE]))
        if not self.lead:
            return
        from jaxse.audio import write_audio

        for k, w in enumerate(waves):
            peak = float(np.max(np.abs(w)))
            w = w * (0.95 / peak) if peak > 0.95 else w  # training crops are peak-normalised to 1
            write_audio(self.run.workdir / "samples" / f"step_{step:06d}_{k}.wav", w.astype(np.float32),
                        spec.sample_rate)
            self.writer.write_audio(step, f"samples/{k}", w, spec.sample_rate)

    def export_best(self, step: int, loss: float) -> None:
        """Export the new best model to ``training.export_dir`` (:func:`jaxse.export.export_training_variables`)."""
        from jaxse.export import export_training_variables

        run = self.run
        out = export_training_variables(self.export_dir, run.model,
                                        to_host_tree(eval_variables(self.state, run.model, run.family)), run.spec,
                                        step, loss, run.config, info=self.extra_meta, family=run.family)
        self.bar.write(f"step {step}: exported the new best (valid loss {loss:.4f}) to {out}")


def train_and_evaluate(config, workdir) -> TrainState:
    """Train (or resume) the model described by ``config`` in ``workdir``; returns the final TrainState.

    Writes ``WORKDIR/checkpoints`` (all processes, collectively), and on process 0 only ``WORKDIR/tb``,
    ``WORKDIR/metrics.jsonl`` and ``WORKDIR/samples/step_XXXXXX_k.wav``. An existing checkpoint is resumed.
    A bad config or bad data is a :class:`SetupError` before anything is written.
    """
    return _Trainer(_setup(config, workdir)).train()
