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
``torch.istft``), cut to the requested length. Both are the package's one STFT (:func:`jaxse.spectral.stft`)
with these settings.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxse import spectral

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

    def window(self, dtype=np.float64) -> np.ndarray:
        """The sine window of ``n_fft`` samples."""
        return sine_window(self.n_fft, dtype)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def sine_window(n: int = 1024, dtype=np.float32) -> np.ndarray:
    """``sin(π (k + 1/2) / n)``, k = 0..n-1."""
    k = np.arange(n, dtype=np.float64)
    return np.sin(np.pi * (k + 0.5) / n).astype(dtype)


def stft(x, cfg: RVAESpecConfig = RVAESpecConfig()):
    """Centred STFT with the sine window: ``(..., L)`` real -> ``(..., F, 1 + L // hop)`` complex
    (:func:`jaxse.spectral.stft` with these settings)."""
    return spectral.stft(x, cfg)


def istft(spec, length: int, cfg: RVAESpecConfig = RVAESpecConfig()):
    """Inverse of :func:`stft`, ``length`` samples (zero-extended if the frames do not cover them)."""
    return spectral.istft(spec, length, cfg)
