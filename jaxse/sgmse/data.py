"""Clean/noisy training pairs for SGMSE+ speech enhancement (numpy only: no jax import here).

Two data sets, used by the training loop exactly like :class:`jaxse.data.CleanSpeechDataset` (the same
base, :class:`jaxse.data.CropDataset`: the same method names and arguments), whose batch methods return dicts of float32 arrays
``{"clean": (rows, crop_length), "noisy": (rows, crop_length)}`` instead of one array:

* :class:`PairedSpeechDataset`: a pre-mixed corpus in the layout of the SGMSE+ reference,
  ``ROOT/clean/<rel>`` and ``ROOT/noisy/<rel>`` with identical relative paths; a training row takes the
  same segment of both files.
* :class:`MixingDataset`: clean speech mixed with noise recordings on the fly, at an SNR drawn per row.

Normalisation (the reference's ``normalize="noisy"``): both signals of a row are divided by the peak
magnitude of its noisy signal, so every non-silent noisy row peaks at exactly 1; a row whose noisy signal
is all zero comes out all zero (clean included), never NaN.

Determinism and sharding are those of :mod:`jaxse.data`: the rows of the global batch of step ``step`` are a
pure function of ``(seed, step)``, the file lists and the settings, whatever the number of processes;
process ``p`` of ``P`` takes rows ``[p*B/P, (p+1)*B/P)`` and decodes only the files of its own rows. Decoded
audio (float32) goes through a :class:`jaxse.data.cache.DecodeCache` (unbounded unless one is given or set with
``set_cache``: the training loop's bounded one of ``data.cache_mb``).
"""

from __future__ import annotations

import copy
import logging
import math
from pathlib import Path
from typing import NamedTuple

import numpy as np

from jaxse.audio import (AUDIO_EXTENSIONS, AudioError, find_audio_files, is_silent, read_audio, resampled_length,
                         snr_gain)
from jaxse.errors import one_line
from jaxse.data import (CleanSpeechDataset, CropDataset, decode_or_silence, fit_crop, resolve_crop_spec,
                        split_roots)
from jaxse.data.cache import DecodeCache
from jaxse.data.files import probe_header

logger = logging.getLogger(__name__)

__all__ = ["MixRow", "MixingDataset", "PairedSpeechDataset", "mix_at_snr", "normalize_pair"]


# ---------------------------------------------------------------------------------------------- helpers


def normalize_pair(clean: np.ndarray, noisy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(clean / peak, noisy / peak)`` as float32 with ``peak = max |noisy|`` along the last axis.

    Computed in float64 (``noisy / peak`` of the peak sample is exactly 1). Rows whose noisy signal is all
    zero give all-zero clean and noisy rows (no NaN).
    """
    c = np.asarray(clean, dtype=np.float64)
    n = np.asarray(noisy, dtype=np.float64)
    peak = np.max(np.abs(n), axis=-1, keepdims=True)
    ok = peak > 0
    c = np.divide(c, peak, out=np.zeros_like(c), where=ok)
    n = np.divide(n, peak, out=np.zeros_like(n), where=ok)
    return c.astype(np.float32), n.astype(np.float32)


def mix_at_snr(clean: np.ndarray, noise: np.ndarray, snr_db: float) -> tuple[np.ndarray, float]:
    """``(clean + g * noise, g)`` with ``10 log10(sum(clean^2) / sum((g noise)^2)) == snr_db``.

    The gain is :func:`jaxse.audio.snr_gain`, except for silent signals (peak below one 16-bit LSB,
    :func:`jaxse.audio.is_silent`), where no SNR can be met: silent noise gives ``g = 0`` (the
    mixture is the clean signal), and silent clean speech with audible noise gives ``g = 1`` (the mixture is
    the noise at the level of its file). Computed in float64; the mixture is returned as float64.
    """
    c = np.asarray(clean, dtype=np.float64)
    z = np.asarray(noise, dtype=np.float64)
    if is_silent(z):
        gain = 0.0
    elif is_silent(c):
        gain = 1.0
    else:
        gain = snr_gain(c, z, float(snr_db))
    return c + gain * z, gain


def _min_noise_length(spec) -> int:
    """One STFT frame: ``spec.n_fft`` samples, else two hops, else one sample."""
    n_fft = getattr(spec, "n_fft", None)
    if n_fft is not None:
        return int(n_fft)
    hop = getattr(spec, "hop_length", None)
    return 2 * int(hop) if hop is not None else 1


def _looped(x: np.ndarray, start: int, count: int) -> np.ndarray:
    """``count`` samples of ``x`` from ``start``, ``x`` treated as circular (tiled as often as needed)."""
    n = x.shape[0]
    start = int(start) % n
    if start + count <= n:
        return x[start:start + count]
    reps = -(-(start + count) // n)
    return np.tile(x, reps)[start:start + count]


def _check_snr_range(snr_range) -> tuple[float, float]:
    bad = ValueError(f"snr_range must be two numbers (lo, hi) in dB, got {snr_range!r}")
    if isinstance(snr_range, (str, bytes)) or not hasattr(snr_range, "__iter__"):
        raise bad
    values = list(snr_range)
    if len(values) != 2 or any(isinstance(v, (bool, np.bool_, str, bytes)) for v in values):
        raise bad
    try:
        lo, hi = (float(v) for v in values)
    except (TypeError, ValueError):
        raise bad from None
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"snr_range must be finite, got ({lo}, {hi})")
    if lo > hi:
        raise ValueError(f"snr_range is reversed: lo={lo} > hi={hi} dB")
    return lo, hi


def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


# ---------------------------------------------------------------------------------------------- common part


class _PairBase(CropDataset):
    """Batch assembly shared by both data sets; lengths, chunks, training shards and validation batching are
    those of :class:`jaxse.data.CropDataset`.

    Subclasses set ``sample_rate``, ``spec``, ``crop_frames``, ``crop_length`` and implement ``lengths`` (of the
    clean files), ``files``, :meth:`global_batch_plan`, ``_train_pair(row)`` and ``_valid_pair(plan, k)``.
    Batches are ``{"clean", "noisy"}`` dicts: float32 ``(rows, crop_length)`` each, normalised by the noisy peak.
    """

    @staticmethod
    def _stack(pairs) -> dict[str, np.ndarray]:
        pairs = list(pairs)
        return {
            "clean": np.stack([c for c, _ in pairs]).astype(np.float32, copy=False),
            "noisy": np.stack([n for _, n in pairs]).astype(np.float32, copy=False),
        }

    def _rows(self, plan) -> dict[str, np.ndarray]:
        return self._stack(self._train_pair(row) for row in plan)

    def _valid_rows(self, plan, start: int, stop: int) -> dict[str, np.ndarray]:
        return self._stack(self._valid_pair(plan, k) for k in range(start, stop))


# ---------------------------------------------------------------------------------------------- paired corpus


class PairedSpeechDataset(_PairBase):
    """A pre-mixed corpus: ``ROOT/clean/<rel>`` and ``ROOT/noisy/<rel>`` with identical relative paths.

    Args:
      root: a directory holding ``clean/`` and ``noisy/``, or several of them (a list, or one
        comma-separated string); their pairs are used together, in the order of the roots.
      sample_rate: rate every file is resampled to when decoded.
      crop_frames: STFT frames per training crop (``spec.crop_length(crop_frames)`` samples, or
        ``(crop_frames - 1) * hop_length``).
      spec: spectrogram settings (default ``jaxse.spectral.SpecConfig(sample_rate)``, imported lazily).
      extensions: file extensions to include.

    The pairs are listed from the clean side (sorted). Every problem found when the data set is built is a
    one-line ``ValueError``: a missing ``clean/`` or ``noisy/`` directory, files present on one side only,
    an unreadable file (no file is skipped: the pairs would misalign), a pair whose lengths (at
    ``sample_rate``, from the headers) differ, or no pair at all. A pair that passes the header checks but
    fails to decode later (or decodes to unequal lengths) is logged once and gives all-zero rows from then
    on, the same in every process.

    Training row: ``start`` drawn as in :meth:`jaxse.data.CleanSpeechDataset.global_batch_plan` (files
    uniformly with replacement), the same ``[start, start + crop_length)`` taken from both files (files
    shorter than the crop are zero-padded symmetrically, :func:`jaxse.data.fit_crop`), then
    :func:`normalize_pair`. Validation rows: centre crops, or every whole chunk with ``chunks=True``.
    """

    def __init__(self, root, sample_rate: int = 16000, crop_frames: int = 256, spec=None,
                 extensions=AUDIO_EXTENSIONS, cache: DecodeCache | None = None):
        self.sample_rate = int(sample_rate)
        self.spec, self.crop_length = resolve_crop_spec(spec, self.sample_rate, crop_frames)
        self.crop_frames = int(crop_frames)
        self.roots = split_roots(root)
        self.root = self.roots[0] if len(self.roots) == 1 else Path(",".join(map(str, self.roots)))
        clean_files, noisy_files, lengths = [], [], []
        for r in self.roots:
            c, n, ln = self._scan_root(r, extensions)
            clean_files += c
            noisy_files += n
            lengths += ln
        if not clean_files:
            raise ValueError(f"{self.root}: no audio files ({', '.join(extensions)}) in clean/ and noisy/")
        self._files: list[Path] = clean_files
        self._noisy_files: list[Path] = noisy_files
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self._init_decoding(cache)

    def _scan_root(self, root: Path, extensions) -> tuple[list[Path], list[Path], list[int]]:
        clean_dir, noisy_dir = root / "clean", root / "noisy"
        missing = [d.name + "/" for d in (clean_dir, noisy_dir) if not d.is_dir()]
        if missing:
            raise ValueError(f"{root}: expected the paired layout {root}/clean/ and {root}/noisy/ with the same "
                             f"relative file names, but {' and '.join(missing)} "
                             f"{'is' if len(missing) == 1 else 'are'} missing")
        clean_rel = [p.relative_to(clean_dir).as_posix() for p in find_audio_files(clean_dir, extensions)]
        noisy_rel = [p.relative_to(noisy_dir).as_posix() for p in find_audio_files(noisy_dir, extensions)]
        noisy_set, clean_set = set(noisy_rel), set(clean_rel)
        only_clean = [r for r in clean_rel if r not in noisy_set]
        only_noisy = [r for r in noisy_rel if r not in clean_set]
        if only_clean or only_noisy:
            parts = []
            if only_clean:
                parts.append(f"{_plural(len(only_clean), 'file', 'files')} of clean/ "
                             f"{'has' if len(only_clean) == 1 else 'have'} no counterpart in noisy/ "
                             f"(first: {only_clean[0]})")
            if only_noisy:
                parts.append(f"{_plural(len(only_noisy), 'file', 'files')} of noisy/ "
                             f"{'has' if len(only_noisy) == 1 else 'have'} none in clean/ (first: {only_noisy[0]})")
            raise ValueError(f"{root}: " + "; ".join(parts))
        clean_files = [clean_dir / r for r in clean_rel]
        noisy_files = [noisy_dir / r for r in clean_rel]
        lengths, mismatches = [], []
        for rel, cp, npth in zip(clean_rel, clean_files, noisy_files):
            lc, ln = self._probe_length(cp), self._probe_length(npth)
            if lc != ln:
                mismatches.append((rel, lc, ln))
            lengths.append(lc)
        if mismatches:
            rel, lc, ln = mismatches[0]
            more = f" (and {len(mismatches) - 1} more pairs)" if len(mismatches) > 1 else ""
            raise ValueError(f"{root}: clean/{rel} has {lc} samples but noisy/{rel} has {ln} "
                             f"(at {self.sample_rate} Hz); paired files must have equal lengths{more}")
        return clean_files, noisy_files, lengths

    def _probe_length(self, path: Path) -> int:
        try:
            frames, rate = probe_header(path)
        except AudioError as exc:
            raise ValueError(f"unreadable file in a paired data set: {one_line(exc, None)}") from None
        return resampled_length(frames, rate, self.sample_rate)

    def with_crop_frames(self, crop_frames: int) -> "PairedSpeechDataset":
        """The same pairs at another crop length (lengths and decoded audio shared, nothing read again)."""
        crop_frames = int(crop_frames)
        if crop_frames == self.crop_frames:
            return self
        _, length = resolve_crop_spec(self.spec, self.sample_rate, crop_frames)
        view = copy.copy(self)  # shares the file lists, lengths, the decode cache and the failed set
        view.crop_frames, view.crop_length = crop_frames, length
        return view

    @property
    def noisy_files(self) -> list[Path]:
        """The noisy file of each pair, in the order of :attr:`files`."""
        return list(self._noisy_files)

    def _key(self, index: int) -> tuple:
        return ("pair", str(self._files[index]), str(self._noisy_files[index]), self.sample_rate)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """``(clean, noisy)`` of pair ``index``, float32 at ``sample_rate`` (through the cache)."""
        index = int(index)
        if not 0 <= index < len(self._files):
            raise IndexError(f"file index {index} out of range for {len(self._files)} pairs")
        pair = self._cache.get(self._key(index))
        if pair is not None:
            return pair
        self.num_decodes += 1

        def decode():
            c = read_audio(self._files[index], target_sr=self.sample_rate).samples
            n = read_audio(self._noisy_files[index], target_sr=self.sample_rate).samples
            if c.shape != n.shape:
                raise AudioError(f"{self._files[index]}: decoded to {c.shape[0]} samples but its noisy file "
                                 f"{self._noisy_files[index]} to {n.shape[0]}")
            return c, n

        pair = decode_or_silence(decode, self.lengths[index], self._failed, index, "audio pair", parts=2)
        return self._cache.put(self._key(index), pair)

    def crop_pair(self, index: int, start: int) -> tuple[np.ndarray, np.ndarray]:
        """Normalised ``(clean, noisy)`` crops of pair ``index`` from ``start`` (see :func:`fit_crop`)."""
        c, n = self.load(index)
        return normalize_pair(fit_crop(c, start, self.crop_length), fit_crop(n, start, self.crop_length))

    def global_batch_plan(self, seed: int, step: int, global_batch_size: int) -> list[tuple[int, int]]:
        """``(file_index, crop_start)`` of each row of the global batch of step ``step``.

        The draws of :meth:`jaxse.data.CleanSpeechDataset.global_batch_plan`: ``np.random.default_rng([seed,
        step])``, files uniformly with replacement, then ``start = int(U(0, 1) * max(L - crop, 0))``.
        """
        rng, batch = self._plan_rng(seed, step, global_batch_size)
        idx = rng.integers(0, len(self._files), size=batch)
        u = rng.random(batch)
        starts = (u * np.maximum(self.lengths[idx] - self.crop_length, 0)).astype(np.int64)
        return [(int(i), int(s)) for i, s in zip(idx, starts)]

    def _train_pair(self, row):
        return self.crop_pair(*row)

    def _valid_pair(self, plan, k: int):
        return self.crop_pair(*plan[k])


# ---------------------------------------------------------------------------------------------- mixing


class MixRow(NamedTuple):
    """One row of a :class:`MixingDataset` batch: the clean crop and the noise mixed into it."""

    index: int  # clean file
    start: int  # clean crop start
    noise_index: int
    noise_offset: int  # first noise sample (at ``sample_rate``), then looped
    snr_db: float


class MixingDataset(_PairBase):
    """Clean speech mixed with noise recordings on the fly, at a random SNR per row.

    Args:
      clean_root: clean speech, as the ``root`` of :class:`jaxse.data.CleanSpeechDataset` (wrapped inside:
        its errors are this data set's errors).
      noise_root: noise recordings (a directory searched recursively, a file, or several as a list or
        comma-separated string); resampled to ``sample_rate`` and mixed to mono when decoded.
      sample_rate, crop_frames, spec, extensions: as for :class:`jaxse.data.CleanSpeechDataset`.
      snr_range: ``(lo, hi)`` in dB; each training row's SNR is uniform in ``[lo, hi]`` (``lo == hi``: fixed).
      noise_seed_offset: shifts the noise stream (another noise draw for the same clean rows).

    Training row ``r`` of step ``step``: the clean crop of row ``r`` of the clean data set's own
    :meth:`~jaxse.data.CleanSpeechDataset.global_batch_plan` (the raw crop, before its peak normalisation),
    and from ``np.random.default_rng([seed, step, 1 + noise_seed_offset])``, drawn for the whole global batch
    (so independent of the process count): the noise file (uniform, with replacement; one draw per row),
    then an offset uniform in ``[0, noise_len)`` per row, then an SNR per row. The noise segment is
    ``crop_length`` samples of the decoded noise from the offset, looping back to its start (a noise
    shorter than the crop is tiled). ``noisy = clean + g * noise`` (:func:`mix_at_snr`: ``g`` meets the SNR
    over the crop; silent noise gives ``g = 0``, a silent clean crop ``g = 1``), then :func:`normalize_pair`.

    Validation example ``k`` (of :meth:`valid_plan`): the clean centre crop (or chunk) and a noise file,
    offset and SNR drawn in that order from ``np.random.default_rng([VALID_SEED, k])``: the same in every
    run and for every process count (``noise_seed_offset`` does not change it).

    Bad input is a one-line ``ValueError`` from the constructor: a reversed, non-finite or malformed
    ``snr_range``; a missing ``noise_root`` or one without readable audio (unreadable noise files are
    skipped with a warning, as clean ones are); a noise file shorter than one STFT frame (``spec.n_fft``
    samples; without ``n_fft``, two hops) at ``sample_rate``. A noise file that passes its header check but
    fails to decode later is logged once and treated as silence.
    """

    VALID_SEED = 20231
    """Seed of the validation noise draws (``default_rng([VALID_SEED, k])`` for example ``k``)."""

    def __init__(self, clean_root, noise_root, sample_rate: int = 16000, crop_frames: int = 256, spec=None,
                 snr_range=(-5.0, 5.0), extensions=AUDIO_EXTENSIONS, noise_seed_offset: int = 0,
                 cache: DecodeCache | None = None):
        self.snr_range = _check_snr_range(snr_range)
        self.noise_seed_offset = int(noise_seed_offset)
        if self.noise_seed_offset < 0:
            raise ValueError(f"noise_seed_offset must be non-negative, got {noise_seed_offset}")
        try:
            self.clean_dataset = CleanSpeechDataset(clean_root, sample_rate=sample_rate, crop_frames=crop_frames,
                                                    spec=spec, extensions=extensions, cache=cache)
        except FileNotFoundError as exc:  # a missing clean root: a bad input like the others
            raise ValueError(f"no clean speech: {one_line(exc, None)}") from None
        self.sample_rate = self.clean_dataset.sample_rate
        self.spec = self.clean_dataset.spec
        self.crop_frames = self.clean_dataset.crop_frames
        self.crop_length = self.clean_dataset.crop_length
        self.noise_roots = split_roots(noise_root)
        self.noise_root = (self.noise_roots[0] if len(self.noise_roots) == 1
                           else Path(",".join(map(str, self.noise_roots))))
        self._scan_noise(extensions)
        self._cache = self.clean_dataset.cache  # one cache for the clean and the noise files
        self._noise_failed: set[int] = set()
        self._noise_decodes = [0]  # in a list so that with_crop_frames views share the count

    def _scan_noise(self, extensions) -> None:
        candidates, missing = [], []
        for r in self.noise_roots:
            try:
                candidates += find_audio_files(r, extensions)
            except FileNotFoundError:
                missing.append(str(r))
        files, lengths, skipped = [], [], []
        min_len = _min_noise_length(self.spec)
        for path in candidates:
            try:
                frames, rate = probe_header(path)
            except AudioError as exc:
                logger.warning("skipping unreadable noise file: %s", exc)
                skipped.append(path)
                continue
            n = resampled_length(frames, rate, self.sample_rate)
            if n < min_len:
                raise ValueError(f"{path}: noise file of {n} samples at {self.sample_rate} Hz is shorter than one "
                                 f"STFT frame ({min_len} samples)")
            files.append(path)
            lengths.append(n)
        if not files:
            why = [f"no such directory: {', '.join(missing)}"] if missing else []
            why.append(f"no readable audio with extensions {', '.join(extensions)}")
            if skipped:
                why.append(f"{len(skipped)} unreadable skipped")
            raise ValueError(f"{self.noise_root}: no noise files ({'; '.join(why)})")
        self.noise_files: list[Path] = files
        self.noise_skipped: list[Path] = skipped
        self.noise_lengths = np.asarray(lengths, dtype=np.int64)

    def set_cache(self, cache: DecodeCache) -> None:
        """Read the clean and the noise files through ``cache`` from now on."""
        self._cache = cache
        self.clean_dataset.set_cache(cache)

    def with_crop_frames(self, crop_frames: int) -> "MixingDataset":
        """The same clean and noise files at another crop length (decoded audio shared, nothing read again)."""
        crop_frames = int(crop_frames)
        if crop_frames == self.crop_frames:
            return self
        view = copy.copy(self)  # shares the noise lists, the noise cache and the failed set
        view.clean_dataset = self.clean_dataset.with_crop_frames(crop_frames)
        view.crop_frames = view.clean_dataset.crop_frames
        view.crop_length = view.clean_dataset.crop_length
        return view

    # ------------------------------------------------------------------ files

    @property
    def files(self) -> list[Path]:
        """The clean files; indices into this list are the clean indices of the plans."""
        return self.clean_dataset.files

    @property
    def lengths(self) -> np.ndarray:
        """Clean file lengths at ``sample_rate`` (from the headers)."""
        return self.clean_dataset.lengths

    @property
    def num_decodes(self) -> int:
        """Clean files decoded so far."""
        return self.clean_dataset.num_decodes

    @property
    def noise_decodes(self) -> int:
        """Noise files decoded so far (cache misses)."""
        return self._noise_decodes[0]

    @property
    def cached_noise_indices(self) -> list[int]:
        return [i for i in range(len(self.noise_files)) if self._noise_key(i) in self._cache]

    def _noise_key(self, index: int) -> tuple:
        return ("noise", str(self.noise_files[index]), self.sample_rate)

    def load_noise(self, index: int) -> np.ndarray:
        """Noise file ``index``, float32 mono at ``sample_rate`` (through the cache)."""
        index = int(index)
        if not 0 <= index < len(self.noise_files):
            raise IndexError(f"noise index {index} out of range for {len(self.noise_files)} noise files")
        x = self._cache.get(self._noise_key(index))
        if x is not None:
            return x
        self._noise_decodes[0] += 1
        x = decode_or_silence(lambda: read_audio(self.noise_files[index], target_sr=self.sample_rate).samples,
                              self.noise_lengths[index], self._noise_failed, index, "noise file")
        return self._cache.put(self._noise_key(index), x)

    def noise_segment(self, index: int, offset: int) -> np.ndarray:
        """``crop_length`` samples of noise file ``index`` from ``offset``, looped."""
        return _looped(self.load_noise(index), offset, self.crop_length)

    # ------------------------------------------------------------------ rows

    def _draw_noise(self, rng: np.random.Generator, count: int):
        idx = rng.integers(0, len(self.noise_files), size=count)
        offsets = rng.integers(0, self.noise_lengths[idx])
        lo, hi = self.snr_range
        snrs = lo + (hi - lo) * rng.random(count)  # exactly lo when lo == hi
        return idx, offsets, snrs

    def global_batch_plan(self, seed: int, step: int, global_batch_size: int) -> list[MixRow]:
        """The :class:`MixRow` of each row of the global batch of step ``step`` (see the class doc).

        ``(row.index, row.start)`` is row ``r`` of the clean data set's plan for ``(seed, step)``.
        """
        clean_plan = self.clean_dataset.global_batch_plan(seed, step, global_batch_size)
        rng = np.random.default_rng([int(seed), int(step), 1 + self.noise_seed_offset])
        idx, offsets, snrs = self._draw_noise(rng, len(clean_plan))
        return [MixRow(int(i), int(s), int(j), int(o), float(d))
                for (i, s), j, o, d in zip(clean_plan, idx, offsets, snrs)]

    def valid_noise(self, k: int) -> tuple[int, int, float]:
        """``(noise_index, offset, snr_db)`` of validation example ``k``."""
        idx, offsets, snrs = self._draw_noise(np.random.default_rng([self.VALID_SEED, int(k)]), 1)
        return int(idx[0]), int(offsets[0]), float(snrs[0])

    def mix_row(self, row: MixRow) -> tuple[np.ndarray, np.ndarray]:
        """Normalised ``(clean, noisy)`` of one row."""
        clean = fit_crop(self.clean_dataset.load(row.index), row.start, self.crop_length)
        noisy, _ = mix_at_snr(clean, self.noise_segment(row.noise_index, row.noise_offset), row.snr_db)
        return normalize_pair(clean, noisy)

    def _train_pair(self, row):
        return self.mix_row(row)

    def _valid_pair(self, plan, k: int):
        return self.mix_row(MixRow(*plan[k], *self.valid_noise(k)))
