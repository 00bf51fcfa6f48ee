"""Clean-speech training data for the diffusion prior (numpy only: no jax import here).

Training rows are random crops of ``spec.crop_length(crop_frames)`` samples (256 frames ->
32640 samples at 16 kHz), each divided by its own peak magnitude. Validation rows are centre
crops, normalised the same way.

Determinism and sharding
------------------------
The rows of the global batch of training step ``step`` are a pure function of ``(seed, step)``
and the file list (:meth:`CleanSpeechDataset.global_batch_plan`), whatever the number of
processes. Process ``p`` of ``P`` takes rows ``[p*B/P, (p+1)*B/P)`` of that plan, so the
concatenation over processes equals the one-process batch exactly, and each process decodes only
the files of its own rows. Crop starts need every planned file's length; those come from the file
headers, read once for all files when the dataset is built (cheap: no decoding).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np

from jaxse.audio import AUDIO_EXTENSIONS, AudioError, find_audio_files, probe_audio, read_audio, resampled_length

if TYPE_CHECKING:  # jaxse.spectral imports jax; only its SpecConfig (a plain dataclass) is used here.
    from jaxse.spectral import SpecConfig

logger = logging.getLogger(__name__)


def peak_normalize_np(x: np.ndarray) -> np.ndarray:
    """Divide each row (last axis) by its peak magnitude; all-zero rows stay zero (no NaN)."""
    x = np.asarray(x, dtype=np.float32)
    peak = np.max(np.abs(x), axis=-1, keepdims=True)
    return np.divide(x, peak, out=np.zeros_like(x), where=peak > 0)


def fit_crop(x: np.ndarray, start: int, length: int) -> np.ndarray:
    """``x[start:start+length]``; a signal shorter than ``length`` is zero-padded symmetrically.

    Padding puts ``pad // 2`` zeros before and ``pad // 2 + pad % 2`` after (``start`` is then
    ignored). ``start`` is clamped to ``[0, len(x) - length]``.
    """
    n = x.shape[-1]
    if n < length:
        pad = length - n
        return np.pad(x, (pad // 2, pad - pad // 2))
    start = min(max(int(start), 0), n - length)
    return x[start:start + length]


class CleanSpeechDataset:
    """Clean speech under ``root`` (recursive), resampled to ``sample_rate`` on load.

    Args:
      root: a directory (searched recursively with :func:`jaxse.audio.find_audio_files`) or a file.
      sample_rate: rate every file is resampled to when decoded (16 kHz for the prior).
      crop_frames: STFT frames per training crop; the crop is ``spec.crop_length(crop_frames)`` samples.
      spec: the spectrogram settings (``jaxse.spectral.SpecConfig``); default ``SpecConfig(sample_rate)``.
        Its ``sample_rate`` must equal ``sample_rate``.
      extensions: file extensions to include.

    File headers are read at construction; files that are unreadable or empty are skipped with a
    logged warning (file indices refer to the remaining ones, identically in every process). If
    none remain, ``ValueError``. Audio is decoded lazily and cached in memory as float32, so a
    process decodes only the files it uses. A file that passes the header check but fails to
    decode (e.g. NaN samples, truncated data) is logged once and treated as silence from then on:
    its crops are all-zero rows (the same in every process, so sharding stays exact).
    """

    def __init__(
        self,
        root,
        sample_rate: int = 16000,
        crop_frames: int = 256,
        spec: "SpecConfig | None" = None,
        extensions=AUDIO_EXTENSIONS,
    ):
        if spec is None:
            from jaxse.spectral import SpecConfig  # imports jax; pass ``spec`` to have it already loaded

            spec = SpecConfig(sample_rate=int(sample_rate))
        if int(spec.sample_rate) != int(sample_rate):
            raise ValueError(f"spec.sample_rate={spec.sample_rate} differs from sample_rate={sample_rate}")
        if int(crop_frames) < 1:
            raise ValueError(f"crop_frames must be >= 1, got {crop_frames}")
        self.root = Path(root)
        self.sample_rate = int(sample_rate)
        self.crop_frames = int(crop_frames)
        self.spec = spec
        self.crop_length = int(spec.crop_length(self.crop_frames))
        if self.crop_length < 1:
            raise ValueError(f"crop of {crop_frames} frames has {self.crop_length} samples")

        candidates = find_audio_files(self.root, extensions)
        files, lengths, skipped = [], [], []
        for path in candidates:
            try:
                info = probe_audio(path)
            except AudioError as exc:
                logger.warning("skipping unreadable audio file: %s", exc)
                skipped.append(path)
                continue
            files.append(path)
            lengths.append(resampled_length(info.num_frames, info.sample_rate, self.sample_rate))
        if not files:
            extra = f" ({len(skipped)} unreadable files skipped)" if skipped else ""
            raise ValueError(f"{self.root}: no readable audio files ({', '.join(extensions)}){extra}")
        self._files: list[Path] = files
        self.skipped: list[Path] = skipped
        # Lengths (samples at ``sample_rate``) from the headers; used to plan crop starts.
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self._cache: dict[int, np.ndarray] = {}
        self._failed: set[int] = set()
        self.num_decodes = 0  # files decoded so far (cache misses); for tests and diagnostics

    # ------------------------------------------------------------------ files and decoding

    def __len__(self) -> int:
        return len(self._files)

    @property
    def files(self) -> list[Path]:
        """The usable files, sorted; indices into this list are the file indices of the plans."""
        return list(self._files)

    @property
    def total_duration(self) -> float:
        """Total duration in seconds (from the headers)."""
        return float(self.lengths.sum()) / self.sample_rate

    @property
    def cached_indices(self) -> list[int]:
        """Indices of the files decoded and held in memory."""
        return sorted(self._cache)

    def clear_cache(self) -> None:
        self._cache.clear()

    def load(self, index: int) -> np.ndarray:
        """Whole file ``index`` as float32 at ``sample_rate`` (decoded once, then cached)."""
        index = int(index)
        x = self._cache.get(index)
        if x is not None:
            return x
        if not 0 <= index < len(self._files):
            raise IndexError(f"file index {index} out of range for {len(self._files)} files")
        self.num_decodes += 1
        try:
            x = read_audio(self._files[index], target_sr=self.sample_rate).samples
        except AudioError as exc:
            if index not in self._failed:
                logger.warning("audio file failed to decode, its crops will be silent: %s", exc)
                self._failed.add(index)
            x = np.zeros(int(self.lengths[index]), np.float32)
        x = np.ascontiguousarray(x, dtype=np.float32)
        x.setflags(write=False)
        self._cache[index] = x
        return x

    def crop(self, index: int, start: int) -> np.ndarray:
        """Peak-normalised crop of ``crop_length`` samples of file ``index`` from ``start`` (see :func:`fit_crop`)."""
        return peak_normalize_np(fit_crop(self.load(index), start, self.crop_length))

    def centre_crop(self, index: int) -> np.ndarray:
        """Peak-normalised centre crop of file ``index``: start ``(L - crop) // 2``, or padded if shorter."""
        x = self.load(index)
        return peak_normalize_np(fit_crop(x, max(x.shape[-1] - self.crop_length, 0) // 2, self.crop_length))

    # ------------------------------------------------------------------ training

    def global_batch_plan(self, seed: int, step: int, global_batch_size: int) -> list[tuple[int, int]]:
        """``(file_index, crop_start)`` of each row of the global batch of training step ``step``.

        A pure function of ``(seed, step, global_batch_size)`` and the file list, independent of
        the process count: ``rng = np.random.default_rng([seed, step])`` draws the files uniformly
        with replacement, then one ``U(0, 1)`` per row gives ``start = int(U(0, L - crop))``. For
        files not longer than the crop the start is 0 (they are padded, not cropped).
        """
        seed, step, batch = int(seed), int(step), int(global_batch_size)
        if seed < 0 or step < 0:
            raise ValueError(f"seed and step must be non-negative, got seed={seed}, step={step}")
        if batch < 1:
            raise ValueError(f"global_batch_size must be >= 1, got {global_batch_size}")
        rng = np.random.default_rng([seed, step])
        idx = rng.integers(0, len(self._files), size=batch)
        u = rng.random(batch)
        span = np.maximum(self.lengths[idx] - self.crop_length, 0)
        starts = (u * span).astype(np.int64)
        return [(int(i), int(s)) for i, s in zip(idx, starts)]

    def train_batch(
        self,
        seed: int,
        step: int,
        global_batch_size: int,
        process_index: int = 0,
        process_count: int = 1,
    ) -> np.ndarray:
        """This process's rows of the global training batch: float32 ``(B // P, crop_length)``.

        Rows ``[p*B/P, (p+1)*B/P)`` of :meth:`global_batch_plan`, each peak-normalised.
        """
        lo, hi = _shard_bounds(global_batch_size, process_index, process_count)
        plan = self.global_batch_plan(seed, step, global_batch_size)[lo:hi]
        return np.stack([self.crop(i, s) for i, s in plan]).astype(np.float32, copy=False)

    # ------------------------------------------------------------------ validation

    def num_valid_examples(self, max_examples: int | None = None) -> int:
        n = len(self._files)
        return n if max_examples is None else min(n, int(max_examples))

    def num_valid_batches(self, batch_size: int, max_examples: int | None = None) -> int:
        """Number of (full) batches :meth:`valid_batches` yields."""
        return self.num_valid_examples(max_examples) // int(batch_size)

    def valid_batches(
        self,
        batch_size: int,
        max_examples: int | None = None,
        process_index: int = 0,
        process_count: int = 1,
    ) -> Iterator[np.ndarray]:
        """Deterministic validation batches: peak-normalised centre crops of the sorted files.

        Uses the first ``max_examples`` files (all by default) in order, grouped into global
        batches of ``batch_size``; each yields this process's rows ``[p*B/P, (p+1)*B/P)`` as float32
        ``(batch_size // process_count, crop_length)``. The last partial batch is DROPPED (so that
        every process yields the same number of equally shaped batches and no example is counted
        twice); :meth:`num_valid_batches` says how many there are. ``ValueError`` if that is zero.
        """
        lo, hi = _shard_bounds(batch_size, process_index, process_count)
        batch_size = int(batch_size)
        n_batches = self.num_valid_batches(batch_size, max_examples)
        if n_batches == 0:
            raise ValueError(
                f"batch_size={batch_size} exceeds the {self.num_valid_examples(max_examples)} validation "
                "examples: no full batch"
            )
        return self._iter_valid(batch_size, n_batches, lo, hi)  # arguments checked eagerly, not on first next()

    def _iter_valid(self, batch_size: int, n_batches: int, lo: int, hi: int) -> Iterator[np.ndarray]:
        for b in range(n_batches):
            rows = range(b * batch_size + lo, b * batch_size + hi)
            yield np.stack([self.centre_crop(i) for i in rows]).astype(np.float32, copy=False)


def _shard_bounds(global_batch_size: int, process_index: int, process_count: int) -> tuple[int, int]:
    batch, p, count = int(global_batch_size), int(process_index), int(process_count)
    if count < 1:
        raise ValueError(f"process_count must be >= 1, got {process_count}")
    if not 0 <= p < count:
        raise ValueError(f"process_index={process_index} is outside [0, {count})")
    if batch < 1 or batch % count:
        raise ValueError(
            f"global batch size {global_batch_size} is not a positive multiple of the process count {count}"
        )
    per = batch // count
    return p * per, (p + 1) * per
