"""The ``udiffse`` / ``udiffse+`` methods: the clean-speech prior's checkpoints (the shipped one, train.py
workdirs and exports, reference ``.ckpt`` / ``.npz``) in the score core's :class:`DiffusionBackend`."""

from __future__ import annotations

from pathlib import Path

from jaxse import registry
from jaxse.core.loading import checkpoint_path
from jaxse.diffusion.backend import DiffusionBackend, load_score_checkpoint
from jaxse.diffusion.udiffse import PosteriorConfig

FAMILY = "ncsnpp"


def default_checkpoint_path() -> Path:
    """Where the prior shipped with the package lives: ``jaxse/assets/prior``."""
    return registry.method("udiffse").default_checkpoint_path()


def _not_a_prior(path: Path, found: str) -> str:
    return (f"{path}: a reference model of the {found!r} family (trained on noisy speech), not a clean-speech prior; "
            f"use --method {' or '.join(registry.methods_of(found))}")


def load_prior(checkpoint=None):
    """``(model, variables, spec)`` from a train.py workdir/checkpoint, a reference ``.ckpt``/``.npz``, or the
    default prior (:func:`default_checkpoint_path`). Raises :class:`CheckpointError` with one clear line."""
    path = checkpoint_path(checkpoint, default_checkpoint_path(), FAMILY,
                           "no prior is shipped with this installation yet (jaxse/assets/prior is "
                           "missing); pass --checkpoint PATH (a train.py workdir or checkpoint, or a "
                           "reference .ckpt/.npz)")
    return load_score_checkpoint(path, FAMILY, _not_a_prior)


def load_backend(checkpoint, cfg: PosteriorConfig) -> DiffusionBackend:
    """The backend of a diffusion method (:data:`jaxse.registry.METHODS`) with ``cfg`` and a prior."""
    model, variables, spec = load_prior(checkpoint)
    return DiffusionBackend(model, variables, cfg, spec)
