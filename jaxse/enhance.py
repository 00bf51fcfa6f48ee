"""Enhance waveforms and audio files with a diffusion prior (UDiffSE / UDiffSE+) or an RVAE prior (VEM / MHEM /
MALAEM / LDEM), batched and compiled once per shape.

Library side of ``enhance.py``:

* :class:`Enhancer` turns 16 kHz waveforms into enhanced waveforms. Utterances of any length are batched
  together (zero-padded rows + lengths, frame masks for the NMF), one compiled program per frame bucket
  (:func:`jaxse.parallel.bucket_sizes`) with a fixed number of rows; rows are spread over the local devices
  with ``jax.shard_map``. Signals longer than ``chunk_frames`` are cut into overlapping chunks of exactly
  ``chunk_frames`` frames and cross-faded back (:class:`jaxse.parallel.OverlapAdd`).
* The method is a :class:`MethodBackend`, the only part that differs between the diffusion and the RVAE
  methods: the spectral front-end and its inverse for padded rows (inside ``jit``), the per-file
  normalisation factor, the per-row posterior ``(key, X_row, mask_row) -> S_row``, the frame quantum of the
  rows, the variables replicated over the devices and the cost figures for the logs.
  :class:`DiffusionBackend` (compressed Hann STFT, :func:`jaxse.diffusion.udiffse.posterior_mean`) and
  :class:`RVAEBackend` (sine-window STFT, :func:`jaxse.rvae.posterior.rvae_posterior`) are the two there are;
  :func:`load_backend` makes either from a method name (:data:`METHODS`) and a checkpoint.
* :func:`enhance_files` runs an :class:`Enhancer` over a file or a directory tree: mirrored output tree,
  resampling to the prior's rate and back, atomic writes, resumable, a CSV log, bad files skipped.

Design choices:

* **Keys.** Row noise comes from ``PRNGKey(0)`` folded with ``(seed, BLAKE2b(uid), chunk index)``; the CLI
  uses the file's path relative to the input as ``uid``. The posteriors take one key per utterance, so the
  per-row posterior is ``jax.vmap``-ed over the rows, each row being a one-utterance batch with its own
  key. A result therefore does not depend on the other rows of its batch, the batch size or the device
  count (up to float rounding, ~1e-6; the accept/reject samplers MHEM and MALAEM can turn rounding into an
  occasional different decision, see :mod:`jaxse.rvae.posterior`).
* **Normalisation.** ``NF`` is per *file* and computed on the host: the backend's analysis of every row is
  divided by it before the posterior and the estimate multiplied back before the synthesis. Diffusion:
  ``max |compress(stft(x))|`` of the whole signal (block by block), as in the reference for a file that fits
  one chunk. RVAE: the waveform peak ``max |x|``, so that ``stft(x) / NF = stft(x / max|x|)``, the reference's
  peak normalisation, and the output has the input's scale. All chunks of a long file share it, so the chunks'
  levels agree and the cross-fades leave no seam.
* **Chunks.** A file with more than ``chunk_frames`` STFT frames is cut into chunks of
  ``(chunk_frames - 1)·hop`` samples (exactly ``chunk_frames`` frames, the training crop rule) starting
  every half chunk (the last chunk ends at the end of the file); each chunk is transformed on its own and
  the enhanced chunks are cross-faded in the waveform domain with sin²/cos² ramps over the overlap. Device
  memory depends on ``batch_size`` and ``chunk_frames`` only. The default 1024 frames are 8.2 s at the
  diffusion priors' hop (128) and 16.4 s at the RVAE's (256); the RVAE reference runs whole utterances, which
  a larger ``chunk_frames`` gives for longer ones (its memory per row is small).
* **Tail.** The inverse STFT drops the padding frames (no reference tail quirk), so the end keeps its level.
* **Silence.** A signal whose peak is at most ``silence_threshold`` (default 2^-15, one LSB of 16-bit
  audio: digital silence or dither) is returned as zeros without running the sampler. Anything louder is
  enhanced at its own scale (``NF``), and an all-zero spectrogram (a dummy row) gives ``Xn = 0``, never NaN.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import soundfile as sf

from jaxse import parallel

from jaxse.audio import AUDIO_EXTENSIONS, AudioError, is_under, read_audio, resample, resampled_length, write_audio
from jaxse.logging_utils import ProgressBar, format_duration
from jaxse import registry
from jaxse.core.backend import CheckpointError, Conditioning, MethodBackend
from jaxse.core.loading import checkpoint_path

# Extensions looked for in an input directory: the usual ones plus the other containers libsndfile reads.
INPUT_EXTENSIONS = tuple(AUDIO_EXTENSIONS) + (
    ".oga", ".opus", ".aifc", ".snd", ".caf", ".w64", ".rf64", ".voc", ".sph", ".nist", ".wve", ".avr",
    ".paf", ".svx", ".xi", ".sds", ".ircam", ".sf")
LOG_NAME = "enhance_log.csv"
LOG_FIELDS = ("file", "duration_s", "seconds", "rtf", "status", "message")
# enhance.py --method: the diffusion samplers, then the RVAE EM algorithms (jaxse.registry)
METHODS = registry.METHODS


# ---------------------------------------------------------------------------------------------- backends


# ---------------------------------------------------------------------------------------------- Enhancer


@dataclasses.dataclass
class EnhanceResult:
    """One finished input: the enhanced waveform (``None`` on error), its compute time share, its payload."""

    uid: str
    wave: np.ndarray | None
    seconds: float
    payload: Any = None
    error: str | None = None


@dataclasses.dataclass
class _Item:
    uid: str
    payload: Any
    length: int
    plan: parallel.ChunkPlan | None  # None: one row of its own length
    ola: parallel.OverlapAdd | None
    remaining: int
    seconds: float = 0.0
    wave: np.ndarray | None = None
    error: str | None = None


@dataclasses.dataclass
class _Row:
    item: _Item
    chunk: int
    wave: np.ndarray
    nf: float
    bucket: int
    cond: np.ndarray | None = None  # the row's conditioning frames (backends with a conditioning)


class Enhancer:
    """Batched, compiled enhancement of 16 kHz (``spec.sample_rate``) waveforms with any :class:`MethodBackend`.

    ``Enhancer(model, variables, cfg, spec=..., posterior=...)`` is the diffusion path (a
    :class:`DiffusionBackend` is made from them); ``Enhancer(backend)`` takes a ready backend
    (e.g. :class:`RVAEBackend`), which brings its own settings, STFT and variables.

    Args:
      model: a :class:`jaxse.diffusion.models.ScoreModel` (or any object with ``score(variables, x, t)``, ``sde`` and
        ``net.frame_multiple`` or ``frame_multiple``), or a :class:`MethodBackend`.
      variables: the model's variables (replicated on every device); not with a backend.
      cfg: the sampler settings (:class:`jaxse.diffusion.udiffse.PosteriorConfig`); not with a backend.
      spec: STFT settings of the prior (default :class:`jaxse.spectral.SpecConfig`); not with a backend.
      batch_size: rows per compiled batch (rounded up to a multiple of the device count).
      chunk_frames: longest row in frames; longer signals are chunked. A multiple of the backend's quantum
        (``lcm(64, frame_multiple)`` for the diffusion priors, 64 for the RVAE).
      overlap: chunk overlap fraction (≤ 0.5).
      seed: base seed of the per-row keys.
      devices: devices to shard rows over (default: all local devices).
      posterior: ``(key, score_fn, sde, cfg, x (1, F, T), mask (1, T)) -> (S_hat (1, F, T), aux)``; default
        :func:`jaxse.diffusion.udiffse.posterior_mean` (tests swap in analytic ones); not with a backend.
      buckets: frame buckets (default :func:`jaxse.parallel.bucket_sizes`).
      silence_threshold: inputs whose peak is at most this come back as zeros (not enhanced).
      max_pending: most unfinished inputs held before partial batches are run (bounds memory and latency).
      tail_batches: run a partial batch (the last of a bucket, or one forced by ``max_pending``) on a program
        compiled for the smallest of :attr:`row_counts` that holds it (powers of two times the device count,
        and ``batch_size``) instead of padding it to ``batch_size`` with dummy rows: at most
        ``log2(batch_size / devices) + 1`` programs per bucket, compiled on first use. ``False``: one program
        per bucket, partial batches padded.
      row_by_row: each device runs its rows one after another (``lax.map``) instead of vectorised
        (``vmap``): a row's output is then bit-identical whichever rows share its batch (so across batch
        sizes, tail batches, device and process counts); vectorised, it differs in the last bits (~1e-6).
        Default: on CPU (where it is as fast), not on accelerators (where batching is what fills the chip).
      dtype: float dtype of the rows (``np.float64`` needs ``jax_enable_x64``, and float64 variables for a
        float64 posterior; for exact comparisons in tests).
    """

    def __init__(self, model, variables=None, cfg=None, *, spec=None,
                 batch_size: int = 4, chunk_frames: int = 1024, overlap: float = 0.5, seed: int = 0, devices=None,
                 posterior: Callable | None = None, buckets: Sequence[int] | None = None,
                 silence_threshold: float = 2.0**-15, max_pending: int | None = None, tail_batches: bool = True,
                 row_by_row: bool | None = None, dtype=np.float32):
        if isinstance(model, MethodBackend):
            given = [n for n, v in (("variables", variables), ("cfg", cfg), ("spec", spec), ("posterior", posterior))
                     if v is not None]
            if given:
                raise TypeError(f"Enhancer(backend) takes no {', '.join(given)}: the backend brings them")
            backend = model
        else:
            from jaxse.diffusion.backend import DiffusionBackend
            from jaxse.diffusion.udiffse import PosteriorConfig, posterior_mean
            from jaxse.spectral import SpecConfig

            backend = DiffusionBackend(model, variables, PosteriorConfig() if cfg is None else cfg,
                                       SpecConfig() if spec is None else spec,
                                       posterior_mean if posterior is None else posterior)
        self.backend = backend
        self.cfg = backend.cfg
        self.spec = backend.spec
        self.model = getattr(backend, "model", None)  # the score model of the diffusion path (None for the RVAE)
        self.seed = int(seed)
        self.overlap = float(overlap)
        self.silence_threshold = float(silence_threshold)
        self.dtype = np.dtype(dtype)
        self.quantum = int(backend.quantum)
        if int(chunk_frames) % self.quantum:
            raise ValueError(f"chunk_frames={chunk_frames} must be a multiple of {self.quantum} "
                             f"({backend.quantum_note})")
        self.chunk_frames = int(chunk_frames)
        self.buckets = tuple(sorted(buckets)) if buckets else parallel.bucket_sizes(self.chunk_frames, self.quantum)
        if max(self.buckets) != self.chunk_frames or any(b % self.quantum for b in self.buckets):
            raise ValueError(f"buckets {self.buckets} must be multiples of {self.quantum} "
                             f"ending at {self.chunk_frames}")
        self.mesh = parallel.make_mesh(jax.local_devices() if devices is None else devices)
        self.num_devices = self.mesh.devices.size
        self.batch_size = parallel.round_up(max(1, int(batch_size)), self.num_devices)
        self.max_pending = int(max_pending) if max_pending else 2 * self.batch_size
        self.variables = jax.device_put(backend.variables, parallel.replicated(self.mesh))
        self.chunk_length = (self.chunk_frames - 1) * self.spec.hop_length  # exactly chunk_frames frames
        self.tail_batches = bool(tail_batches)
        self.row_by_row = (self.mesh.devices.flat[0].platform == "cpu") if row_by_row is None else bool(row_by_row)
        self._programs: dict[tuple[int, int], Any] = {}  # (frames, rows) -> compiled program
        self.compile_seconds: dict[tuple[int, int], float] = {}
        self.num_batches = 0
        self.num_rows = 0
        self.num_dummy_rows = 0
        self._queues: dict[int, list[_Row]] = {b: [] for b in self.buckets}
        self._pending: list[_Item] = []  # unfinished items, oldest first

    # ------------------------------------------------------------------------------ compiled programs

    @property
    def method(self) -> str:
        return self.backend.name

    @property
    def compile_count(self) -> int:
        """Programs compiled so far (per bucket: one per row count used, see :attr:`row_counts`)."""
        return len(self._programs)

    @property
    def row_counts(self) -> tuple[int, ...]:
        """The batch sizes programs are compiled for: ``batch_size``, and with ``tail_batches`` also the
        powers of two times the device count below it (a partial batch runs on the smallest that holds it)."""
        if not self.tail_batches:
            return (self.batch_size,)
        sizes, n = [], self.num_devices
        while n < self.batch_size:
            sizes.append(n)
            n *= 2
        return tuple(sizes) + (self.batch_size,)

    def rows_for_batch(self, n: int) -> int:
        """The compiled batch size that runs ``n`` rows (``1 <= n <= batch_size``)."""
        return next(b for b in self.row_counts if b >= n)

    @property
    def nfe(self) -> int:
        """Network evaluations per row (diffusion: each on ``num_samples`` spectrograms; RVAE: decoder forward
        passes, each on the chains)."""
        return self.backend.nfe

    def _build(self, num_frames: int, b: int):
        backend = self.backend
        row = parallel.row_length(num_frames, self.spec)
        cond = backend.conditioning

        def local(variables, waves, lengths, nf, kdata, *cond_args):
            x, mask = backend.analysis(waves, lengths, num_frames)
            x = x / nf[:, None, None].astype(x.real.dtype)

            def one(kd, xu, mu, *c):
                extra = {"cond": c} if c else {}
                return backend.posterior(variables, parallel.derive_key(kd), xu, mu, **extra)

            if self.row_by_row:  # one row at a time: a row's numerics do not depend on the others
                s = jax.lax.map(lambda a: one(*a), (kdata, x, mask, *cond_args))
            else:
                s = jax.vmap(one)(kdata, x, mask, *cond_args)
            return backend.synthesis(s * nf[:, None, None].astype(s.real.dtype), lengths, row)

        n_args = 5 if cond is None else 7  # + conditioning frames and counts, only when the method has one
        fn = parallel.utterance_map(local, self.mesh, n_args)
        rows = parallel.batch_sharding(self.mesh)
        jitted = jax.jit(fn, in_shardings=(parallel.replicated(self.mesh),) + (rows,) * (n_args - 1),
                         out_shardings=rows)
        args = (self.variables,
                jax.ShapeDtypeStruct((b, row), self.dtype), jax.ShapeDtypeStruct((b,), jnp.int32),
                jax.ShapeDtypeStruct((b,), self.dtype), jax.ShapeDtypeStruct((b, 5), jnp.uint32))
        if cond is not None:
            k = cond.max_frames(row, self.spec.sample_rate)
            args += (jax.ShapeDtypeStruct((b, k, cond.dim), np.dtype(cond.dtype)), jax.ShapeDtypeStruct((b,), jnp.int32))
        t0 = time.perf_counter()
        compiled = jitted.lower(*args).compile()
        self.compile_seconds[(num_frames, b)] = time.perf_counter() - t0
        return compiled

    def program(self, num_frames: int, rows: int | None = None):
        """The compiled program of a bucket for ``rows`` rows (default ``batch_size``; one of
        :attr:`row_counts`), compiled on first use, then cached."""
        key = (int(num_frames), self.batch_size if rows is None else int(rows))
        if key not in self._programs:
            self._programs[key] = self._build(*key)
        return self._programs[key]

    def run_rows(self, num_frames: int, waves: Sequence[np.ndarray], nfs: Sequence[float],
                 kdata: Sequence[np.ndarray], conds: Sequence[np.ndarray] | None = None) -> list[np.ndarray]:
        """Enhance up to ``batch_size`` rows of at most ``num_frames`` frames in one call (low level);
        ``conds``: each row's conditioning frames, for a backend with a conditioning. The rows run on the
        program of :meth:`rows_for_batch` rows (padded with silent dummy rows up to it)."""
        n = len(waves)
        b = self.rows_for_batch(max(n, 1))
        row = parallel.row_length(num_frames, self.spec)
        x, lengths = parallel.pad_rows(waves, b, row, self.dtype)
        nf = np.ones((b,), self.dtype)
        nf[:n] = np.asarray(nfs, self.dtype)
        kd = np.zeros((b, 5), np.uint32)
        if n:
            kd[:n] = np.stack(kdata)
        extra = ()
        cond = self.backend.conditioning
        if cond is not None:
            if conds is None or len(conds) != n:
                raise ValueError(f"{self.method} needs the {cond.name} of every row")
            k = cond.max_frames(row, self.spec.sample_rate)
            c = np.zeros((b, k, cond.dim), np.dtype(cond.dtype))
            counts = np.zeros((b,), np.int32)
            for i, ci in enumerate(conds):
                counts[i] = min(len(ci), k)
                c[i, :counts[i]] = ci[:k]
            extra = (c, counts)
        out = np.asarray(self.program(num_frames, b)(self.variables, x, lengths, nf, kd, *extra))
        self.num_batches += 1
        self.num_rows += n
        self.num_dummy_rows += b - n
        return [out[i, : lengths[i]] for i in range(n)]

    def rows_for(self, length: int) -> int:
        """Rows a signal of ``length`` samples (at ``spec.sample_rate``) occupies: 1, or its number of chunks."""
        if self.spec.num_frames(length) <= self.chunk_frames:
            return 1
        return parallel.plan_chunks(length, self.chunk_length, self.overlap).num_chunks

    def fit_batch_size(self, total_rows: int) -> int:
        """Shrink ``batch_size`` to ``total_rows`` (rounded up to the device count) when the whole job is
        smaller than one batch, so that a single short file does not pay for dummy rows. Only before the
        first compilation; returns the batch size."""
        if not self._programs:
            self.batch_size = min(self.batch_size, parallel.round_up(max(1, int(total_rows)), self.num_devices))
            self.max_pending = max(self.max_pending, 2 * self.batch_size)
        return self.batch_size

    # --------------------------------------------------------------------------------- scheduling

    def submit(self, uid: str, wave: np.ndarray, payload: Any = None, cond=None) -> list[EnhanceResult]:
        """Queue one waveform (``spec.sample_rate``, 1-D); returns the inputs that got finished meanwhile.

        ``cond``: the utterance's conditioning stream ``(frames, dim)`` when the backend declares a
        :class:`Conditioning` (required then, refused otherwise); each row gets the frames of its span.
        Full batches are run as soon as they fill up; when more than ``max_pending`` inputs are unfinished,
        partial batches are run for the oldest. Invalid input (too short, non-finite, a bad or missing
        conditioning) comes back at once with ``error`` set.
        """
        t0 = time.perf_counter()
        wave = np.asarray(wave, self.dtype).reshape(-1)
        length = wave.shape[0]
        item = _Item(uid=str(uid), payload=payload, length=length, plan=None, ola=None, remaining=0)
        spec_c = self.backend.conditioning
        if (spec_c is None) != (cond is None):
            item.error = (f"{self.method} takes no conditioning input" if spec_c is None
                          else f"{self.method} needs the {spec_c.name} of each input")
            return [self._result(item)]
        if spec_c is not None:
            try:
                cond = spec_c.check(cond, length, self.spec.sample_rate)
            except ValueError as exc:
                item.error = str(exc)
                return [self._result(item)]
        if length < parallel.min_length(self.spec):
            item.error = (f"too short: {length} samples at {self.spec.sample_rate} Hz (at least "
                          f"{parallel.min_length(self.spec)} are needed for one STFT frame)")
            return [self._result(item)]
        if not np.isfinite(wave).all():
            item.error = "non-finite (NaN or Inf) samples"
            return [self._result(item)]
        if float(np.max(np.abs(wave))) <= self.silence_threshold:
            item.wave = np.zeros(length, np.float32)
            item.seconds = time.perf_counter() - t0
            return [self._result(item)]
        nf = self.backend.norm_factor(wave)
        if self.spec.num_frames(length) <= self.chunk_frames:
            item.remaining = 1
            bucket = parallel.choose_bucket(self.spec.num_frames(length), self.buckets)
            rows = [_Row(item, 0, wave, nf, bucket, cond)]
        else:
            item.plan = parallel.plan_chunks(length, self.chunk_length, self.overlap)
            item.ola = parallel.OverlapAdd(item.plan)
            item.remaining = item.plan.num_chunks
            n = self.chunk_length
            rows = [_Row(item, i, wave[s:s + n], nf, self.chunk_frames,
                         None if cond is None else cond[slice(*spec_c.span(s, n, self.spec.sample_rate))])
                    for i, s in enumerate(item.plan.starts)]
        item.seconds = time.perf_counter() - t0
        self._pending.append(item)
        finished = []
        for r in rows:
            q = self._queues[r.bucket]
            q.append(r)
            if len(q) >= self.batch_size:
                finished += self._run_bucket(r.bucket)
        while len(self._pending) > self.max_pending:
            finished += self._run_bucket(self._oldest_bucket())
        return finished

    def flush(self) -> list[EnhanceResult]:
        """Run every queued row (partial batches padded with silent dummy rows); returns what finished."""
        finished = []
        while any(self._queues.values()):
            finished += self._run_bucket(self._oldest_bucket())
        return finished

    def stream(self, items: Iterable[tuple]) -> Iterator[EnhanceResult]:
        """``(uid, wave)``, ``(uid, wave, payload)`` or ``(uid, wave, payload, cond)`` in, :class:`EnhanceResult`
        out (in completion order)."""
        for it in items:
            yield from self.submit(*it)
        yield from self.flush()

    def enhance(self, waves: Sequence[np.ndarray], uids: Sequence[str] | None = None,
                conds: Sequence[np.ndarray] | None = None) -> list[np.ndarray]:
        """Enhance waveforms (any lengths) together; returns them in order. Raises ``ValueError`` on bad input.

        ``uids`` identify the inputs for the keys (default ``"0", "1", ...``): give stable names to make each
        result independent of what else is in the call. ``conds``: each input's conditioning stream, for a
        backend with a :class:`Conditioning`.
        """
        uids = [str(i) for i in range(len(waves))] if uids is None else [str(u) for u in uids]
        if len(set(uids)) != len(uids):
            raise ValueError("uids must be unique")
        out: list[np.ndarray | None] = [None] * len(waves)
        extra = [()] * len(waves) if conds is None else [(c,) for c in conds]
        for res in self.stream((u, w, i, *e) for i, (u, w, e) in enumerate(zip(uids, waves, extra))):
            if res.error:
                raise ValueError(f"input {res.uid!r}: {res.error}")
            out[res.payload] = res.wave
        return out  # type: ignore[return-value]

    def _oldest_bucket(self) -> int:
        for item in self._pending:
            for b, q in self._queues.items():
                if any(r.item is item for r in q):
                    return b
        return next(b for b, q in self._queues.items() if q)

    def _run_bucket(self, bucket: int) -> list[EnhanceResult]:
        q = self._queues[bucket]
        rows, self._queues[bucket] = q[: self.batch_size], q[self.batch_size:]
        self.program(bucket, self.rows_for_batch(len(rows)))  # compile outside the timed call (reported apart)
        t1 = time.perf_counter()
        try:
            conds = None if self.backend.conditioning is None else [r.cond for r in rows]
            outs = self.run_rows(bucket, [r.wave for r in rows], [r.nf for r in rows],
                                 [parallel.key_data(self.seed, r.item.uid, r.chunk) for r in rows], conds)
            error = None
        except Exception as exc:  # a failed batch fails its inputs, not the run
            outs, error = [None] * len(rows), f"enhancement failed: {' '.join(str(exc).split()) or type(exc).__name__}"
        elapsed = time.perf_counter() - t1
        frames = np.array([self.spec.num_frames(r.wave.shape[0]) for r in rows], np.float64)
        shares = elapsed * frames / frames.sum()
        finished = []
        for r, y, share in zip(rows, outs, shares):
            item = r.item
            item.seconds += float(share)
            if item.remaining == 0:  # failed on an earlier row of this batch
                continue
            if item.error is None and error is not None:
                item.error = error
                for qb in self._queues:  # drop its other rows
                    self._queues[qb] = [x for x in self._queues[qb] if x.item is not item]
                item.remaining = 1
            if item.error is None:
                if item.ola is None:
                    item.wave = y
                else:
                    item.ola.add(r.chunk, y)
            item.remaining -= 1
            if item.remaining == 0:
                if item.error is None and item.ola is not None:
                    item.wave = item.ola.result()
                    item.ola = None
                if item.error is None and not np.isfinite(item.wave).all():
                    item.error, item.wave = "the enhanced signal is not finite", None
                self._pending.remove(item)
                finished.append(self._result(item))
        return finished

    @staticmethod
    def _result(item: _Item) -> EnhanceResult:
        return EnhanceResult(item.uid, None if item.error else item.wave, item.seconds, item.payload, item.error)

    def stats(self) -> dict:
        return {
            "compile_count": self.compile_count,
            "compile_seconds": {f"{f}x{b}": round(v, 3) for (f, b), v in self.compile_seconds.items()},
            "batches": self.num_batches,
            "rows": self.num_rows,
            "dummy_rows": self.num_dummy_rows,
            "devices": self.num_devices,
            "batch_size": self.batch_size,
            "buckets": list(self.buckets),
            "nfe_per_row": self.nfe,
            "method": self.method,
            "cost_per_row": self.backend.cost(),
        }


def is_rvae_method(method: str) -> bool:
    """Whether ``method`` runs on an RVAE (family ``"rvae"``)."""
    return method in registry.METHODS and registry.method(method).family == "rvae"


def config_class(method: str):
    """The settings class of a method of :data:`METHODS` (``ValueError`` for an unknown one)."""
    return registry.method(method).settings_class


def make_config(method: str, /, **fields):
    """The settings of ``method`` (``"udiffse+"``, ``"rvae-mhem"``, ...) with ``fields`` overridden; the method
    field is the method's (``"mhem"`` for ``"rvae-mhem"``), whatever ``fields`` says."""
    return registry.method(method).make_settings(**fields)


SETTINGS_FILE = "sampler_settings.json"


def settings_path(method: str, checkpoint=None) -> Path | None:
    """The :data:`SETTINGS_FILE` that goes with ``checkpoint`` (default: the shipped prior or RVAE of
    ``method``): the file in the checkpoint directory, or ``None`` when there is none."""
    if checkpoint is None:
        root = registry.method(method).default_checkpoint_path()
    else:
        root = Path(checkpoint)
    path = root / SETTINGS_FILE
    return path if root.is_dir() and path.is_file() else None


def checkpoint_settings(method: str, checkpoint=None) -> dict:
    """The settings a checkpoint recommends for ``method``: the ``"methods"[method]`` entry of its
    :data:`SETTINGS_FILE` (e.g. ``{"lmbd": 2.5}``, tuned for that prior on validation mixtures), ``{}`` when it
    has none. Fields are checked against the method's settings class; a bad file raises
    :class:`CheckpointError` (one line)."""
    path = settings_path(method, checkpoint)
    if path is None:
        return {}
    try:
        entry = json.loads(path.read_text())["methods"].get(method, {})
        if not isinstance(entry, dict):
            raise ValueError(f"the entry of {method} is not a JSON object")
        known = {f.name for f in dataclasses.fields(config_class(method))} - {"method"}
        unknown = sorted(set(entry) - known)
        if unknown:
            raise ValueError(f"unknown field(s) {', '.join(unknown)} for {method}")
        make_config(method, **entry)  # values valid for the settings class
    except Exception as exc:
        raise CheckpointError(f"{path}: bad sampler settings ({' '.join(str(exc).split())[:300]})") from exc
    return dict(entry)


def load_backend(method: str = "udiffse", checkpoint=None, cfg=None, dtype: str | None = None) -> MethodBackend:
    """The backend of ``method`` (:data:`METHODS`) with its checkpoint (default: the shipped one) and settings
    (default: ``make_config(method, **checkpoint_settings(method, checkpoint))``, i.e. the reference defaults
    with what the checkpoint's :data:`SETTINGS_FILE` recommends). Raises :class:`CheckpointError` (one line)
    for a missing or unreadable checkpoint, ``ValueError`` for an unknown method or settings of the wrong
    class, or a ``dtype`` the method's network has no option for. ``dtype``: the network's compute dtype
    (``"bfloat16"`` for accelerators; ``None``: the checkpoint's, float32)."""
    spec = registry.method(method)
    cls = spec.settings_class
    cfg = make_config(method, **checkpoint_settings(method, checkpoint)) if cfg is None else cfg
    if not isinstance(cfg, cls):
        raise ValueError(f"{method} needs a {cls.__name__}, got a {type(cfg).__name__}")
    if cfg.method != spec.settings_method:
        raise ValueError(f"method {method!r} and cfg.method={cfg.method!r} disagree")
    backend = spec.load_backend(checkpoint, cfg)
    if dtype is not None:
        backend.set_compute_dtype(str(dtype))
    return backend


# -------------------------------------------------------------------------------------------- files


@dataclasses.dataclass
class RunSummary:
    total: int = 0
    done: int = 0
    skipped: int = 0
    failed: int = 0
    warned: int = 0  # among ``done``: written, but logged with a warning (an implausible output peak)
    audio_seconds: float = 0.0
    compute_seconds: float = 0.0
    wall_seconds: float = 0.0
    stats: dict = dataclasses.field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    def line(self, log_path) -> str:
        # no audio enhanced (nothing to do, or zero-length audio only): "RTF n/a", never "RTF nan"
        rtf = f"{self.compute_seconds / self.audio_seconds:.3f}" if self.audio_seconds > 0 else "n/a"
        comp = self.stats.get("compile_seconds", {})
        warned = f" ({self.warned} with a warning, see the log)" if self.warned else ""
        return (f"enhanced {self.done}/{self.total} files{warned} ({self.audio_seconds:.1f} s of audio, compute "
                f"{self.compute_seconds:.1f} s, RTF {rtf}); skipped {self.skipped} (output exists); "
                f"failed {self.failed}; {self.stats.get('compile_count', 0)} compiled program(s) "
                f"({sum(comp.values()):.1f} s, batch {self.stats.get('batch_size')} on "
                f"{self.stats.get('devices')} device(s)); wall {format_duration(self.wall_seconds)}; log: {log_path}")


class _FileProgress(ProgressBar):
    """Files done / total with an ETA from the audio seconds still to process."""

    def __init__(self, total_files: int, total_audio: float, stream=None, desc: str = "enhance"):
        super().__init__(total_files, desc=desc, stream=stream, log_interval=10.0)
        self.total_audio = float(total_audio)
        self.audio_done = 0.0

    @property
    def eta(self) -> float:
        elapsed = time.perf_counter() - self._t0
        if self.audio_done <= 0 or elapsed <= 0:
            return math.inf
        return max(self.total_audio - self.audio_done, 0.0) * elapsed / self.audio_done

    def format(self) -> str:
        frac = min(max(self.step / self.total, 0.0), 1.0) if self.total > 0 else 1.0
        filled = int(round(frac * self.width))
        bar = "#" * filled + "." * (self.width - filled)
        return f"{self.desc} [{bar}] {self.step}/{self.total} files | ETA {format_duration(self.eta)}"

    def _draw(self) -> None:
        self._drawn = self.format()
        super()._draw()

    def close(self) -> None:
        if self.enabled and not self._tty and getattr(self, "_drawn", None) == self.format():
            return  # the final state is already on a line of its own
        super().close()


class _CsvLog:
    """Append-only CSV (header written once); every row flushed, so a killed run keeps its log."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists() or self.path.stat().st_size == 0
        self._fh = open(self.path, "a", newline="", encoding="utf-8")
        self._w = csv.writer(self._fh)
        if new:
            self._w.writerow(LOG_FIELDS)
            self._fh.flush()

    def row(self, file: str, duration: float | None, seconds: float | None, status: str, message: str = "") -> None:
        rtf = seconds / duration if duration and seconds is not None else None
        fmt = lambda v, p: "" if v is None else f"{v:.{p}f}"  # noqa: E731
        self._w.writerow([file, fmt(duration, 3), fmt(seconds, 3), fmt(rtf, 4), status, " ".join(message.split())])
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def read_log(path) -> list[dict]:
    """Rows of an enhance log (CSV) as dicts."""
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def list_inputs(input_path, exclude: Sequence[Path] = ()) -> tuple[Path, list[Path]]:
    """``(root, files)``: a single file is its own list; a directory is searched recursively for audio,
    leaving out anything under ``exclude`` (e.g. an output directory inside the input tree)."""
    p = Path(input_path)
    if p.is_file():
        return p.parent, [p]
    files = [f for f in _find(p) if not any(is_under(f, e) for e in exclude)]
    return p, files


def _find(root: Path) -> list[Path]:
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such file or directory")
    exts = set(INPUT_EXTENSIONS)
    return sorted(f for f in root.rglob("*") if f.suffix.lower() in exts and f.is_file() and not f.name.startswith("."))


def check_output_paths(input_path, output_dir, log_path=None) -> None:
    """Raise ``ValueError`` (one line) if :func:`enhance_files` could not write ``output_dir`` and the log, or
    would write over or into its input; leaves nothing behind.

    Refused: an output directory that is a file, lies under a file or cannot be created or written; a log
    (default ``output_dir/enhance_log.csv``) that is a directory or cannot be created or written; an output
    directory that is the input folder or holds it (the outputs would overwrite the inputs, or land in the input
    tree while the inputs are skipped as outputs), or that is the folder of a single input file. A missing
    path is checked at its nearest existing ancestor: ``os.access`` (write + search: permissions, read-only
    file systems), then an empty ``.enhance-probe-*`` directory made there and removed at once (what
    ``os.access`` lets pass, e.g. root on a pseudo file system); an existing log is opened for appending and
    closed, unchanged. An output directory inside the input folder is fine: it is left out of the inputs.
    """
    out = Path(output_dir)
    _check_writable(out, "output directory", directory=True)
    _check_writable(Path(log_path) if log_path else out / LOG_NAME, "log file", directory=False)
    inp = Path(input_path)
    if inp.is_dir() and is_under(inp, out):
        same = inp.resolve() == out.resolve()
        raise ValueError(f"output directory {out} {'is' if same else 'contains'} the input folder {inp}: the "
                         f"outputs would {'overwrite' if same else 'land among'} the inputs (choose another -o)")
    if inp.is_file() and inp.resolve().parent == out.resolve():
        raise ValueError(f"output directory {out} is the folder of the input {inp}: the output would overwrite "
                         "it (choose another -o)")


def _check_writable(path: Path, what: str, *, directory: bool) -> None:
    import os
    import tempfile

    def refused(where: str, is_dir: bool = True) -> str | None:
        """Why nothing can be written in (or to) ``where``; ``None`` if it can."""
        if not os.access(where, os.W_OK | os.X_OK if is_dir else os.W_OK):
            return "permission denied or a read-only file system"
        try:  # what os.access lets pass (e.g. root on a pseudo file system) only trying shows; nothing is left
            if is_dir:
                os.rmdir(tempfile.mkdtemp(prefix=".enhance-probe-", dir=where))
            else:
                open(where, "a").close()  # opened for appending, changed in nothing
        except OSError as exc:
            return exc.strerror or type(exc).__name__
        return None

    p = os.path.abspath(path)
    if os.path.lexists(p) and not os.path.exists(p):
        raise ValueError(f"{what} {path}: a broken symbolic link")
    if os.path.exists(p):
        if directory != os.path.isdir(p):
            raise ValueError(f"{what} {path}: {'is not a directory' if directory else 'is a directory'}")
        why = refused(p, is_dir=directory)
        if why:
            raise ValueError(f"{what} {path}: not writable ({why})")
        return
    parent = os.path.dirname(p)
    while not os.path.exists(parent):  # (the root always exists)
        if os.path.lexists(parent):
            raise ValueError(f"{what} {path}: cannot be created, {parent} is a broken symbolic link")
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ValueError(f"{what} {path}: cannot be created, {parent} is not a directory")
    why = refused(parent)
    if why:
        raise ValueError(f"{what} {path}: cannot be created in {parent} ({why})")


def enhance_files(input_path, output_dir, enhancer: Enhancer, *, overwrite: bool = False, log_path=None,
                  stream=None, progress: bool = True, conditioning: Callable[[str], Any] | None = None,
                  share=None) -> RunSummary:
    """Enhance a file or a directory tree into ``output_dir`` (same relative paths and extensions).

    Each file is read (any format libsndfile reads), mixed down to mono, resampled to the prior's rate,
    enhanced, resampled back to its own rate and written atomically with its own length. Files whose output
    exists are skipped unless ``overwrite``. Unreadable, empty, non-finite or too-short files are logged and
    skipped. One CSV row per file goes to ``log_path`` (default ``output_dir/enhance_log.csv``, appended).
    An output whose peak is implausibly far above its input's (:func:`peak_warning`) is still written (clipped
    to the format's range where it clips) but its row keeps status ``ok`` with a ``warning: ...`` message, one
    ``WARNING`` line goes to ``stream`` and it counts in :attr:`RunSummary.warned`.

    ``conditioning``: for a method with a :class:`Conditioning`, ``conditioning(rel_path) -> (frames, dim)``
    gives each file's stream (e.g. its feature file); an exception it raises fails that file only (its one-line
    message is logged).

    ``share``: a :class:`jaxse.multihost.Share` of a multi-process run: only this process's share of the files
    (:func:`jaxse.multihost.assign_shares`, balanced by duration) is enhanced, its rows go to its own log part,
    and at the end every part's new rows are appended to the log (:func:`jaxse.multihost.merge_logs`).

    Raises ``ValueError`` before creating anything if the output or the log cannot be written or the output
    would overwrite the input (:func:`check_output_paths`).
    """
    from jaxse import multihost

    check_output_paths(input_path, output_dir, log_path)
    stream = sys.stderr if stream is None else stream
    t_start = time.perf_counter()
    out_root = Path(output_dir)
    log_path = Path(log_path) if log_path else out_root / LOG_NAME
    root, files = list_inputs(input_path, exclude=[out_root])
    headers = {f.relative_to(root).as_posix(): _header(f) for f in files}
    shared = share is not None and not share.single
    if shared:
        owner = multihost.assign_shares({k: n / r if r else 0.0 for k, (n, r) in headers.items()}, share.count)
        files = [f for f in files if owner[f.relative_to(root).as_posix()] == share.index]
        headers = {k: h for k, h in headers.items() if owner[k] == share.index}
    summary = RunSummary(total=len(files))
    log = _CsvLog(multihost.part_path(log_path, share) if shared else log_path)
    sr = enhancer.spec.sample_rate
    durations = {k: frames / rate if rate else 0.0 for k, (frames, rate) in headers.items()}
    todo = [k for k in headers if overwrite or not (out_root / k).exists()]
    enhancer.fit_batch_size(sum(enhancer.rows_for(resampled_length(*headers[k], sr)) for k in todo if headers[k][1]))
    bar = _FileProgress(len(files), sum(durations.values()), stream=stream,
                        desc=f"enhance ({share})" if shared else "enhance")
    bar.enabled = bool(progress)
    said_mixdown = False

    def say(message: str) -> None:
        if bar.enabled:
            bar.write(message)
        else:
            stream.write(message + "\n")
            stream.flush()

    def finish(rel: str, duration, seconds, status, message=""):
        log.row(rel, duration, seconds, status, message)
        if status == "ok":
            summary.done += 1
            summary.audio_seconds += duration or 0.0
            summary.compute_seconds += seconds or 0.0
            if message.startswith("warning: "):
                summary.warned += 1
                say(f"WARNING {rel}: {message[len('warning: '):]}")
        elif status == "skipped":
            summary.skipped += 1
        else:
            summary.failed += 1
            say(f"FAILED {rel}: {message}")
        bar.audio_done += durations.get(rel, 0.0)
        bar.update(bar.step + 1)

    def on_result(res: EnhanceResult):
        rel, out_path, orig_sr, orig_len, subtype, t_read, input_peak = res.payload
        seconds = res.seconds + t_read
        duration = orig_len / orig_sr
        if res.error:
            finish(rel, duration, seconds, "error", res.error)
            return
        try:
            t0 = time.perf_counter()
            y = res.wave
            if orig_sr != sr:
                y = resample(y, sr, orig_sr)
            y = _fit_length(y, orig_len)
            _write(out_path, y, orig_sr, subtype)
            peak = float(np.max(np.abs(y))) if y.size else 0.0
            warning = peak_warning(peak, input_peak, clipped=_clipped(out_path, peak))
            finish(rel, duration, seconds + time.perf_counter() - t0, "ok", f"warning: {warning}" if warning else "")
        except Exception as exc:
            finish(rel, duration, seconds, "error", f"could not write {out_path.name}: {' '.join(str(exc).split())}")

    try:
        for f in files:
            rel = f.relative_to(root).as_posix()
            out_path = out_root / rel
            if out_path.exists() and not overwrite:
                bar.total_audio -= durations.get(rel, 0.0)  # the ETA counts only the work left to do
                durations[rel] = 0.0
                finish(rel, None, None, "skipped", "output exists")
                continue
            if out_path.resolve() == f.resolve():
                finish(rel, None, None, "error", "the output would overwrite the input (choose another -o)")
                continue
            t0 = time.perf_counter()
            try:
                audio = read_audio(f)
            except AudioError as exc:
                msg = str(exc)
                msg = msg[len(str(f)) + 2:] if msg.startswith(f"{f}: ") else msg
                finish(rel, None, time.perf_counter() - t0, "error", msg)
                continue
            except Exception as exc:  # anything else a decoder may throw
                finish(rel, None, time.perf_counter() - t0, "error", " ".join(str(exc).split()) or type(exc).__name__)
                continue
            if audio.num_channels > 1 and not said_mixdown:
                say(f"note: multi-channel input is mixed down to mono (first: {rel}, {audio.num_channels} channels)")
                said_mixdown = True
            x = audio.samples if audio.sample_rate == sr else resample(audio.samples, audio.sample_rate, sr)
            subtype = _subtype_of(f)
            payload = (rel, out_path, audio.sample_rate, audio.samples.shape[0], subtype, time.perf_counter() - t0,
                       float(np.max(np.abs(audio.samples))))
            cond = None
            if conditioning is not None:
                try:
                    cond = conditioning(rel)
                except Exception as exc:  # a missing or unreadable stream fails this file only
                    finish(rel, None, time.perf_counter() - t0, "error",
                           " ".join(str(exc).split()) or type(exc).__name__)
                    continue
            for res in enhancer.submit(rel, x, payload, *(() if cond is None else (cond,))):
                on_result(res)
        for res in enhancer.flush():
            on_result(res)
    finally:
        bar.close()
        log.close()
    if shared:
        try:
            multihost.merge_logs(log_path)
        except (OSError, ValueError) as exc:  # the parts are intact: python -m jaxse.multihost merges them later
            say(f"WARNING could not merge the log parts into {log_path}: {' '.join(str(exc).split())}")
    summary.stats = enhancer.stats()
    summary.wall_seconds = time.perf_counter() - t_start
    return summary


# An enhanced file is flagged (still written, logged "ok" with a "warning: ..." message) when its peak exceeds
# PEAK_RATIO_LIMIT x max(input peak, PEAK_FLOOR). Enhancement removes noise, so the speech estimate keeps about
# the mixture's level (the diffusion and RVAE outputs are scaled back by the input's own normalisation factor)
# and its peak seldom exceeds the mixture's by much, where noise and speech partly cancel. 4x (+12 dB) leaves
# room for that and flags the diverged samplers seen in practice (peaks of 23 to 9,103 for an input peak of
# 0.45 with --config.num_steps <= 5). The floor (-60 dBFS) keeps a near-silent input from flagging an output
# that is still quiet.
PEAK_RATIO_LIMIT = 4.0
PEAK_FLOOR = 1e-3


def peak_warning(output_peak: float, input_peak: float, *, clipped: bool = True) -> str | None:
    """The warning for an output peak implausibly far above the input's (``None`` when plausible): above
    ``PEAK_RATIO_LIMIT * max(input_peak, PEAK_FLOOR)``. ``clipped``: whether the file written clipped it."""
    output_peak, input_peak = float(output_peak), float(input_peak)
    if not output_peak > PEAK_RATIO_LIMIT * max(input_peak, PEAK_FLOOR):
        return None
    ratio = f"{output_peak / input_peak:.0f}x" if input_peak > 0 else "far above"
    return (f"output peak {output_peak:.4g} is {ratio} the input peak {input_peak:.3g}: "
            f"{'clipped' if clipped else 'written unclipped'}; the sampler settings may be too coarse")


def _clipped(path: Path, peak: float) -> bool:
    """Whether :func:`jaxse.audio.write_audio` clipped samples of this peak into ``path``: integer (PCM-like)
    subtypes clip to ``[-1, 1)``, float and lossy ones do not."""
    from jaxse.audio import _UNCLIPPED_SUBTYPES

    subtype = (_subtype_of(path) or "").upper()
    return peak >= 1.0 and not (subtype in _UNCLIPPED_SUBTYPES or subtype.startswith("MPEG"))


def _header(path: Path) -> tuple[int, int]:
    """(frames, sample rate) from the header; (0, 0) if unreadable."""
    try:
        info = sf.info(str(path))
        return (int(info.frames), int(info.samplerate)) if info.samplerate > 0 else (0, 0)
    except Exception:
        return 0, 0


def _fit_length(y: np.ndarray, n: int) -> np.ndarray:
    y = np.asarray(y, np.float32).reshape(-1)
    if y.shape[0] >= n:
        return y[:n]
    return np.pad(y, (0, n - y.shape[0]))


def _subtype_of(path: Path) -> str | None:
    try:
        return sf.info(str(path)).subtype
    except Exception:
        return None


def _write(path: Path, y: np.ndarray, sample_rate: int, subtype: str | None) -> None:
    try:
        write_audio(path, y, sample_rate, subtype=subtype)
    except ValueError:
        if subtype is None:
            raise
        write_audio(path, y, sample_rate)  # the input's subtype does not fit: the format's default


# ------------------------------------------------------------------------------------------ one call


_ENGINES: dict[tuple, Enhancer] = {}


def _engine(method: str, checkpoint, seed: int, config: dict | None, batch_size: int, chunk_frames: int,
            dtype: str | None) -> Enhancer:
    """The :class:`Enhancer` of these settings, built on first use and kept (with its compiled programs)."""
    fields = dict(config or {})
    key = (method, None if checkpoint is None else str(Path(checkpoint).resolve()), int(seed),
           tuple(sorted((k, repr(v)) for k, v in fields.items())), int(batch_size), int(chunk_frames), dtype)
    if key not in _ENGINES:
        cfg = make_config(method, **{**checkpoint_settings(method, checkpoint), **fields})
        backend = load_backend(method, checkpoint, cfg, dtype)
        _ENGINES[key] = Enhancer(backend, batch_size=batch_size, chunk_frames=chunk_frames, seed=seed)
    return _ENGINES[key]


def enhance_audio(audio, sample_rate: int | None = None, method: str = "udiffse+", checkpoint=None, seed: int = 0, *,
                  config: dict | None = None, batch_size: int = 1, chunk_frames: int = 1024,
                  dtype: str | None = None, visual=None) -> np.ndarray:
    """Enhance one recording and return it: float32, at its own sample rate and length (mono).

    Also callable as ``jaxse.enhance(...)`` (the module is callable). ``audio``: a path (any format libsndfile
    reads; ``sample_rate`` must then be ``None`` or the file's rate) or an array, ``(n,)`` or ``(n, channels)``
    (channels are averaged), with its ``sample_rate``. ``method``: one of :data:`METHODS`; ``checkpoint``:
    ``None`` for the shipped model of the method; ``config``: fields of the method's settings (on top of the
    checkpoint's ``sampler_settings.json``, as ``enhance.py --config.FIELD``). The engine (model, settings and
    compiled programs) is kept between calls with the same settings, so only the first call of a shape bucket
    compiles. ``dtype="bfloat16"``: the network's compute dtype (diffusion and SGMSE+ networks; for
    accelerators). The result for a file equals ``enhance.py FILE`` with the same ``--seed`` (the noise key comes
    from the seed and the file name; arrays use the name ``"audio"``). ``visual``: the visual features of an
    audio-visual method (``av-udiffse``, ``av-udiffse+``), an array ``(frames, dim)`` at 25 fps or a ``.npy``
    path. Errors: ``ValueError`` (bad input or settings, ``visual`` missing or given to another method),
    :class:`jaxse.audio.AudioError` (unreadable file), :class:`CheckpointError`.
    """
    if isinstance(audio, (str, Path)) or hasattr(audio, "__fspath__"):
        a = read_audio(audio)
        if sample_rate is not None and int(sample_rate) != a.sample_rate:
            raise ValueError(f"{audio}: the file is at {a.sample_rate} Hz, not sample_rate={sample_rate}")
        wave, sr, uid = a.samples, a.sample_rate, Path(audio).name
    else:
        if sample_rate is None:
            raise ValueError("an array needs its sample_rate")
        wave = np.asarray(audio, dtype=np.float32)
        if wave.ndim == 2:
            wave = wave.mean(axis=1, dtype=np.float64).astype(np.float32)
        if wave.ndim != 1 or wave.size == 0:
            raise ValueError(f"expected a non-empty (n,) or (n, channels) array, got shape {np.shape(audio)}")
        if not np.isfinite(wave).all():
            raise ValueError("the array holds NaN or Inf samples")
        sr, uid = int(sample_rate), "audio"
        if sr <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    audio_visual = registry.method(method).conditioning is not None
    if audio_visual != (visual is not None):
        raise ValueError(f"{method} needs visual= (the features of the recording)" if audio_visual
                         else f"visual= is for the audio-visual methods, not {method}")
    engine = _engine(method, checkpoint, seed, config, batch_size, chunk_frames, dtype)
    rate = int(engine.spec.sample_rate)
    x = wave if sr == rate else resample(wave, sr, rate)
    conds = None
    if audio_visual:
        from jaxse.av.data import load_features

        conds = [load_features(visual, engine.backend.conditioning.dim) if isinstance(visual, (str, Path))
                 else np.asarray(visual, np.float32)]
    y = engine.enhance([x], uids=[uid], conds=conds)[0]
    if sr != rate:
        y = resample(y, rate, sr)
    return _fit_length(y, wave.shape[0])


class _CallableModule(type(sys)):
    """Lets ``jaxse.enhance(audio, ...)`` call :func:`enhance_audio` while ``jaxse.enhance`` stays this module."""

    def __call__(self, *args, **kwargs):
        return enhance_audio(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
