"""The enhancement contract: what a method gives the engine (:class:`MethodBackend`), an optional extra
per-utterance input (:class:`Conditioning`), and the error of a checkpoint that cannot be used
(:class:`CheckpointError`). The engine (:mod:`jaxse.engine`) batches, shards, chunks and writes; a family's backend
supplies the spectral front-end, the normalisation and the per-row posterior."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from jaxse.errors import JaxseError


class CheckpointError(JaxseError):
    """No usable checkpoint (one line, meant for the user)."""


class MethodBackend:
    """What an enhancement method gives :class:`Enhancer`; batching, devices, chunks, keys and files are shared.

    Attributes (set by subclasses):
      name: the method as ``enhance.py --method`` names it (``"udiffse+"``, ``"rvae-ldem"``, ...).
      cfg: the method's settings (a frozen dataclass: :class:`jaxse.diffusion.udiffse.PosteriorConfig`,
        :class:`jaxse.rvae.posterior.RVAEPosteriorConfig`).
      spec: STFT settings with ``sample_rate``, ``n_fft``, ``hop_length`` and ``num_frames(length)``; the
        Enhancer resamples nothing itself, waveforms come at ``spec.sample_rate``.
      variables: network variables; the Enhancer replicates them on every device and passes them back to
        :meth:`posterior` inside the compiled program (so that they are arguments, not constants).
      model: the model object of the method's family that the backend runs (``model.score``, ``model.decode``,
        ...: what the benchmark times on its own), ``None`` where there is none.
      quantum: frame counts of rows (buckets, ``chunk_frames``) must be multiples of this;
        ``quantum_note`` says why (for the error message).
      conditioning: ``None``, or the :class:`Conditioning` the posterior takes besides the noisy signal (e.g.
        visual features); the program then gets each row's part of it, cut with the waveform's chunk plan.

    The compiled program of a bucket of ``T`` frames is, per device and for its rows ``u``::

        X, mask = analysis(waves, lengths, T)               # (U, F, T), zero on padding frames
        S_u = posterior(variables, key_u, X_u / NF_u, mask_u)   # vmapped over the rows
        waves = synthesis(S · NF, lengths, row_length)      # (U, row_length), zero past each length

    with ``NF_u = norm_factor(whole file)`` computed on the host. With a :attr:`conditioning`, the posterior
    is ``posterior(variables, key_u, X_u / NF_u, mask_u, cond=(C_u, n_u))``: ``C_u`` the row's conditioning
    frames ``(K, dim)`` zero-padded to the bucket's ``K``, ``n_u`` how many are real.
    """

    name: str = ""
    conditioning: "Conditioning | None" = None
    cfg: Any = None
    spec: Any = None
    variables: Any = None
    model: Any = None
    quantum: int = 64
    quantum_note: str = "the bucket quantum"

    def norm_factor(self, wave: np.ndarray) -> float:
        """Normalisation factor of a whole signal (host side, > 0)."""
        raise NotImplementedError

    def analysis(self, waves, lengths, num_frames: int):
        """``(U, L)`` zero-padded rows + lengths -> ``(X (U, F, num_frames), mask (U, num_frames))`` (traced)."""
        raise NotImplementedError

    def synthesis(self, spec, lengths, row_length: int):
        """Inverse of :meth:`analysis`: ``(U, F, T)`` -> ``(U, row_length)`` waveforms, zero past each length."""
        raise NotImplementedError

    def posterior(self, variables, key, x, mask, cond=None):
        """One row: ``X (F, T)`` normalised, ``mask (T,)`` -> speech estimate ``(F, T)`` (traced, vmapped);
        ``cond``: ``(frames (K, dim), count)`` of the row's conditioning, only with a :attr:`conditioning`."""
        raise NotImplementedError

    @property
    def nfe(self) -> int:
        """Network evaluations per row (the figure in the stats)."""
        raise NotImplementedError

    def cost(self) -> dict:
        """Cost figures per row for the stats (network passes, iterations)."""
        return {"nfe": self.nfe}

    def set_compute_dtype(self, dtype: str) -> None:
        """Run the network's convolutions and attention in ``dtype`` ("float32" or "bfloat16"; parameters and
        the sampler's state stay float32). ``ValueError`` for a method whose network has no such option."""
        if dtype != "float32":
            raise ValueError(f"{self.name}: its network computes in float32 only (no {dtype} option)")

    def describe(self) -> str:
        """One line about the method and its cost per segment (printed by ``enhance.py``)."""
        return f"{self.name}, {self.nfe} network evaluations per segment"

    def load_conditioning(self, root, relative_path) -> np.ndarray:
        """The :attr:`conditioning` input of the input file at ``relative_path`` under the folder ``root`` (e.g.
        ``root/REL.npy`` visual features), as an array ``(frames, dim)``. Only a method with a
        :attr:`conditioning` has one; ``ValueError`` (one line) for a missing or bad file."""
        raise NotImplementedError(f"{self.name} takes no conditioning input")


@dataclasses.dataclass(frozen=True)
class Conditioning:
    """A per-utterance input that a method's posterior takes besides the noisy waveform: a stream of
    ``dim``-dimensional frames at ``rate`` frames per second (e.g. lip features at 25 fps), an array
    ``(frames, dim)`` per utterance. The engine gives each row the frames of its time span
    (:meth:`span`): the whole stream for a row of its own, and for a chunk starting at sample ``s`` of ``n``
    the frames ``floor(s·rate/sr)`` up to ``ceil((s + n)·rate/sr)``, zero-padded to the bucket's size."""

    name: str
    rate: float
    dim: int
    dtype: str = "float32"

    def span(self, start: int, length: int, sample_rate: int) -> tuple[int, int]:
        """``(first, end)`` frame indices covering samples ``[start, start + length)``."""
        first = int(math.floor(start * self.rate / sample_rate))
        end = int(math.ceil((start + length) * self.rate / sample_rate))
        return first, max(end, first + 1)

    def max_frames(self, row_length: int, sample_rate: int) -> int:
        """Most frames a row of ``row_length`` samples can hold (any start): the program's padded size."""
        return int(math.ceil(row_length * self.rate / sample_rate)) + 1

    def check(self, cond, length: int, sample_rate: int, tolerance_s: float = 1.0) -> np.ndarray:
        """``cond`` as a ``(frames, dim)`` array for a waveform of ``length`` samples; ``ValueError`` (one
        line) for a wrong shape or a duration more than ``tolerance_s`` away from the audio's."""
        c = np.asarray(cond, np.dtype(self.dtype))
        if c.ndim != 2 or c.shape[1] != self.dim:
            raise ValueError(f"{self.name}: expected an array (frames, {self.dim}), got shape {c.shape}")
        if not np.isfinite(c).all():
            raise ValueError(f"{self.name}: non-finite values")
        audio_s, cond_s = length / sample_rate, c.shape[0] / self.rate
        if abs(audio_s - cond_s) > tolerance_s:
            raise ValueError(f"{self.name}: {cond_s:.2f} s of frames for {audio_s:.2f} s of audio")
        return c
