"""AV-UDiffSE and AV-UDiffSE+ for the enhancement engine: the diffusion backend with the visual features as the
posterior's conditioning (cut, padded, batched and sharded with the audio by :class:`jaxse.engine.batch.Enhancer`)."""

from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp
import numpy as np

from jaxse import registry
from jaxse.av.data import load_features
from jaxse.diffusion.backend import DiffusionBackend, load_score_checkpoint
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

    def load_conditioning(self, root, relative_path) -> np.ndarray:
        """The visual features of the input at ``relative_path``: ``root/REL.npy`` (the input's relative path
        with the suffix ``.npy``), ``(frames, dim)`` float32 (:func:`jaxse.av.data.load_features`)."""
        return load_features(Path(root) / Path(relative_path).with_suffix(".npy"), self.conditioning.dim)

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
        audio_only = getattr(registry.family(found), "conditioned", None) is False and registry.methods_of(found)
        hint = (f" (it is audio-only: use --method {' or '.join(registry.methods_of(found))}, without --visual)"
                if audio_only else "")
        raise CheckpointError(f"{path}: a checkpoint of the {found!r} family, not an audio-visual prior{hint}")
    return load_score_checkpoint(path, "av", lambda p, fam: f"{p}: a reference model of the {fam!r} family, not an "
                                                          "audio-visual prior")


def load_backend(checkpoint, cfg: PosteriorConfig) -> AVBackend:
    model, variables, spec = load_av_prior(checkpoint)
    return AVBackend(model, variables, cfg, spec)
