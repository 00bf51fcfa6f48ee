"""The diffusion methods' backend for the enhancement engine: UDiffSE / UDiffSE+ with a score model, and the
loader of diffusion priors (train.py workdirs and exports, reference ``.ckpt`` / ``.npz``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable


from jaxse import parallel, registry
from jaxse.diffusion.udiffse import PosteriorConfig, posterior_mean
from jaxse.core.backend import CheckpointError, MethodBackend
from jaxse.core.loading import checkpoint_path
from jaxse.spectral import SpecConfig


class DiffusionBackend(MethodBackend):
    """UDiffSE / UDiffSE+ with a score model: compressed Hann STFT (:func:`jaxse.parallel.batched_spec`),
    ``NF = max |compress(stft(x))|`` (:func:`jaxse.parallel.norm_factor`), posterior mean
    (:func:`jaxse.diffusion.udiffse.posterior_mean`, or ``posterior`` with its signature)."""

    def __init__(self, model, variables, cfg: PosteriorConfig = PosteriorConfig(), spec: SpecConfig = SpecConfig(),
                 posterior: Callable = posterior_mean):
        self.model = model
        self.variables = variables
        self.cfg = cfg
        self.spec = spec
        self.posterior_fn = posterior
        self.name = cfg.method
        net = getattr(model, "net", None)
        frame_multiple = getattr(net, "frame_multiple", None) or getattr(model, "frame_multiple", 1)
        self.quantum = parallel.frame_quantum(frame_multiple, spec.pad_multiple)
        self.quantum_note = f"lcm of the padding multiple {spec.pad_multiple} and the network's {frame_multiple}"

    def set_compute_dtype(self, dtype: str) -> None:
        """The network's convolutions and attention in ``dtype`` (parameters and sampler state stay float32)."""
        net = dataclasses.replace(self.model.net, dtype=dtype)  # validates the name
        self.model = dataclasses.replace(self.model, net=net)

    def norm_factor(self, wave):
        return parallel.norm_factor(wave, self.spec)

    def analysis(self, waves, lengths, num_frames):
        return parallel.batched_spec(waves, lengths, num_frames, self.spec)

    def synthesis(self, spec, lengths, row_length):
        return parallel.batched_wave(spec, lengths, row_length, self.spec)

    def score_fn(self, variables, cond=None):
        """The ``(x, t) -> score`` closure the posterior runs on (``cond``: a row's conditioning, see
        :class:`jaxse.av.backend.AVBackend`)."""
        model = self.model
        return lambda xx, t: model.score(variables, xx, t)

    def posterior(self, variables, key, x, mask, cond=None):
        s, _ = self.posterior_fn(key, self.score_fn(variables, cond), self.model.sde, self.cfg, x[None], mask[None])
        return s[0]

    @property
    def nfe(self) -> int:
        return self.cfg.nfe

    def cost(self) -> dict:
        return {"nfe": self.cfg.nfe, "samples": self.cfg.num_samples}

    def describe(self) -> str:
        return (f"{self.cfg.method}, {self.cfg.nfe} network evaluations per segment (x{self.cfg.num_samples} "
                "samples)")


def default_checkpoint_path() -> Path:
    """Where the prior shipped with the package lives: ``jaxse/assets/prior``."""
    return registry.method("udiffse").default_checkpoint_path()


def load_prior(checkpoint=None):
    """``(model, variables, spec)`` from a train.py workdir/checkpoint, a reference ``.ckpt``/``.npz``, or the
    default prior (:func:`default_checkpoint_path`). Raises :class:`CheckpointError` with one clear line."""
    path = checkpoint_path(checkpoint, default_checkpoint_path(), "ncsnpp",
                           "no prior is shipped with this installation yet (jaxse/assets/prior is "
                           "missing); pass --checkpoint PATH (a train.py workdir or checkpoint, or a "
                           "reference .ckpt/.npz)")
    try:
        if path.is_file() and path.suffix.lower() in (".ckpt", ".npz", ".pt", ".pth"):
            from jaxse.diffusion.convert import import_reference

            model, variables = import_reference(path)
            if model.family != "ncsnpp":
                raise CheckpointError(f"{path}: a reference model of the {model.family!r} family (trained on noisy "
                                      f"speech), not a clean-speech prior; use --method "
                                      f"{' or '.join(registry.methods_of(model.family))}")
            return model, variables, SpecConfig()
        from jaxse.core.loading import load_checkpoint

        model, variables, meta = load_checkpoint(path, family="ncsnpp")
        spec = SpecConfig(**meta["spec"]) if "spec" in meta else SpecConfig()
        return model, variables, spec
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(f"{path}: could not load the checkpoint ({' '.join(str(exc).split())[:300]})") from exc


def load_backend(checkpoint, cfg: PosteriorConfig) -> DiffusionBackend:
    """The backend of a diffusion method (:data:`jaxse.registry.METHODS`) with ``cfg`` and a prior."""
    model, variables, spec = load_prior(checkpoint)
    return DiffusionBackend(model, variables, cfg, spec)
