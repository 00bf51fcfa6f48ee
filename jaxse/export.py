"""Inference-only priors: a model, its (EMA) variables and metadata, without optimizer state.

An exported prior has the same on-disk layout as a training workdir (``DIR/checkpoints/<step>/{state,
metadata}``) with ``state = {"ema_params", "constants"}``, so :func:`jaxse.training.load_checkpoint`
reads both. It is what ``python -m jaxse.convert`` writes for imported reference checkpoints and what
ships inside the package as the default prior.
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp

import jaxse
from jaxse.models import ScoreModel, count_params
from jaxse.spectral import SpecConfig
from jaxse.training import METADATA_ITEM, STATE_ITEM


def export_prior(directory, model: ScoreModel, variables, spec: SpecConfig = SpecConfig(), step: int = 0,
                 extra: dict | None = None) -> Path:
    """Write ``variables`` (``{"params", "constants"}``) as an inference-only prior at ``directory``."""
    directory = Path(directory).absolute()
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
    options = ocp.CheckpointManagerOptions(create=True, enable_async_checkpointing=False)
    with ocp.CheckpointManager(directory / "checkpoints", options=options,
                               item_names=(STATE_ITEM, METADATA_ITEM)) as mngr:
        mngr.save(int(step), args=ocp.args.Composite(**{STATE_ITEM: ocp.args.StandardSave(state),
                                                        METADATA_ITEM: ocp.args.JsonSave(meta)}), force=True)
        mngr.wait_until_finished()
    return directory

