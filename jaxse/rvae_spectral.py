"""STFT of the RVAE-based enhancement methods: 64 ms sine window, 75 % overlap, plain (uncompressed) spectrum.

``n_fft = 1024`` (F = 513 bins at 16 kHz), hop 256, window ``w[n] = sin(π (n + 1/2) / 1024)``, centred frames
(``1 + L // hop`` of them). Waveforms are ``(..., L)``, spectrograms ``(..., F, T)`` (frequency, then frames),
as in :mod:`jaxse.spectral`.

Padding at the two ends (``pad_mode``):

* ``"reflect"`` (default): the training STFT of the reference (``torch.stft(center=True, pad_mode="reflect")``,
  which produced the golden ``x_power``) and ``librosa.stft`` before librosa 0.10.
* ``"constant"``: zeros, the default of ``librosa.stft`` since 0.10, which the reference enhancement scripts
  call (their librosa version is not pinned). Only the first and last two frames differ.

The inverse is the windowed overlap-add divided by the summed squared window (``librosa.istft`` /
``torch.istft``), cut to the requested length.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

PAD_MODES = ("reflect", "constant")


@dataclasses.dataclass(frozen=True)
class RVAESpecConfig:
    sample_rate: int = 16000
    n_fft: int = 1024
    hop_length: int = 256
    pad_mode: str = "reflect"

    def __post_init__(self):
        if self.pad_mode not in PAD_MODES:
            raise ValueError(f"pad_mode must be one of {PAD_MODES}, got {self.pad_mode!r}")

    @property
    def num_bins(self) -> int:
        return self.n_fft // 2 + 1

    def num_frames(self, length: int) -> int:
        return 1 + int(length) // self.hop_length

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def sine_window(n: int = 1024, dtype=np.float32) -> np.ndarray:
    """``sin(π (k + 1/2) / n)``, k = 0..n-1."""
    k = np.arange(n, dtype=np.float64)
    return np.sin(np.pi * (k + 0.5) / n).astype(dtype)


def _rdt(x):
    return jnp.float64 if x.dtype in (jnp.float64, jnp.complex128) else jnp.float32


def _frame_index(n_frames: int, cfg: RVAESpecConfig) -> np.ndarray:
    return np.arange(n_frames)[:, None] * cfg.hop_length + np.arange(cfg.n_fft)[None, :]


def stft(x, cfg: RVAESpecConfig = RVAESpecConfig()):
    """Centred STFT: ``(..., L)`` real -> ``(..., F, 1 + L // hop)`` complex."""
    x = jnp.asarray(x)
    pad = cfg.n_fft // 2
    length = x.shape[-1]
    if cfg.pad_mode == "reflect" and length <= pad:
        raise ValueError(f"signal of {length} samples is too short for a reflect-padded STFT with n_fft={cfg.n_fft}")
    xp = jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(pad, pad)], mode=cfg.pad_mode)
    idx = _frame_index(cfg.num_frames(length), cfg)
    window = jnp.asarray(sine_window(cfg.n_fft, np.float64), _rdt(x))
    spec = jnp.fft.rfft(xp[..., idx] * window, n=cfg.n_fft, axis=-1)  # (..., T, F)
    return jnp.swapaxes(spec, -1, -2)


def istft(spec, length: int, cfg: RVAESpecConfig = RVAESpecConfig()):
    """Inverse of :func:`stft`, ``length`` samples (zero-extended if the frames do not cover them)."""
    spec = jnp.asarray(spec)
    n_frames = spec.shape[-1]
    rdt = _rdt(spec)
    w = sine_window(cfg.n_fft, np.float64)
    frames = jnp.fft.irfft(jnp.swapaxes(spec, -1, -2), n=cfg.n_fft, axis=-1) * jnp.asarray(w, rdt)
    total = cfg.n_fft + cfg.hop_length * (n_frames - 1)
    idx = _frame_index(n_frames, cfg)
    out = jnp.zeros(spec.shape[:-2] + (total,), rdt).at[..., idx].add(frames)
    env = np.bincount(idx.ravel(), weights=np.broadcast_to(w**2, idx.shape).ravel(), minlength=total)
    out = out / jnp.asarray(np.where(env > 1e-11, env, 1.0), rdt)
    start = cfg.n_fft // 2
    out = out[..., start:start + length]
    short = length - out.shape[-1]
    if short > 0:
        out = jnp.pad(out, [(0, 0)] * (out.ndim - 1) + [(0, short)])
    return out
