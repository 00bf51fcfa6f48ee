"""The one STFT / iSTFT of the package, and the compressing amplitude transform of the diffusion prior.

All functions are pure and jit-safe, and accept arbitrary leading batch dimensions:
waveforms are ``(..., L)`` and spectrograms ``(..., F, T)`` (frequency, then frames).

:func:`stft` / :func:`istft` take any settings object with ``n_fft``, ``hop_length``, ``num_frames(length)``,
``window()`` (the analysis/synthesis window) and optionally ``pad_mode`` (``"reflect"``, the default, or
``"constant"``): :class:`SpecConfig` here (periodic Hann), :class:`jaxse.rvae.spectral.RVAESpecConfig` (sine
window) for the RVAE. The batched form over zero-padded rows is :func:`jaxse.parallel.batched_stft`.

The defaults reproduce the reference data module: n_fft 510 (256 bins), hop 128, periodic Hann,
centred frames with reflect padding, and the compressing transform ``0.15·|X|^0.5·e^{i∠X}``.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class SpecConfig:
    """Spectrogram settings. Stored in every checkpoint so that a prior is used as it was trained."""

    sample_rate: int = 16000
    n_fft: int = 510
    hop_length: int = 128
    # "exponent": factor·|X|^exponent·e^{i∠X} (the reference); "none": the plain STFT.
    transform: str = "exponent"
    exponent: float = 0.5
    factor: float = 0.15
    # Inference pads the frame axis (with zero frames) to a multiple of this, as the U-Net needs.
    pad_multiple: int = 64

    def __post_init__(self):
        if self.transform not in ("exponent", "none"):
            raise ValueError(f"unknown spectrogram transform {self.transform!r} (expected 'exponent' or 'none')")

    @property
    def num_bins(self) -> int:
        return self.n_fft // 2 + 1

    def num_frames(self, length: int) -> int:
        """Frames the centred STFT gives for ``length`` samples."""
        return 1 + int(length) // self.hop_length

    def padded_frames(self, length: int) -> int:
        n = self.num_frames(length)
        m = self.pad_multiple
        return -(-n // m) * m

    def crop_length(self, num_frames: int) -> int:
        """Samples whose centred STFT has exactly ``num_frames`` frames (the training crop length)."""
        return (int(num_frames) - 1) * self.hop_length

    def window(self, dtype=np.float64) -> np.ndarray:
        """The periodic Hann window of ``n_fft`` samples."""
        return hann_window(self.n_fft, dtype=dtype)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


DEFAULT_SPEC = SpecConfig()


def hann_window(n: int, periodic: bool = True, dtype=np.float32) -> np.ndarray:
    """Hann window; ``periodic=True`` matches ``torch.hann_window(n)``."""
    m = n if periodic else n - 1
    k = np.arange(n, dtype=np.float64)
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * k / m)).astype(dtype)


def _real_dtype(x):
    return jnp.float64 if x.dtype in (jnp.float64, jnp.complex128) else jnp.float32


def stft(x, cfg: SpecConfig = DEFAULT_SPEC):
    """Centred STFT: ``(..., L)`` real -> ``(..., F, 1 + L // hop)`` complex, with ``cfg``'s window and end
    padding (``cfg.pad_mode``: ``"reflect"``, the default, or ``"constant"``)."""
    x = jnp.asarray(x)
    n_fft, hop = cfg.n_fft, cfg.hop_length
    pad_mode = getattr(cfg, "pad_mode", "reflect")
    length = x.shape[-1]
    pad = n_fft // 2
    if pad_mode == "reflect" and length <= pad:
        raise ValueError(f"signal of {length} samples is too short for a reflect-padded STFT with n_fft={n_fft}")
    pad_width = [(0, 0)] * (x.ndim - 1) + [(pad, pad)]
    xp = jnp.pad(x, pad_width, mode=pad_mode)
    n_frames = cfg.num_frames(length)
    idx = np.arange(n_frames)[:, None] * hop + np.arange(n_fft)[None, :]
    window = jnp.asarray(cfg.window(np.float64), dtype=_real_dtype(x))
    frames = xp[..., idx] * window  # (..., T, n_fft)
    spec = jnp.fft.rfft(frames, n=n_fft, axis=-1)  # (..., T, F)
    return jnp.swapaxes(spec, -1, -2)


def istft(spec, length: int, cfg: SpecConfig = DEFAULT_SPEC):
    """Inverse of :func:`stft` (windowed overlap-add / summed squared window), cut to ``length`` samples.

    Like ``torch.istft``, every frame of ``spec`` counts in the window envelope, including any
    zero frames appended for padding.
    """
    spec = jnp.asarray(spec)
    n_fft, hop = cfg.n_fft, cfg.hop_length
    n_frames = spec.shape[-1]
    rdt = _real_dtype(spec)
    w = cfg.window(np.float64)
    window = jnp.asarray(w, dtype=rdt)
    frames = jnp.fft.irfft(jnp.swapaxes(spec, -1, -2), n=n_fft, axis=-1) * window  # (..., T, n_fft)
    total = n_fft + hop * (n_frames - 1)
    idx = np.arange(n_frames)[:, None] * hop + np.arange(n_fft)[None, :]
    out = jnp.zeros(spec.shape[:-2] + (total,), dtype=rdt).at[..., idx].add(frames)
    # (np.add.at with broadcast values crashes numpy 2.4; bincount computes the same sum)
    w2 = np.broadcast_to(w**2, idx.shape)
    env = np.bincount(idx.ravel(), weights=w2.ravel(), minlength=total)
    env = jnp.asarray(np.where(env > 1e-11, env, 1.0), dtype=rdt)
    out = out / env
    start = n_fft // 2
    out = out[..., start:start + length]
    short = length - out.shape[-1]
    if short > 0:
        out = jnp.pad(out, [(0, 0)] * (out.ndim - 1) + [(0, short)])
    return out


def compress(spec, cfg: SpecConfig = DEFAULT_SPEC):
    """Amplitude compression ``factor·|X|^exponent·e^{i∠X}``."""
    if cfg.transform == "none":
        return spec
    return cfg.factor * jnp.abs(spec) ** cfg.exponent * jnp.exp(1j * jnp.angle(spec))


def decompress(spec, cfg: SpecConfig = DEFAULT_SPEC):
    """Exact inverse of :func:`compress`: ``|Y/factor|^(1/exponent)·e^{i∠Y}``."""
    if cfg.transform == "none":
        return spec
    return jnp.abs(spec / cfg.factor) ** (1.0 / cfg.exponent) * jnp.exp(1j * jnp.angle(spec))


def wave_to_spec(x, cfg: SpecConfig = DEFAULT_SPEC):
    """Waveform -> compressed complex spectrogram ``(..., F, T)``."""
    return compress(stft(x, cfg), cfg)


def spec_to_wave(spec, length: int, cfg: SpecConfig = DEFAULT_SPEC, reference_tail_quirk: bool = False):
    """Compressed spectrogram -> waveform of ``length`` samples.

    Frames beyond those that ``length`` samples produce (inference padding) are dropped before the
    iSTFT, so the end of the signal is reconstructed exactly. ``reference_tail_quirk=True`` keeps
    them, as the reference does, which attenuates the last ~119 samples (see golden/README §1).
    """
    if not reference_tail_quirk:
        spec = spec[..., : cfg.num_frames(length)]
    return istft(decompress(spec, cfg), length, cfg)


def pad_frames(spec, multiple: int):
    """Zero-pad the frame axis (last) at the end to a multiple of ``multiple``."""
    n = spec.shape[-1]
    target = -(-n // multiple) * multiple
    if target == n:
        return spec
    return jnp.pad(spec, [(0, 0)] * (spec.ndim - 1) + [(0, target - n)])


def normalize_for_inference(x, cfg: SpecConfig = DEFAULT_SPEC, num_frames: int | None = None, eps: float = 1e-12):
    """Inference input as in the reference: compressed STFT, zero-padded frames, divided by its max.

    Returns ``(Xn, NF)`` with ``Xn = pad(compress(stft(x))) / NF`` and ``NF = max|pad(...)|`` per
    leading index (shape ``(...,)``). ``num_frames`` pads to that many frames instead of the next
    multiple of ``cfg.pad_multiple``. A silent input gives ``Xn = 0`` and ``NF = eps`` (never NaN).
    """
    spec = wave_to_spec(x, cfg)
    if num_frames is None:
        spec = pad_frames(spec, cfg.pad_multiple)
    else:
        extra = num_frames - spec.shape[-1]
        if extra < 0:
            raise ValueError(f"num_frames={num_frames} is smaller than the {spec.shape[-1]} frames of the input")
        spec = jnp.pad(spec, [(0, 0)] * (spec.ndim - 1) + [(0, extra)])
    nf = jnp.max(jnp.abs(spec), axis=(-2, -1))
    nf = jnp.maximum(nf, eps)
    return spec / nf[..., None, None], nf
