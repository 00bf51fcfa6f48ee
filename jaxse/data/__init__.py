"""Clean-speech training data for the diffusion prior (numpy only: no jax import here): the crop data set
base shared with the paired data of :mod:`jaxse.sgmse.data` (:class:`CropDataset`), :class:`CleanSpeechDataset`,
and the crop schedule of a training config (:func:`crop_phases`, :func:`phase_at`, :func:`valid_frames`).

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
headers, read once for all files when the dataset is built (cheap: no decoding), or from a manifest
(:mod:`jaxse.data.files`: a ``.jsonl`` root, nothing probed).

Memory
------
Decoded files go through a :class:`~jaxse.data.cache.DecodeCache`: unbounded for a data set built alone
(each file decoded once), one shared cache of ``data.cache_mb`` (0: none) for the data sets of a training run
(:meth:`CropDataset.set_cache`), so that memory is bounded by the batches in flight plus that cache, not by
the corpus. The training loop reads its batches through :mod:`jaxse.data.pipeline` (worker processes with
prefetch).

Silence trimming (the RVAE recipe)
----------------------------------
With ``trim_top_db`` every file is decoded when the dataset is built and cut to its non-silent
part (:func:`trim_silence`, the equivalent of ``librosa.effects.trim``); ``lengths`` are then the
trimmed lengths, crops and chunks are taken from the trimmed signals, and files shorter than one
crop after trimming are left out (as the reference's chunk list leaves them out). Decoding the
whole 2 h training set takes a few seconds, and every process does it (the plans need all
lengths), so the determinism and sharding properties above hold unchanged.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np

from jaxse.audio import AUDIO_EXTENSIONS, AudioError, read_audio, resampled_length
from jaxse.data.cache import DecodeCache
from jaxse.data.files import list_audio

if TYPE_CHECKING:  # jaxse.spectral imports jax; only its SpecConfig (a plain dataclass) is used here.
    from jaxse.spectral import SpecConfig

logger = logging.getLogger(__name__)


def peak_normalize_np(x: np.ndarray) -> np.ndarray:
    """Divide each row (last axis) by its peak magnitude; all-zero rows stay zero (no NaN)."""
    x = np.asarray(x, dtype=np.float32)
    peak = np.max(np.abs(x), axis=-1, keepdims=True)
    return np.divide(x, peak, out=np.zeros_like(x), where=peak > 0)


def trim_silence(x: np.ndarray, top_db: float = 60.0, frame_length: int = 2048, hop_length: int = 512,
                 amin: float = 1e-5) -> tuple[int, int]:
    """``(start, end)`` of the non-silent part of a mono signal: ``librosa.effects.trim(x, top_db=...)[1]``.

    The definition of librosa (``effects.trim`` with its defaults ``ref=np.max``, frame 2048, hop 512):

    * frame RMS as ``librosa.feature.rms(y=x, frame_length, hop_length, center=True, pad_mode="constant")``:
      ``x`` zero-padded by ``frame_length // 2`` on both sides, frames ``t = 0 .. len(x) // hop_length``
      starting at ``t * hop_length``, ``rms_t = sqrt(mean(frame_t ** 2))``;
    * level ``db_t = 20 log10(max(amin, rms_t)) - 20 log10(max(amin, max_t rms_t))`` (``amplitude_to_db``
      with ``ref=np.max``, ``amin = 1e-5``);
    * a frame is non-silent when ``db_t > -top_db``; with ``t0``/``t1`` the first/last non-silent frames,
      ``start = t0 * hop_length`` and ``end = min(len(x), (t1 + 1) * hop_length)``; ``(0, 0)`` if none.

    So a constant or all-zero signal is not trimmed at all (every frame is at 0 dB). The RMS is computed
    in float64 (librosa: float32), which can only matter for a frame within float32 rounding of the
    threshold; checked equal to librosa 0.11's ``effects.trim`` on 170 files of ``../shared/data`` and 200
    random signals. Old librosa versions (0.7) padded the RMS frames by reflection instead of zeros,
    which can change only the first and last frames.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"trim_silence expects a mono signal, got shape {x.shape}")
    n = x.shape[0]
    if n == 0:
        return 0, 0
    padded = np.pad(x, frame_length // 2)
    n_frames = 1 + (padded.shape[0] - frame_length) // hop_length
    frames = np.lib.stride_tricks.sliding_window_view(padded, frame_length)[::hop_length][:n_frames]
    power = np.mean(frames * frames, axis=-1)
    floor = float(amin) ** 2
    db = 10.0 * np.log10(np.maximum(power, floor)) - 10.0 * np.log10(max(float(power.max()), floor))
    loud = np.flatnonzero(db > -float(top_db))
    if loud.size == 0:
        return 0, 0
    return int(loud[0]) * hop_length, min(n, (int(loud[-1]) + 1) * hop_length)


def split_roots(root) -> list[Path]:
    """``root`` as a list of paths: a path, a list of paths, or one comma-separated string of them."""
    items = root.split(",") if isinstance(root, str) else [root] if isinstance(root, Path) else list(root)
    roots = [Path(str(r).strip()) for r in items if str(r).strip()]
    if not roots:
        raise ValueError(f"no data directory given ({root!r})")
    return roots


def _crop_length(spec, crop_frames: int) -> int:
    """Samples of a crop of ``crop_frames`` centred STFT frames: ``spec.crop_length`` or ``(frames - 1) * hop``."""
    if hasattr(spec, "crop_length"):
        return int(spec.crop_length(crop_frames))
    return (int(crop_frames) - 1) * int(spec.hop_length)


def resolve_crop_spec(spec, sample_rate: int, crop_frames: int):
    """``(spec, crop_length)`` of a crop data set: ``spec`` (default ``SpecConfig(sample_rate)``) at
    ``sample_rate``, and the samples of a ``crop_frames``-frame crop; ``ValueError`` (one line) otherwise."""
    if spec is None:
        from jaxse.spectral import SpecConfig  # imports jax; pass ``spec`` to have it already loaded

        spec = SpecConfig(sample_rate=int(sample_rate))
    if int(spec.sample_rate) != int(sample_rate):
        raise ValueError(f"spec.sample_rate={spec.sample_rate} differs from sample_rate={sample_rate}")
    if int(crop_frames) < 1:
        raise ValueError(f"crop_frames must be >= 1, got {crop_frames}")
    length = _crop_length(spec, int(crop_frames))
    if length < 1:
        raise ValueError(f"crop of {crop_frames} frames has {length} samples")
    return spec, length


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


def decode_or_silence(decode, length: int, failed: set, index: int, what: str, parts: int = 1):
    """``decode()`` (one array, or a tuple of ``parts`` arrays) as read-only contiguous float32 arrays.

    A decode that raises :class:`AudioError` is logged once per ``index`` (kept in ``failed``) and replaced by
    silence of ``length`` samples, so that every process sees the same rows (the data sets' rule).
    """
    try:
        out = decode()
    except AudioError as exc:
        if index not in failed:
            logger.warning("%s failed to decode, its crops will be silent: %s", what, exc)
            failed.add(index)
        zeros = np.zeros(int(length), np.float32)
        out = zeros if parts == 1 else (zeros,) * parts
    arrays = [np.ascontiguousarray(a, dtype=np.float32) for a in ((out,) if parts == 1 else out)]
    for a in arrays:
        a.setflags(write=False)
    return arrays[0] if parts == 1 else tuple(arrays)


class CropDataset:
    """What every crop data set of the training loop shares (:class:`CleanSpeechDataset`, the paired and mixing
    data sets of :mod:`jaxse.sgmse.data`): the file lengths, the reference chunk count, the sharding of training
    batches and the validation batching.

    A subclass sets ``sample_rate``, ``spec``, ``crop_frames``, ``crop_length`` and ``lengths`` (samples of each
    file at ``sample_rate``, in file-index order) and implements :meth:`global_batch_plan` and :meth:`_rows` (the
    batch of a list of training rows: an array ``(B, crop_length)``, or a dict of such arrays); a data set whose
    validation rows are not its training rows overrides :meth:`_valid_rows`.
    """

    @staticmethod
    def _plan_rng(seed: int, step: int, global_batch_size: int) -> tuple[np.random.Generator, int]:
        """``(np.random.default_rng([seed, step]), batch)``: the generator of step ``step``'s global batch plan
        (``ValueError`` for a negative seed or step, or a batch < 1)."""
        seed, step, batch = int(seed), int(step), int(global_batch_size)
        if seed < 0 or step < 0:
            raise ValueError(f"seed and step must be non-negative, got seed={seed}, step={step}")
        if batch < 1:
            raise ValueError(f"global_batch_size must be >= 1, got {global_batch_size}")
        return np.random.default_rng([seed, step]), batch

    def _init_decoding(self, cache: "DecodeCache | None") -> None:
        """The decoding state every data set keeps: its cache of decoded files (``None``: an unbounded one of its
        own), the files that failed to decode (read as silence from then on) and ``num_decodes``, the decodes so
        far (cache misses; for tests and diagnostics)."""
        self._cache = DecodeCache(None) if cache is None else cache
        self._failed: set[int] = set()
        self.num_decodes = 0

    @property
    def files(self) -> list[Path]:
        """The data set's files (for paired data the clean ones), in order; indices into this list are the file
        indices of the plans. A subclass keeps them in ``_files``."""
        return list(self._files)

    @property
    def cached_indices(self) -> list[int]:
        """Indices of the files decoded and held in the cache (``_key(index)`` names a file's cache entry)."""
        return [i for i in range(len(self._files)) if self._key(i) in self._cache]

    def __len__(self) -> int:
        return len(self.lengths)

    def set_cache(self, cache: DecodeCache) -> None:
        """Read decoded files through ``cache`` from now on (views made later share it; the training loop gives
        all its data sets one cache of ``data.cache_mb``)."""
        self._cache = cache

    @property
    def cache(self) -> DecodeCache:
        return self._cache

    @property
    def total_duration(self) -> float:
        """Total duration in seconds of the (clean) files, from the headers (after trimming with ``trim_top_db``)."""
        return float(np.sum(self.lengths)) / self.sample_rate

    def num_chunks(self, index: int) -> int:
        """Non-overlapping whole crops of file ``index``, counted as the reference RVAE recipe does.

        ``(1 + L // hop) // crop_frames`` with ``L`` the file's length and ``hop`` the spec's hop length (the
        number of centred STFT frames, in whole sequences; chunk ``k`` starts at ``k * crop_length``). Without
        a ``hop_length`` in the spec: ``L // crop_length``.
        """
        length = int(self.lengths[int(index)])
        hop = getattr(self.spec, "hop_length", None)
        if hop is None:
            return length // self.crop_length
        return (1 + length // int(hop)) // self.crop_frames

    @property
    def total_chunks(self) -> int:
        """Sum of :meth:`num_chunks` over the files: the training examples of one reference epoch."""
        return int(sum(self.num_chunks(i) for i in range(len(self))))

    # ------------------------------------------------------------------ training

    def global_batch_plan(self, seed: int, step: int, global_batch_size: int) -> list:
        """The rows of the global batch of training step ``step``: a pure function of ``(seed, step)``."""
        raise NotImplementedError

    def train_batch(self, seed: int, step: int, global_batch_size: int, process_index: int = 0,
                    process_count: int = 1):
        """This process's rows of the global training batch: rows ``[p*B/P, (p+1)*B/P)`` of
        :meth:`global_batch_plan` as float32 ``(B // P, crop_length)`` (a dict of such arrays for a data set
        with several signals per row)."""
        lo, hi = _shard_bounds(global_batch_size, process_index, process_count)
        plan = self.global_batch_plan(seed, step, global_batch_size)[lo:hi]
        return self._rows(plan)

    def _rows(self, plan):
        """The batch of the training rows of ``plan``."""
        raise NotImplementedError

    # ------------------------------------------------------------------ validation

    def valid_plan(self, chunks: bool = False) -> list[tuple[int, int]]:
        """``(file_index, start)`` of every validation example, in order.

        Default: one centre crop per file (start ``(L - crop) // 2``, or 0 for a file shorter than the
        crop, which is padded). ``chunks=True``: every non-overlapping whole crop of every file
        (:meth:`num_chunks` of them, starting at ``k * crop_length``), the reference RVAE's validation set.
        """
        if chunks:
            return [(i, k * self.crop_length) for i in range(len(self)) for k in range(self.num_chunks(i))]
        return [(i, max(int(self.lengths[i]) - self.crop_length, 0) // 2) for i in range(len(self))]

    def num_valid_examples(self, max_examples: int | None = None, chunks: bool = False) -> int:
        n = len(self) if not chunks else self.total_chunks
        return n if max_examples is None else min(n, int(max_examples))

    def num_valid_batches(self, batch_size: int, max_examples: int | None = None, chunks: bool = False) -> int:
        """Number of (full) batches :meth:`valid_batches` yields."""
        return self.num_valid_examples(max_examples, chunks) // int(batch_size)

    def valid_batches(
        self,
        batch_size: int,
        max_examples: int | None = None,
        process_index: int = 0,
        process_count: int = 1,
        chunks: bool = False,
    ) -> Iterator:
        """Deterministic validation batches of the examples of :meth:`valid_plan`, in order.

        Uses the first ``max_examples`` examples (all by default; with ``chunks=False`` one centre crop
        per sorted file), grouped into global batches of ``batch_size``; each yields this process's rows
        ``[p*B/P, (p+1)*B/P)`` as float32 ``(batch_size // process_count, crop_length)`` (a dict of such
        arrays for a data set with several signals per row). The last partial batch is DROPPED (so that
        every process yields the same number of equally shaped batches and no example is counted twice);
        :meth:`num_valid_batches` says how many there are. ``ValueError`` if that is zero.
        """
        lo, hi = _shard_bounds(batch_size, process_index, process_count)
        batch_size = int(batch_size)
        n_batches = self.num_valid_batches(batch_size, max_examples, chunks)
        if n_batches == 0:
            raise ValueError(
                f"batch_size={batch_size} exceeds the {self.num_valid_examples(max_examples, chunks)} validation "
                "examples: no full batch"
            )
        plan = self.valid_plan(chunks)  # arguments checked eagerly, not on first next()
        return self._iter_valid(plan, batch_size, n_batches, lo, hi)

    def _iter_valid(self, plan, batch_size: int, n_batches: int, lo: int, hi: int) -> Iterator:
        for b in range(n_batches):
            yield self._valid_rows(plan, b * batch_size + lo, b * batch_size + hi)

    def _valid_rows(self, plan, start: int, stop: int):
        """The batch of validation examples ``start .. stop - 1`` of ``plan`` (default: as training rows)."""
        return self._rows(plan[start:stop])


class CleanSpeechDataset(CropDataset):
    """Clean speech under ``root`` (recursive), resampled to ``sample_rate`` on load.

    Args:
      root: a directory (searched recursively with :func:`jaxse.audio.find_audio_files`), a manifest (``.jsonl``,
        :mod:`jaxse.data.files`) or a file; or
        several of them, as a list or one comma-separated string (``"data/train,data/train_extra"``):
        their files are used together, in the order of the roots (each root's files sorted).
      sample_rate: rate every file is resampled to when decoded (16 kHz for the prior).
      crop_frames: STFT frames per training crop; the crop is ``spec.crop_length(crop_frames)`` samples.
      spec: the spectrogram settings (``jaxse.spectral.SpecConfig``); default ``SpecConfig(sample_rate)``.
        Its ``sample_rate`` must equal ``sample_rate``.
      extensions: file extensions to include.
      trim_top_db: if set, cut every file to its non-silent part (:func:`trim_silence` with this
        ``top_db``) when the dataset is built (see the module doc); files then shorter than one crop
        are left out and listed in ``short``.
      sample_by_length: draw the training files with probabilities proportional to their number of
        chunks (:meth:`num_chunks`) instead of uniformly, so that every chunk of audio is equally
        likely, as in an epoch over the reference's chunk list.

    The spec only needs ``sample_rate`` and either ``crop_length(frames)`` or ``hop_length`` (then a
    crop is ``(crop_frames - 1) * hop_length`` samples): the RVAE's ``RVAESpecConfig`` works too.

    File headers are read at construction (a root ending in ``.jsonl`` is a manifest, :mod:`jaxse.data.files`:
    its headers are read from it, nothing is probed; a missing file named in it is a ``ValueError``); files that
    are unreadable or empty are skipped with a logged warning (file indices refer to the remaining ones,
    identically in every process). If none remain, ``ValueError``. Audio is decoded lazily, as float32, through
    ``cache`` (:class:`~jaxse.data.cache.DecodeCache`; default: an unbounded one of its own, each file decoded
    once), so a process decodes only the files it uses. A file that passes the header check but fails to
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
        trim_top_db: float | None = None,
        sample_by_length: bool = False,
        cache: DecodeCache | None = None,
    ):
        spec, crop_length = resolve_crop_spec(spec, sample_rate, crop_frames)
        self.roots = split_roots(root)
        self.root = self.roots[0] if len(self.roots) == 1 else Path(",".join(map(str, self.roots)))
        self.sample_rate = int(sample_rate)
        self.crop_frames = int(crop_frames)
        self.spec = spec
        self.crop_length = crop_length

        entries, skipped = list_audio(self.roots, extensions)
        files = [e.path for e in entries]
        lengths = [resampled_length(e.frames, e.sample_rate, self.sample_rate) for e in entries]
        if not files:
            extra = f" ({len(skipped)} unreadable files skipped)" if skipped else ""
            raise ValueError(f"{self.root}: no readable audio files ({', '.join(extensions)}){extra}")
        self._files: list[Path] = files
        self.skipped: list[Path] = skipped
        # Lengths (samples at ``sample_rate``) from the headers; used to plan crop starts.
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self._init_decoding(cache)
        self.trim_top_db = None if trim_top_db is None else float(trim_top_db)
        self.sample_by_length = bool(sample_by_length)
        self.short: list[Path] = []
        self.trim_bounds: np.ndarray | None = None  # (files, 2): [start, end) of the kept part of each file
        if self.trim_top_db is not None:
            self._trim_all()
        self._weights = None
        if self.sample_by_length:
            counts = np.asarray([self.num_chunks(i) for i in range(len(self._files))], np.float64)
            if counts.sum() <= 0:
                raise ValueError(f"{self.root}: no file holds a whole crop of {self.crop_length} samples")
            self._weights = counts / counts.sum()

    def _trim_all(self) -> None:
        """Decode every file, keep its non-silent part, drop those left shorter than a crop."""
        files, lengths, bounds, kept_arrays = [], [], [], []
        for i, path in enumerate(self._files):
            try:
                x = read_audio(path, target_sr=self.sample_rate).samples
            except AudioError as exc:
                logger.warning("skipping audio file that fails to decode: %s", exc)
                self.skipped.append(path)
                continue
            x = np.asarray(x, dtype=np.float32)
            start, end = trim_silence(x, self.trim_top_db)
            if end - start < self.crop_length:
                self.short.append(path)
                continue
            kept = np.ascontiguousarray(x[start:end])
            kept.setflags(write=False)
            kept_arrays.append(kept)
            files.append(path)
            lengths.append(end - start)
            bounds.append((start, end))
        self.num_decodes = len(self._files)
        if self.short:
            logger.info("%d files shorter than one crop (%d samples) after trimming are left out",
                        len(self.short), self.crop_length)
        if not files:
            raise ValueError(f"{self.root}: no file is longer than one crop ({self.crop_length} samples) "
                             f"after trimming silence at {self.trim_top_db} dB")
        self._files = files
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.trim_bounds = np.asarray(bounds, dtype=np.int64).reshape(-1, 2)
        for i, kept in enumerate(kept_arrays):  # as far as the cache holds them
            self._cache.put(self._key(i), kept)

    def with_crop_frames(self, crop_frames: int) -> "CleanSpeechDataset":
        """The same files at another crop length (no file read again: lengths and decoded audio are shared).

        For schedules that change the crop length during training (:func:`crop_phases`) and for
        validating on crops of a fixed length. Not for ``trim_top_db`` datasets, whose file list depends on
        the crop length.
        """
        crop_frames = int(crop_frames)
        if crop_frames == self.crop_frames:
            return self
        if self.trim_top_db is not None:
            raise ValueError("with_crop_frames: a silence-trimmed dataset keeps only files longer than its crop; "
                             "build a new one instead")
        if self.sample_by_length:
            raise ValueError("with_crop_frames: sample_by_length weights depend on the crop length; build a new one")
        if crop_frames < 1:
            raise ValueError(f"crop_frames must be >= 1, got {crop_frames}")
        view = copy.copy(self)  # shares _files, lengths, the decode cache and the failed set
        view.crop_frames = crop_frames
        view.crop_length = _crop_length(self.spec, crop_frames)
        return view

    # ------------------------------------------------------------------ files and decoding

    def clear_cache(self) -> None:
        self._cache.clear()

    def _key(self, index: int) -> tuple:
        """The cache key of file ``index``: its path, rate and (trimmed data sets) the kept part."""
        bounds = None if self.trim_bounds is None else tuple(int(b) for b in self.trim_bounds[index])
        return ("audio", str(self._files[index]), self.sample_rate, bounds)

    def _decode(self, index: int) -> np.ndarray:
        x = read_audio(self._files[index], target_sr=self.sample_rate).samples
        if self.trim_bounds is not None:
            start, end = self.trim_bounds[index]
            x = x[start:end]
        return x

    def load(self, index: int) -> np.ndarray:
        """Whole file ``index`` as float32 at ``sample_rate`` (through the cache: decoded again once evicted)."""
        index = int(index)
        if not 0 <= index < len(self._files):
            raise IndexError(f"file index {index} out of range for {len(self._files)} files")
        key = self._key(index)
        x = self._cache.get(key)
        if x is not None:
            return x
        self.num_decodes += 1
        x = decode_or_silence(lambda: self._decode(index), self.lengths[index], self._failed, index, "audio file")
        return self._cache.put(key, x)

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
        with replacement (``sample_by_length``: with probabilities proportional to
        :meth:`num_chunks`), then one ``U(0, 1)`` per row gives ``start = int(U(0, L - crop))``. For
        files not longer than the crop the start is 0 (they are padded, not cropped).
        """
        rng, batch = self._plan_rng(seed, step, global_batch_size)
        if self._weights is None:
            idx = rng.integers(0, len(self._files), size=batch)
        else:
            idx = rng.choice(len(self._files), size=batch, p=self._weights)
        u = rng.random(batch)
        span = np.maximum(self.lengths[idx] - self.crop_length, 0)
        starts = (u * span).astype(np.int64)
        return [(int(i), int(s)) for i, s in zip(idx, starts)]

    def _rows(self, plan):
        """The batch of the ``(file_index, start)`` rows of ``plan``: peak-normalised crops ``(B, crop_length)``
        (a data set with more per row, e.g. :class:`jaxse.av.data.AVSpeechDataset`, returns a dict)."""
        return np.stack([self.crop(i, s) for i, s in plan]).astype(np.float32, copy=False)


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


# ---------------------------------------------------------------------------------------- crop schedule


def crop_phases(config) -> list[tuple[int, int, int]]:
    """The training crops as ``[(after_step, crop_frames, batch_size), ...]``, from ``data.crop_schedule``.

    ``data.crop_schedule`` is empty (one phase: ``data.crop_frames`` × ``training.batch_size`` throughout) or
    ``"0:64x8,8000:128x4,16000:256x2"``: from the step after ``after_step`` on, crops of that many frames in
    global batches of that size (``"8000:128"`` keeps ``training.batch_size``). The first phase starts at 0 and
    the steps increase. Progressive crops train the network on short sequences first and on sequences
    closer to the enhancement rows later; equal frames per batch keep the cost per step about the same.
    """
    text = str(config.data.get("crop_schedule", "") or "").strip()
    default_batch = int(config.training.batch_size)
    if not text:
        return [(0, int(config.data.crop_frames), default_batch)]
    phases = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        try:
            after, _, shape = part.partition(":")
            frames, _, batch = shape.partition("x")
            phases.append((int(after), int(frames), int(batch) if batch else default_batch))
        except ValueError:
            raise ValueError(f"data.crop_schedule: bad phase {part!r} (expected AFTER_STEP:FRAMES[xBATCH])") from None
    steps = [p[0] for p in phases]
    if steps[0] != 0 or any(b <= a for a, b in zip(steps, steps[1:])):
        raise ValueError(f"data.crop_schedule={text!r}: the phases must start at step 0 and increase")
    if any(f < 1 or b < 1 for _, f, b in phases):
        raise ValueError(f"data.crop_schedule={text!r}: frames and batch sizes must be positive")
    return phases


def phase_at(phases, step: int) -> tuple[int, int, int]:
    """The phase of :func:`crop_phases` that training step ``step`` (1-based) uses."""
    return [p for p in phases if p[0] < int(step)][-1] if int(step) > 0 else phases[0]


def valid_frames(config) -> int:
    """Frames of the validation crops: ``data.valid_frames``, or ``data.crop_frames`` when 0 or absent.

    A fixed validation length keeps the loss (a sum over frames) comparable across crop phases.
    """
    return int(config.data.get("valid_frames", 0) or config.data.crop_frames)
