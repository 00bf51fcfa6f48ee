"""Inference-only exports of NCSN++ score models: a model, its (EMA) variables and metadata, without optimizer
state.

An exported prior has the same on-disk layout as a training workdir (``DIR/checkpoints/<step>/{state,
metadata}``) with ``state = {"ema_params", "constants"}``, so :func:`jaxse.core.loading.load_checkpoint`
reads both. It is what ``python -m jaxse.convert`` writes for imported reference checkpoints, what
``python -m jaxse.export`` and ``training.export_dir`` write for the NCSN++ families
(:class:`jaxse.diffusion.family.NCSNppCheckpointFamily`), and what ships inside the package as the default prior.
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np

import jaxse
from jaxse.core.checkpoint import write_checkpoint
from jaxse.pytree import count_params
from jaxse.spectral import SpecConfig


def export_prior(directory, model, variables, spec: SpecConfig = SpecConfig(), step: int = 0,
                 extra: dict | None = None) -> Path:
    """Write ``variables`` (``{"params", "constants"}``) of ``model`` (a score model with ``to_dict``) as an
    inference-only prior at ``directory``."""
    state = {"ema_params": jax.device_get(variables["params"]), "constants": jax.device_get(variables["constants"])}
    state = jax.tree.map(np.asarray, state)
    meta = {
        "format": "jaxse-checkpoint-v1",
        "kind": "inference-prior",
        "jaxse_version": jaxse.__version__,
        "step": int(step),
        "sample_rate": int(spec.sample_rate),
        "num_bins": int(spec.num_bins),
        "num_params": count_params(variables["params"]),
        "model": model.to_dict(),
        "spec": spec.to_dict(),
        **(extra or {}),
    }
    return write_checkpoint(directory, state, meta, int(step))
