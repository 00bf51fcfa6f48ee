"""Checkpoints as models: a checkpoint rebuilt through the family its metadata records, and the checkpoint a
method runs on (given, or shipped), checked against the method's family."""

from __future__ import annotations

from pathlib import Path

from jaxse import registry
from jaxse.core.backend import CheckpointError
from jaxse.core.checkpoint import restore_subtree


def load_checkpoint(path_or_workdir, step: int | None = None, device=None, family: str | None = None):
    """Load a trained model for inference: ``(model, variables, metadata)``.

    ``path_or_workdir``: a training workdir (its latest checkpoint), its ``checkpoints`` folder, or one
    ``checkpoints/<step>`` folder (also an exported prior). The model is rebuilt by the family its metadata
    records (``model.family``; the diffusion prior for checkpoints from before the record) without a config
    file; only the subtree inference needs is read (:meth:`jaxse.registry.Family.restore_target`: e.g. the EMA
    parameters and constants, not the optimizer state) and placed on ``device`` (default: the first local
    device). With ``family``, a checkpoint of another family is a :class:`jaxse.registry.RegistryError`.
    """
    found = {}

    def target_of(meta: dict) -> dict:
        name = registry.family_name_of_metadata(meta)
        if family is not None:
            registry.check_family(name, family, path_or_workdir)
        fam = registry.family(name)
        found["family"], found["model"] = fam, fam.model_from_dict(meta["model"])
        return fam.restore_target(found["model"], meta)

    restored, meta = restore_subtree(path_or_workdir, target_of, step=step, device=device)
    return found["model"], found["family"].inference_variables(restored), meta


def checkpoint_path(checkpoint, default, family: str, missing: str) -> Path:
    """The checkpoint a method loads: ``checkpoint``, or the shipped ``default`` when it is ``None``.

    :class:`CheckpointError` (one line) when it does not exist (``missing`` is the message for an absent
    default) or when its files say it is a checkpoint of another model family than ``family``
    (:func:`jaxse.registry.detect_family`)."""
    if checkpoint is None:
        path = Path(default)
        if not path.exists():
            raise CheckpointError(missing)
    else:
        path = Path(checkpoint)
        if not path.exists():
            raise CheckpointError(f"{path}: no such checkpoint")
    found = registry.detect_family(path)
    if found is not None and found != family:
        theirs = registry.methods_of(found)
        use = f" (use --method {' or '.join(theirs)})" if theirs else ""
        raise CheckpointError(f"{path}: a checkpoint of the {found!r} model family; the methods of this one "
                              f"({', '.join(registry.methods_of(family))}) need a {family!r} checkpoint{use}")
    return path
