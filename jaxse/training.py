"""The training loop of every model family (``train.py``): state, optimizer, EMA, data, parallelism,
checkpoints, logs and resume. The family (``config.model.family``, :mod:`jaxse.registry`) supplies the model,
its spectral settings, the loss (train and eval steps: the diffusion prior's denoising score matching in
:mod:`jaxse.diffusion.training`, the RVAE's β-ELBO in :mod:`jaxse.rvae.training`), prior samples, warm start,
checkpoint loading and export. Optimizer: Adam (lr 1e-4, b1 .9, b2 .999, eps 1e-8 for the diffusion prior),
no clipping, constant rate after an optional linear warm-up; EMA (families that keep one):
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
version). :func:`load_checkpoint` rebuilds the model from the metadata alone.

Public API (all importable; :func:`train_and_evaluate` is what ``train.py`` runs):

* state and maths: :class:`TrainState`, :func:`init_train_state`, :func:`create_train_state`,
  :func:`abstract_train_state`, :func:`ema_decay_at`, :func:`ema_update` (the families' losses and steps:
  :mod:`jaxse.diffusion.training`, :mod:`jaxse.rvae.training`);
* config -> objects: :func:`model_from_config`, :func:`spec_from_config`, :func:`optimizer_from_config`,
  :func:`validate_config`;
* parallelism: :func:`make_mesh`, :func:`replicated`, :func:`batch_sharding`, :func:`global_batch`,
  :func:`to_host`, :func:`make_train_step`, :func:`make_eval_step`, :func:`make_sample_fn`,
  :func:`initialize_distributed`;
* checkpoints: :func:`checkpoint_manager`, :func:`checkpoint_metadata`, :func:`save_checkpoint`,
  :func:`restore_train_state`, :func:`read_checkpoint_metadata`, :func:`load_checkpoint`.

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
  many epochs (counted from the end of the RVAE's KL warm-up at the earliest); the best step and loss are
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
  validation length (:func:`crop_phases`, :func:`valid_frames`); the data of step ``s`` stay a pure function of
  ``(seed, s)``, so resuming across a phase change is exact;
* ``training.export_dir`` (single process): every new lowest validation loss is exported there, replacing the
  previous export atomically (:func:`jaxse.export.export_training_variables`), so that a lost workdir costs
  only the optimizer state;
* ``data.train_dir`` may name several folders, comma-separated.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import jaxse
from jaxse import registry
from jaxse.core.checkpoint import (METADATA_ITEM, STATE_ITEM, checkpoint_manager, checkpoint_metadata,  # noqa: F401
                                   read_checkpoint_metadata, restore_metadata, restore_train_state, save_checkpoint)
from jaxse.core.loading import load_checkpoint  # noqa: F401
from jaxse.core.train_state import TrainState, ema_decay_at, ema_update  # noqa: F401
from jaxse.parallel import batch_sharding, initialize_distributed, replicated, to_host, to_host_tree  # noqa: F401
from jaxse.pytree import count_params

logger = logging.getLogger(__name__)

DATA_AXIS = "data"
# Train metrics logged as their latest value rather than averaged over the logging interval.
_LAST_VALUE_METRICS = ("ema_decay", "kl_weight")

# Sub-keys of the run key (``PRNGKey(seed)``), by purpose.
_KEY_INIT, _KEY_TRAIN, _KEY_VALID, _KEY_SAMPLE = range(4)


# ------------------------------------------------------------------------------ config -> objects


def uses_ema(model) -> bool:
    """Whether the model's family keeps an EMA of the parameters (the diffusion prior does, the RVAE not)."""
    return registry.family_of_model(model).uses_ema


def eval_variables(state: TrainState, model) -> dict:
    """The variables validation, samples and export use: the EMA ones, or the params without EMA."""
    return state.ema_variables if uses_ema(model) else state.variables


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


def init_train_state(model, tx: optax.GradientTransformation, seed: int, num_bins: int = 256) -> TrainState:
    """A fresh :class:`TrainState` (traceable; :func:`create_train_state` jits it onto a mesh)."""
    keys = _run_keys(seed)
    variables = model.init(keys[_KEY_INIT], num_bins)
    params = variables["params"]
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        ema_params=jax.tree.map(lambda p: jnp.array(p, copy=True), params) if uses_ema(model) else None,
        opt_state=tx.init(params),
        constants=variables["constants"],
        key=keys[_KEY_TRAIN],
    )


def create_train_state(model, tx, seed: int, num_bins: int = 256, mesh: Mesh | None = None) -> TrainState:
    """A fresh TrainState, replicated over ``mesh`` (default: :func:`make_mesh`)."""
    mesh = make_mesh() if mesh is None else mesh
    fn = functools.partial(init_train_state, model, tx, int(seed), int(num_bins))
    return jax.jit(fn, out_shardings=replicated(mesh))()


def abstract_train_state(model, tx, seed: int = 0, num_bins: int = 256, mesh: Mesh | None = None):
    """Shapes, dtypes and (replicated) shardings of the TrainState, for restoring without allocating."""
    mesh = make_mesh() if mesh is None else mesh
    shapes = jax.eval_shape(functools.partial(init_train_state, model, tx, int(seed), int(num_bins)))
    sharding = replicated(mesh)
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), shapes)


def warm_start_state(state: TrainState, model, source, mesh: Mesh, steps_per_epoch: int | None = None
                     ) -> tuple[TrainState, dict]:
    """``state`` with the weights of a trained model: ``(state, info)``, for ``training.init_from``.

    ``source``: an exported prior, a training workdir or checkpoint (diffusion: its EMA weights become both
    the parameters and their EMA), or an RVAE directory (``rvae.json`` + ``rvae_params.npz``). The optimizer
    state stays fresh (pair with ``training.warmup_steps``); the step counter continues from the source's
    step, so the EMA warm-up, the data stream and the run length carry on where the source stopped. For an
    RVAE source that records its epoch, the step is that epoch at this run's ``steps_per_epoch`` (the KL
    warm-up is counted in epochs, and the data may differ from the source's). The source's architecture
    must equal ``model``'s: ``ValueError`` otherwise.
    """
    variables, step = registry.family_of_model(model).warm_start(model, Path(source), steps_per_epoch)
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


def make_train_step(model, spec, tx, ema_decay: float, mesh: Mesh, objective=None) -> Callable:
    """Jitted ``(state, batch) -> (state, metrics)`` of the model's family; ``batch`` is a dict of arrays
    (``{"waves": (B, L)}`` for the clean-speech families) sharded on ``"data"``, the state replicated and
    donated. ``objective``: the family's loss settings (:meth:`jaxse.registry.Family.objective`; ``None``:
    its defaults); ``ema_decay`` is unused by a family without EMA."""
    fn = registry.family_of_model(model).train_step(model, spec, tx, float(ema_decay), objective)
    rep = replicated(mesh)
    return jax.jit(fn, in_shardings=(rep, batch_sharding(mesh)), out_shardings=(rep, rep), donate_argnums=(0,))


def make_eval_step(model, spec, mesh: Mesh, objective=None) -> Callable:
    """Jitted ``(variables, batch, key) -> {"loss": scalar, ...}`` (replicated) of the model's family."""
    fn = registry.family_of_model(model).eval_step(model, spec, objective)
    rep = replicated(mesh)
    return jax.jit(fn, in_shardings=(rep, batch_sharding(mesh), rep), out_shardings=rep)


def make_sample_fn(model, spec, mesh: Mesh, config, pc_config=None) -> Callable:
    """Jitted ``(variables, key) -> waves (num_samples, crop_length(num_frames))`` of ``config.sampling``:
    prior samples of a family with a sampler (replicated: every process gets the same waves)."""
    fn = registry.family_of_model(model).sample_fn(model, spec, config, pc_config)
    rep = replicated(mesh)
    return jax.jit(fn, in_shardings=(rep, rep), out_shardings=rep)


# ------------------------------------------------------------------------------------ multi-host


# ------------------------------------------------------------------------------------ main loop


def _check_divisible(what: str, n: int, by: int, unit: str) -> None:
    if n % by:
        raise ValueError(f"{what}={n} is not a multiple of the {unit} ({by})")


def validate_config(config, model, mesh: Mesh) -> None:
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
    if int(tc.num_steps) < 0:
        raise ValueError(f"training.num_steps must be >= 0, got {tc.num_steps}")
    if str(tc.get("export_dir", "") or "") and jax.process_count() > 1:
        raise ValueError("training.export_dir works in single-process runs; in a multi-process run export "
                         "with python -m jaxse.export WORKDIR")
    registry.family_of_model(model).validate_config(config, model)


def _due(step: int, every: int, last: int) -> bool:
    return (every > 0 and step % every == 0) or step == last


class SetupError(ValueError):
    """A training run that cannot start: a bad config or bad data (one line, before anything is written)."""


def _batch_dict(rows) -> dict:
    """A data set's batch as the dict the steps take: clean-speech rows ``(B, L)`` are ``{"waves": rows}``."""
    return rows if isinstance(rows, dict) else {"waves": rows}


def crop_phases(config) -> list[tuple[int, int, int]]:
    """The training crops as ``[(after_step, crop_frames, batch_size), ...]``, from ``data.crop_schedule``.

    ``data.crop_schedule`` is empty (one phase: ``data.crop_frames`` × ``training.batch_size`` throughout) or
    ``"0:64x8,8000:128x4,16000:256x2"``: from the step after ``after_step`` on, crops of that many frames in
    global batches of that size (``"8000:128"`` keeps ``training.batch_size``). The first phase starts at 0 and
    the steps increase. Progressive crops train the network on short sequences first and on sequences
    closer to the enhancement rows later; equal frames per batch keep the cost per step about the same.
    """
    text = str(config.data.get("crop_schedule", "") or "").strip()
    default_batch = int(config.training.batch_size)
    if not text:
        return [(0, int(config.data.crop_frames), default_batch)]
    phases = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        try:
            after, _, shape = part.partition(":")
            frames, _, batch = shape.partition("x")
            phases.append((int(after), int(frames), int(batch) if batch else default_batch))
        except ValueError:
            raise ValueError(f"data.crop_schedule: bad phase {part!r} (expected AFTER_STEP:FRAMES[xBATCH])") from None
    steps = [p[0] for p in phases]
    if steps[0] != 0 or any(b <= a for a, b in zip(steps, steps[1:])):
        raise ValueError(f"data.crop_schedule={text!r}: the phases must start at step 0 and increase")
    if any(f < 1 or b < 1 for _, f, b in phases):
        raise ValueError(f"data.crop_schedule={text!r}: frames and batch sizes must be positive")
    return phases


def phase_at(phases, step: int) -> tuple[int, int, int]:
    """The phase of :func:`crop_phases` that training step ``step`` (1-based) uses."""
    return [p for p in phases if p[0] < int(step)][-1] if int(step) > 0 else phases[0]


def valid_frames(config) -> int:
    """Frames of the validation crops: ``data.valid_frames``, or ``data.crop_frames`` when 0 or absent.

    A fixed validation length keeps the loss (a sum over frames) comparable across crop phases.
    """
    return int(config.data.get("valid_frames", 0) or config.data.crop_frames)


def _run_length(config, steps_per_epoch: int) -> int:
    """``training.num_steps``, or ``training.num_epochs × steps_per_epoch`` when num_steps is 0."""
    tc = config.training
    num_steps = int(tc.num_steps)
    if num_steps == 0 and int(tc.get("num_epochs", 0)) > 0:
        num_steps = int(tc.num_epochs) * int(steps_per_epoch)
    return num_steps


def train_and_evaluate(config, workdir) -> TrainState:
    """Train (or resume) the model described by ``config`` in ``workdir``; returns the final TrainState.

    Writes ``WORKDIR/checkpoints`` (all processes, collectively), and on process 0 only ``WORKDIR/tb``,
    ``WORKDIR/metrics.jsonl`` and ``WORKDIR/samples/step_XXXXXX_k.wav``. An existing checkpoint is resumed.
    """
    from jaxse.logging_utils import MetricWriter, ProgressBar

    workdir = Path(workdir)
    tc = config.training
    pidx, pcount = jax.process_index(), jax.process_count()
    lead = pidx == 0

    # Everything that can be wrong with the config or the data fails here, before the workdir is touched.
    try:
        family = registry.family_of_config(config)
        model = family.model_from_config(config)
        spec = family.spec_from_config(config)
        tx = optimizer_from_config(config)
        mesh = make_mesh()
        validate_config(config, model, mesh)
        train_ds = family.make_dataset(config, spec, "train", int(config.data.crop_frames))
        valid_ds = family.make_dataset(config, spec, "valid", valid_frames(config)) if config.data.valid_dir else None
    except (ValueError, OSError) as exc:
        raise SetupError(" ".join(str(exc).split())) from exc
    if lead:
        workdir.mkdir(parents=True, exist_ok=True)
    batch_size, seed = int(tc.batch_size), int(tc.seed)
    ema = uses_ema(model)

    phases = crop_phases(config)
    phase_data = {frames: train_ds.with_crop_frames(frames) for _, frames, _ in phases}
    steps_per_epoch = max(1, math.ceil(train_ds.total_chunks / batch_size))
    num_steps = _run_length(config, steps_per_epoch)
    objective = family.objective(config, steps_per_epoch)
    extra_meta: dict = {}
    data_info = family.data_info(train_ds, steps_per_epoch)
    if data_info:
        extra_meta["data"] = data_info

    keep_best = bool(tc.get("keep_best", False))
    manager = checkpoint_manager(workdir, keep=int(tc.keep_checkpoints), keep_best=keep_best)
    abstract = abstract_train_state(model, tx, seed, spec.num_bins, mesh)
    state = restore_train_state(manager, abstract)
    best_step, best_loss = None, math.inf
    init_from = str(tc.get("init_from", "") or "")
    warm = None
    if state is None:
        state = create_train_state(model, tx, seed, spec.num_bins, mesh)
        if init_from:
            state, warm = warm_start_state(state, model, init_from, mesh, steps_per_epoch)
            extra_meta["init_from"] = warm
        start = int(to_host(state.step))
    else:
        start = int(to_host(state.step))
        logger.info("resumed from %s at step %d", manager.directory, start)
        best = restore_metadata(manager, start).get("best") or {}
        if best.get("step") is not None:
            best_step, best_loss = int(best["step"]), float(best["valid_loss"])
    resumed = f" (resumed from checkpoint {start})" if start and warm is None else ""
    if warm is not None:
        resumed = f" (warm start from {warm['source']}, step {warm['step']}: fresh optimizer)"
    export_dir = str(tc.get("export_dir", "") or "")
    n_params = count_params(state.params)

    valid = None
    valid_chunks = bool(config.data.get("valid_chunks", False))
    if valid_ds is not None:
        n_valid = valid_ds.num_valid_batches(int(tc.eval_batch_size), int(tc.num_valid), valid_chunks)
        if n_valid == 0:
            logger.warning("no full validation batch (eval_batch_size=%d, num_valid=%d, %d files): validation off",
                           tc.eval_batch_size, tc.num_valid, len(valid_ds))
        else:
            valid = list(valid_ds.valid_batches(int(tc.eval_batch_size), int(tc.num_valid), pidx, pcount,
                                                chunks=valid_chunks))

    p_train = make_train_step(model, spec, tx, float(tc.ema_decay), mesh, objective=objective)
    p_eval = make_eval_step(model, spec, mesh, objective=objective)
    keys = _run_keys(seed)
    sample_fn = None
    if int(tc.sample_every) > 0:
        sample_fn = make_sample_fn(model, spec, mesh, config)

    patience_epochs = int(tc.get("early_stop_patience_epochs", 0))
    patience_steps = patience_epochs * steps_per_epoch if patience_epochs > 0 else None
    warmup_steps = int(getattr(objective, "warmup_steps", 0))  # e.g. the RVAE's KL warm-up

    def patience_over(step) -> bool:
        """Early stopping: no validation improvement for ``patience_steps`` (not counting the KL warm-up)."""
        if patience_steps is None or best_step is None:
            return False
        return step - max(best_step, warmup_steps) >= patience_steps

    writer = MetricWriter(workdir, enabled=lead, resume_step=start)
    bar = ProgressBar(num_steps, initial=start, enabled=lead)
    if lead:
        epochs = f", {steps_per_epoch} steps/epoch ({train_ds.total_chunks} chunks)" if family.counts_epochs else ""
        crops = f"batch {batch_size}" if len(phases) == 1 else "crops " + ", ".join(
            f"{f}x{b} after {a}" for a, f, b in phases)
        bar.write(f"jaxse {jaxse.__version__}: {n_params / 1e6:.2f}M params, {mesh.devices.size} device(s) "
                  f"({jax.devices()[0].platform}), {pcount} process(es), {crops}, "
                  f"{len(train_ds)} training files ({train_ds.total_duration / 3600:.2f} h){epochs}, "
                  f"steps {start} -> {num_steps}{resumed}, workdir {workdir}")
        if start == 0:
            writer.write_text(0, "config", "```\n" + str(config) + "\n```")

    def metadata(step):
        best = {"step": best_step, "valid_loss": best_loss if best_step is not None else None}
        return checkpoint_metadata(config, model, spec, step, extra={**extra_meta, "best": best})

    def evaluate(step):
        if valid is None:
            return None
        variables = eval_variables(state, model)
        outs = [p_eval(variables, global_batch(_batch_dict(b), mesh), jax.random.fold_in(keys[_KEY_VALID], i))
                for i, b in enumerate(valid)]
        scalars = {f"valid/{k}": float(np.mean([to_host(o[k]) for o in outs])) for k in outs[0]}
        writer.write_scalars(step, scalars)
        return scalars["valid/loss"]

    def write_samples(step):
        waves = to_host(sample_fn(state.ema_variables, keys[_KEY_SAMPLE]))
        if not lead:
            return
        from jaxse.audio import write_audio

        for k, w in enumerate(waves):
            peak = float(np.max(np.abs(w)))
            w = w * (0.95 / peak) if peak > 0.95 else w  # training crops are peak-normalised to 1
            write_audio(workdir / "samples" / f"step_{step:06d}_{k}.wav", w.astype(np.float32), spec.sample_rate)
            writer.write_audio(step, f"samples/{k}", w, spec.sample_rate)

    def export_best(step, loss):
        from jaxse.export import export_training_variables

        out = export_training_variables(export_dir, model, to_host_tree(eval_variables(state, model)), spec, step,
                                        loss, config, info=extra_meta)
        bar.write(f"step {step}: exported the new best (valid loss {loss:.4f}) to {out}")

    if warm is not None and valid is not None:
        # The source's loss on this run's validation set: the bar for the first export, a point of the curve.
        best_loss = evaluate(start)
        best_step = start
        if lead:
            bar.write(f"step {start}: warm-start weights, valid loss{' (EMA)' if ema else ''} {best_loss:.4f}")

    pending: list = []  # per-step metrics (device arrays) since the last log
    t_log, n_log = time.perf_counter(), 0
    prev = None
    last_loss = math.nan
    valid_loss = None
    step = start
    stop = start > 0 and patience_over(start)
    if stop and lead:
        bar.write(f"stopped early already: no validation improvement since step {best_step}")
    try:
        for step in range(start + 1, num_steps + 1):
            if stop:
                break
            _, frames, batch_size = phase_at(phases, step)
            local = phase_data[frames].train_batch(seed, step - 1, batch_size, pidx, pcount)
            state, metrics = p_train(state, global_batch(_batch_dict(local), mesh))
            pending.append(metrics)
            if prev is not None:  # keep one step in flight: data loading overlaps compute, memory bounded
                jax.block_until_ready(prev)
            prev = metrics["loss"]
            n_log += 1
            if _due(step, int(tc.log_every), num_steps):
                host = [{k: float(to_host(v)) for k, v in m.items()} for m in pending]
                now = time.perf_counter()
                scalars = {f"train/{k}": host[-1][k] if k in _LAST_VALUE_METRICS
                           else float(np.mean([h[k] for h in host])) for k in host[0]}
                scalars["train/steps_per_sec"] = n_log / max(now - t_log, 1e-9)
                if family.counts_epochs:
                    scalars["train/epoch"] = step / steps_per_epoch
                if len(phases) > 1:
                    scalars["train/crop_frames"] = float(frames)
                last_loss = scalars["train/loss"]
                writer.write_scalars(step, scalars)
                pending, t_log, n_log = [], now, 0
                if not math.isfinite(last_loss):
                    raise FloatingPointError(f"training loss is {last_loss} at step {step}")
            improved = False
            valid_now = None
            if _due(step, int(tc.eval_every), num_steps):
                valid_now = valid_loss = evaluate(step)
                if valid_loss is not None:
                    if valid_loss < best_loss:
                        best_step, best_loss, improved = step, valid_loss, True
                        if export_dir and lead:
                            export_best(step, valid_loss)
                    if lead:
                        which = " (EMA)" if ema else ""
                        bar.write(f"step {step}: train loss {last_loss:.4f}, valid loss{which} {valid_loss:.4f}")
                    stop = patience_over(step)
            if sample_fn is not None and int(tc.sample_every) > 0 and step % int(tc.sample_every) == 0:
                write_samples(step)
            if _due(step, int(tc.checkpoint_every), num_steps) or stop or (keep_best and improved):
                metrics_ck = {"valid_loss": valid_now} if keep_best and valid_now is not None else None
                save_checkpoint(manager, state, metadata(step), step, metrics=metrics_ck)
            postfix = {"loss": last_loss} if math.isfinite(last_loss) else {}
            if valid_loss is not None:
                postfix["valid"] = valid_loss
            bar.update(step, **postfix)
            if stop and lead:
                bar.write(f"early stop at step {step}: the validation loss has not improved for {patience_epochs} "
                          f"epochs (best {best_loss:.4f} at step {best_step})")
    finally:
        manager.wait_until_finished()
        manager.close()
        bar.close()
        writer.close()
    return state
