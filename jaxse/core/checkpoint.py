"""Checkpoints on disk (orbax), knowing no model family.

A checkpoint is ``DIR/checkpoints/<step>/`` with two items: ``state`` (a pytree: a training run's whole
:class:`jaxse.core.train_state.TrainState`, or an inference export's ``{"ema_params", "constants"}``) and
``metadata`` (JSON: the config, ``model.to_dict()`` with its ``family``, ``spec.to_dict()``, sample rate,
step, jaxse version). :func:`jaxse.core.loading.load_checkpoint` rebuilds the model from the metadata through
its family; this module only reads and writes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import jax
import numpy as np
import orbax.checkpoint as ocp

import jaxse
from jaxse.parallel import to_host

STATE_ITEM = "state"
METADATA_ITEM = "metadata"
FORMAT = "jaxse-checkpoint-v1"


def checkpoint_manager(workdir, keep: int | None = None, read_only: bool = False,
                       keep_best: bool = False) -> ocp.CheckpointManager:
    """Orbax manager of ``WORKDIR/checkpoints`` (items ``state`` and ``metadata``); keeps the ``keep`` newest.

    The newest checkpoint is always among those kept, so a run can always resume from its latest save. With
    ``keep_best`` the checkpoint with the lowest ``valid_loss`` metric (passed to :func:`save_checkpoint`) is
    kept as well.
    """
    directory = Path(workdir).absolute() / "checkpoints"
    max_to_keep = None if keep is None or keep <= 0 else int(keep)
    best = {}
    if keep_best and not read_only:
        from orbax.checkpoint import checkpoint_managers as cm

        def metric(m):
            return float(m["valid_loss"])

        # BestN keeps the *last* n after sorting; reverse=True sorts descending, so those are the lowest losses.
        policy = cm.AnyPreservationPolicy([
            cm.LatestN(n=max_to_keep),
            cm.BestN(get_metric_fn=metric, reverse=True, n=1, keep_checkpoints_without_metrics=False),
        ])
        # best_fn too: only then does orbax write the metrics into the step directories, so that a restarted
        # run still knows which earlier checkpoint is the best (the policy above decides what is kept).
        best = {"best_fn": metric, "best_mode": "min", "preservation_policy": policy}
        max_to_keep = None
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep,
        create=not read_only,
        read_only=read_only,
        enable_async_checkpointing=not read_only,
        **best,
    )
    return ocp.CheckpointManager(directory, options=options, item_names=(STATE_ITEM, METADATA_ITEM))


def json_default(o):
    """``json.dumps`` fallback for numpy scalars, tuples and sets (anything else: its ``str``)."""
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, (tuple, set)):
        return list(o)
    return str(o)


def checkpoint_metadata(config, model, spec, step: int, extra: dict | None = None) -> dict:
    """The JSON item saved with every checkpoint: enough to rebuild the model without the config file.

    ``extra`` entries are added (the training loop adds ``"best"``, and a family its ``"data"`` facts).
    """
    cfg = config.to_dict() if hasattr(config, "to_dict") else dict(config or {})
    extra = json.loads(json.dumps(extra, default=json_default)) if extra else {}
    return {
        "format": FORMAT,
        "jaxse_version": jaxse.__version__,
        "step": int(step),
        "sample_rate": int(spec.sample_rate),
        "num_bins": int(spec.num_bins),
        "model": model.to_dict(),
        "spec": spec.to_dict(),
        "config": json.loads(json.dumps(cfg, default=json_default)),
        **extra,
    }


def save_checkpoint(manager: ocp.CheckpointManager, state, metadata: dict, step: int | None = None,
                    metrics: dict | None = None) -> bool:
    """Save ``state`` and ``metadata`` at ``step`` (default ``state.step``); all processes must call it.

    Asynchronous: returns once the arrays are copied off the devices; ``manager.wait_until_finished()``
    waits for the files. ``metrics`` (e.g. ``{"valid_loss": ...}``) feed a ``keep_best`` manager.
    """
    step = int(to_host(state.step)) if step is None else int(step)
    args = ocp.args.Composite(**{STATE_ITEM: ocp.args.StandardSave(state), METADATA_ITEM: ocp.args.JsonSave(metadata)})
    return manager.save(step, args=args, metrics=metrics, force=True)


def write_checkpoint(directory, state, metadata: dict, step: int) -> Path:
    """Write one checkpoint synchronously at ``DIRECTORY/checkpoints/<step>`` (an inference export)."""
    directory = Path(directory).absolute()
    options = ocp.CheckpointManagerOptions(create=True, enable_async_checkpointing=False)
    with ocp.CheckpointManager(directory / "checkpoints", options=options,
                               item_names=(STATE_ITEM, METADATA_ITEM)) as mngr:
        mngr.save(int(step), args=ocp.args.Composite(**{STATE_ITEM: ocp.args.StandardSave(state),
                                                        METADATA_ITEM: ocp.args.JsonSave(metadata)}), force=True)
        mngr.wait_until_finished()
    return directory


def restore_train_state(manager: ocp.CheckpointManager, abstract_state, step: int | None = None):
    """The TrainState of checkpoint ``step`` (default: the latest) laid out as ``abstract_state``; None if none."""
    step = manager.latest_step() if step is None else int(step)
    if step is None:
        return None
    restored = manager.restore(step, args=ocp.args.Composite(**{STATE_ITEM: ocp.args.StandardRestore(abstract_state)}))
    return restored[STATE_ITEM]


def resolve_checkpoint(path) -> tuple[Path, int | None]:
    """``(checkpoints_dir, step or None)`` for a workdir, a checkpoints dir or one step's dir."""
    path = Path(path).absolute()
    if (path / "checkpoints").is_dir():
        return path / "checkpoints", None
    if (path / METADATA_ITEM).exists() and (path / STATE_ITEM).exists():
        try:
            return path.parent, int(path.name)
        except ValueError:
            raise ValueError(f"{path}: a checkpoint directory should be named after its step") from None
    if path.is_dir():
        return path, None
    raise FileNotFoundError(f"no checkpoint at {path}")


def looks_like_checkpoint(path) -> bool:
    """Whether ``path`` is laid out as a workdir, a checkpoints folder or one step's checkpoint."""
    path = Path(path)
    return path.is_dir() and ((path / "checkpoints").is_dir() or (path / METADATA_ITEM).exists()
                              or any(p.name.isdigit() for p in path.iterdir()))


def _quiet_read_only_note(record) -> bool:
    """absl logging filter: drops orbax's warnings that a manager is read-only (``Given directory is read
    only=...``, ``CheckpointManagerOptions.read_only=True, setting ...``). Restoring a checkpoint (the shipped
    models included) through a read-only manager is what this module always does, not a problem to report;
    every other absl record passes."""
    return not str(record.msg).startswith(("Given directory is read only", "CheckpointManagerOptions.read_only=True"))


def _read_only_manager(directory: Path) -> ocp.CheckpointManager:
    import logging

    absl_logger = logging.getLogger("absl")  # orbax logs through absl.logging, i.e. this logger
    if _quiet_read_only_note not in absl_logger.filters:
        absl_logger.addFilter(_quiet_read_only_note)
    options = ocp.CheckpointManagerOptions(read_only=True, create=False)
    return ocp.CheckpointManager(directory, options=options, item_names=(STATE_ITEM, METADATA_ITEM))


def _latest(mngr: ocp.CheckpointManager, step: int | None) -> int:
    step = mngr.latest_step() if step is None else int(step)
    if step is None:
        raise FileNotFoundError(f"no checkpoint in {mngr.directory}")
    return step


def restore_metadata(manager: ocp.CheckpointManager, step: int) -> dict:
    """The metadata item of checkpoint ``step`` of an open manager."""
    restored = manager.restore(step, args=ocp.args.Composite(**{METADATA_ITEM: ocp.args.JsonRestore()}))
    return dict(restored[METADATA_ITEM])


def read_checkpoint_metadata(path_or_workdir, step: int | None = None) -> dict:
    """The JSON metadata of a checkpoint (workdir, checkpoints dir or step dir; latest step by default)."""
    directory, found_step = resolve_checkpoint(path_or_workdir)
    with _read_only_manager(directory) as mngr:
        return restore_metadata(mngr, _latest(mngr, found_step if step is None else step))


def restore_subtree(path_or_workdir, target_of: Callable[[dict], dict], step: int | None = None,
                    device=None) -> tuple[dict, dict]:
    """``(restored, metadata)``: the part of a checkpoint's state that ``target_of(metadata)`` describes (a
    pytree of abstract arrays, e.g. the EMA parameters and constants, not the optimizer state), read onto
    ``device`` (default: the first local device). Latest step unless ``step`` (or a step folder) is given."""
    directory, found_step = resolve_checkpoint(path_or_workdir)
    device = jax.local_devices()[0] if device is None else device
    sharding = jax.sharding.SingleDeviceSharding(device)
    with _read_only_manager(directory) as mngr:
        step = _latest(mngr, found_step if step is None else step)
        meta = restore_metadata(mngr, step)
        target = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), target_of(meta))
        restore_args = ocp.checkpoint_utils.construct_restore_args(target)
        args = ocp.args.PyTreeRestore(item=target, restore_args=restore_args, partial_restore=True)
        restored = mngr.restore(step, args=ocp.args.Composite(**{STATE_ITEM: args}))[STATE_ITEM]
    return restored, meta
