"""AV-UDiffSE and AV-UDiffSE+ for the enhancement engine: the diffusion backend with the visual features as the
posterior's conditioning (cut, padded, batched and sharded with the audio by :class:`jaxse.enhance.Enhancer`)."""

from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp

from jaxse import registry
from jaxse.diffusion.backend import DiffusionBackend
from jaxse.diffusion.udiffse import PosteriorConfig
from jaxse.core.backend import CheckpointError, Conditioning
from jaxse.spectral import SpecConfig

VISUAL_FPS = 25.0


class AVBackend(DiffusionBackend):
    """UDiffSE / UDiffSE+ (``cfg.method``) with an audio-visual prior: every score evaluation of a row sees that
    row's visual frames (its real ones: the padding of the batch is masked out of the attention)."""

    def __init__(self, model, variables, cfg: PosteriorConfig = PosteriorConfig(), spec: SpecConfig = SpecConfig(),
                 fps: float = VISUAL_FPS):
        super().__init__(model, variables, cfg, spec)
        self.name = "av-" + cfg.method
        self.conditioning = Conditioning("visual features", float(fps), int(model.net.cond_dim))

    def score_fn(self, variables, cond=None):
        if cond is None:
            raise ValueError(f"{self.name} needs the visual features of each row")
        frames, count = cond
        valid = jnp.arange(frames.shape[0]) < count
        model = self.model

        def score(xx, t):  # the row's frames for each of its posterior samples
            n = xx.shape[0]
            return model.score(variables, xx, t, jnp.broadcast_to(frames, (n,) + frames.shape),
                               jnp.broadcast_to(valid, (n,) + valid.shape))

        return score

    def describe(self) -> str:
        return (f"{self.name}, {self.cfg.nfe} network evaluations per segment (x{self.cfg.num_samples} samples), "
                f"visual features of dimension {self.conditioning.dim} at {self.conditioning.rate:g} fps")


def load_av_prior(checkpoint):
    """``(model, variables, spec)`` of an audio-visual prior (a train.py workdir, checkpoint or export of the
    ``"av"`` family). :class:`CheckpointError` with one line otherwise (an audio-only prior names its methods)."""
    if checkpoint is None:
        raise CheckpointError("no audio-visual prior is shipped: pass --checkpoint AV_CHECKPOINT (a train.py "
                              "workdir or export of the av family, e.g. configs/av_cpu.py)")
    path = Path(checkpoint)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint")
    found = registry.detect_family(path)
    if found is not None and found != "av":
        hint = " (it is audio-only: use --method udiffse or udiffse+, without --visual)" if found == "ncsnpp" else ""
        raise CheckpointError(f"{path}: a checkpoint of the {found!r} family, not an audio-visual prior{hint}")
    if path.is_file():  # a reference .ckpt / .npz state_dict
        from jaxse.diffusion.convert import import_reference

        try:
            model, variables = import_reference(path)
        except Exception as exc:
            raise CheckpointError(f"{path}: could not import ({' '.join(str(exc).split())[:300]})") from exc
        if model.family != "av":
            raise CheckpointError(f"{path}: a reference model of the {model.family!r} family, not an audio-visual "
                                  "prior")
        return model, variables, SpecConfig()
    try:
        from jaxse.core.loading import load_checkpoint

        model, variables, meta = load_checkpoint(path, family="av")
    except Exception as exc:
        raise CheckpointError(f"{path}: could not load the checkpoint ({' '.join(str(exc).split())[:300]})") from exc
    return model, variables, SpecConfig(**meta["spec"]) if "spec" in meta else SpecConfig()


def load_backend(checkpoint, cfg: PosteriorConfig) -> AVBackend:
    model, variables, spec = load_av_prior(checkpoint)
    return AVBackend(model, variables, cfg, spec)
