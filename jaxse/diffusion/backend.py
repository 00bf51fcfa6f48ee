"""The score-prior methods' backend for the enhancement engine: UDiffSE / UDiffSE+ with a score model
(:class:`DiffusionBackend`, used by the ``ncsnpp`` and ``av`` families), and the loader of NCSN++ checkpoints of
any family (train.py workdirs and exports, reference ``.ckpt`` / ``.npz``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable


from jaxse import parallel, registry
from jaxse.core.backend import CheckpointError, MethodBackend
from jaxse.errors import one_line
from jaxse.core.loading import load_checkpoint
from jaxse.diffusion.udiffse import PosteriorConfig, posterior_mean
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
        a conditioned family's backend)."""
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


REFERENCE_SUFFIXES = (".ckpt", ".npz", ".pt", ".pth")


def load_score_checkpoint(path, family: str, wrong_reference: Callable[[Path, str], str]):
    """``(model, variables, spec)`` of an NCSN++ checkpoint of ``family``: a reference ``.ckpt`` / ``.npz`` / ``.pt``
    state_dict (its layout says its family: :func:`jaxse.diffusion.convert.import_reference`) or a train.py
    workdir, checkpoint or export (its metadata does). :class:`CheckpointError` with one line otherwise;
    ``wrong_reference(path, found_family)`` is the line for a reference model of another family."""
    path = Path(path)
    try:
        if path.is_file() and path.suffix.lower() in REFERENCE_SUFFIXES:
            from jaxse.diffusion.convert import import_reference

            model, variables = import_reference(path)
            if model.family != family:
                raise CheckpointError(wrong_reference(path, model.family))
            return model, variables, SpecConfig()
        model, variables, meta = load_checkpoint(path, family=family)
        return model, variables, SpecConfig(**meta["spec"]) if "spec" in meta else SpecConfig()
    except CheckpointError:
        raise
    except registry.RegistryError as exc:
        raise CheckpointError(str(exc)) from exc
    except Exception as exc:
        raise CheckpointError(f"{path}: could not load the checkpoint ({one_line(exc)})") from exc
