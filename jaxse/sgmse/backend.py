"""Enhancement backends of the supervised methods: ``sgmse+`` (the PC sampler of SGMSE+ conditioned on the noisy
spectrogram) and ``supervised`` (one forward of the predictive baseline), for :class:`jaxse.enhance.Enhancer`.

Normalisation (the reference, ``normalize="noisy"``): the noisy waveform is divided by its peak ``m`` before the
STFT and the estimate multiplied by ``m`` after the iSTFT. With the compressed spectrogram
``c(X) = β|X|^α e^{j∠X}`` this is the same as dividing the spectrogram of the raw waveform by ``m^α`` and
multiplying the estimate's spectrogram by it, which is what the engine's normalisation factor does
(:meth:`_PairedBackend.norm_factor`); the factor is computed over the whole file, also when it is chunked.

The sampler (:class:`SGMSEConfig`): ``num_steps`` reverse steps of a reverse-diffusion predictor and
``corrector_steps`` annealed-Langevin corrector steps with snr 0.5, started at ``y + σ(T)z``; one ``lax.scan``
(:func:`jaxse.diffusion.samplers.sample` on the shifted state ``u = x − y``, see :mod:`jaxse.sgmse.models`). The
default is the reference's (the 2309.10457 code: ALD step ``2·(snr·σ)²``, constant step 1/N, last step
noise-free); ``dt="grid"`` gives upstream sgmse's grid step sizes (the last step integrates t_eps → 0).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxse import parallel, registry
from jaxse.diffusion import samplers
from jaxse.diffusion.backend import load_score_checkpoint
from jaxse.core.backend import CheckpointError, MethodBackend
from jaxse.core.loading import checkpoint_path
from jaxse.errors import SettingsError
from jaxse.sgmse.models import score_fn_shifted
from jaxse.spectral import SpecConfig


@dataclasses.dataclass(frozen=True)
class SGMSEConfig:
    """Settings of ``enhance.py --method sgmse+`` (``--config.FIELD``)."""

    method: str = "sgmse+"
    num_steps: int = 30
    snr: float = 0.5
    corrector_steps: int = 1
    corrector: str = "ald"
    predictor: str = "reverse_diffusion"
    corrector_convention: str = "sgmse"  # ALD step 2·(snr·σ)² of the SGMSE+ code ("udiffse": (snr·σ)²)
    dt: str = "reference"  # constant 1/N as the 2309.10457 code; "grid": t_i − t_{i+1}, last step t_eps → 0

    def __post_init__(self):
        if self.method != "sgmse+":
            raise SettingsError(f"SGMSEConfig.method must be 'sgmse+', got {self.method!r}")
        try:
            _ = self.pc  # validates the sampler fields (snr finite and > 0, counts >= 1, the choices)
        except ValueError as exc:
            raise SettingsError(str(exc)) from None

    @property
    def pc(self) -> samplers.PCConfig:
        return samplers.PCConfig(num_steps=self.num_steps, predictor=self.predictor, corrector=self.corrector,
                                 corrector_convention=self.corrector_convention, snr=self.snr,
                                 corrector_steps=self.corrector_steps, dt=self.dt)

    @property
    def nfe(self) -> int:
        return samplers.count_nfe(self.pc)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class SupervisedConfig:
    """Settings of ``enhance.py --method supervised``: none besides the method (the estimate is one forward)."""

    method: str = "supervised"

    def __post_init__(self):
        if self.method != "supervised":
            raise SettingsError(f"SupervisedConfig.method must be 'supervised', got {self.method!r}")

    @property
    def nfe(self) -> int:
        return 1

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class _PairedBackend(MethodBackend):
    """Compressed STFT analysis/synthesis of the priors, normalisation by the noisy waveform's peak."""

    def __init__(self, model, variables, cfg, spec: SpecConfig):
        self.model = model
        self.variables = variables
        self.cfg = cfg
        self.spec = spec
        self.name = cfg.method
        self.quantum = parallel.frame_quantum(model.frame_multiple, spec.pad_multiple)
        self.quantum_note = f"lcm of the padding multiple {spec.pad_multiple} and the network's {model.frame_multiple}"

    def set_compute_dtype(self, dtype: str) -> None:
        """The network's convolutions and attention in ``dtype`` (parameters and sampler state stay float32)."""
        net = dataclasses.replace(self.model.net, dtype=dtype)  # validates the name
        self.model = dataclasses.replace(self.model, net=net)

    def norm_factor(self, wave):
        """``max|wave|^α`` (``α`` the compression exponent): the spectrogram-domain image of dividing the
        waveform by its peak (1 for a silent file)."""
        peak = float(np.max(np.abs(wave))) if np.size(wave) else 0.0
        if not np.isfinite(peak) or peak <= 0:
            return 1.0
        exponent = float(self.spec.exponent) if self.spec.transform == "exponent" else 1.0
        return peak ** exponent

    def analysis(self, waves, lengths, num_frames):
        return parallel.batched_spec(waves, lengths, num_frames, self.spec)

    def synthesis(self, spec, lengths, row_length):
        return parallel.batched_wave(spec, lengths, row_length, self.spec)

    @property
    def nfe(self) -> int:
        return self.cfg.nfe


class SGMSEBackend(_PairedBackend):
    def posterior(self, variables, key, x, mask, cond=None):
        y = x[None]
        u, _ = samplers.sample(key, score_fn_shifted(self.model, variables, y), self.model.sde, self.cfg.pc,
                               y.shape)
        out = u + y
        return (out * mask[None, None, :].astype(out.real.dtype))[0]

    def describe(self) -> str:
        return f"sgmse+, {self.cfg.nfe} network evaluations per segment ({self.cfg.num_steps} PC steps)"


class SupervisedBackend(_PairedBackend):
    def posterior(self, variables, key, x, mask, cond=None):
        out = self.model.predict(variables, x[None])[0]
        return out * mask[None, :].astype(out.real.dtype)

    def describe(self) -> str:
        return "supervised, one network evaluation per segment"


def _load(method: str, family: str, checkpoint):
    default = registry.method(method).default_checkpoint_path()
    path = checkpoint_path(checkpoint, default, family,
                           f"no {family} model is shipped with this installation; pass --checkpoint PATH (a "
                           f"train.py workdir or export of a {family} config, or a reference .ckpt/.npz)")
    return load_score_checkpoint(path, family, lambda p, found: (
        f"{p}: a reference model of the {found!r} family, not {family!r} (the methods of this one: "
        f"{', '.join(registry.methods_of(family))})"))


def load_sgmse(checkpoint, cfg: SGMSEConfig) -> SGMSEBackend:
    model, variables, spec = _load("sgmse+", "sgmse", checkpoint)
    return SGMSEBackend(model, variables, cfg, spec)


def load_supervised(checkpoint, cfg: SupervisedConfig) -> SupervisedBackend:
    model, variables, spec = _load("supervised", "supervised", checkpoint)
    return SupervisedBackend(model, variables, cfg, spec)
