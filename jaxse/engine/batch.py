"""The compiled batch engine: :class:`Enhancer` turns waveforms at a method's rate into enhanced waveforms, with
any :class:`jaxse.core.backend.MethodBackend`.

Utterances of any length are batched together (zero-padded rows + lengths, frame masks), one compiled program
per frame bucket (:func:`jaxse.parallel.bucket_sizes`) and row count, rows spread over the local devices with
``jax.shard_map``. Signals longer than ``chunk_frames`` are cut into overlapping chunks of exactly
``chunk_frames`` frames and cross-faded back (:class:`jaxse.parallel.OverlapAdd`). The backend supplies all
that differs between methods (see :mod:`jaxse.engine`): the engine knows no model family.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Iterable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxse import parallel
from jaxse.core.backend import MethodBackend
from jaxse.errors import one_line


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
    """Batched, compiled enhancement of waveforms at ``backend.spec.sample_rate`` (16 kHz for the shipped
    methods) with any :class:`MethodBackend`, which brings its settings, STFT, variables and posterior
    (:func:`jaxse.engine.methods.load_backend` makes one from a method name and a checkpoint).

    Args:
      backend: the method (:class:`MethodBackend`). ``variables``, ``cfg``, ``spec`` and ``posterior`` are refused
        (``TypeError``): the backend brings its network's variables, settings, STFT and posterior.
      batch_size: rows per compiled batch (rounded up to a multiple of the device count).
      chunk_frames: longest row in frames; longer signals are chunked. A multiple of the backend's
        :attr:`~MethodBackend.quantum` (e.g. ``lcm(64, frame_multiple)`` for a score network, 64 for the RVAE).
      overlap: chunk overlap fraction (≤ 0.5).
      seed: base seed of the per-row keys.
      devices: devices to shard rows over (default: all local devices).
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

    def __init__(self, backend: MethodBackend, variables=None, cfg=None, *, spec=None, batch_size: int = 4,
                 chunk_frames: int = 1024, overlap: float = 0.5, seed: int = 0, devices=None, posterior=None,
                 buckets: Sequence[int] | None = None, silence_threshold: float = 2.0**-15,
                 max_pending: int | None = None, tail_batches: bool = True, row_by_row: bool | None = None,
                 dtype=np.float32):
        if not isinstance(backend, MethodBackend):
            raise TypeError(f"Enhancer takes a MethodBackend (jaxse.engine.methods.load_backend makes one), not a "
                            f"{type(backend).__name__}")
        # the arguments of a model's network, settings, STFT and posterior: the backend's own
        given = [n for n, v in (("variables", variables), ("cfg", cfg), ("spec", spec), ("posterior", posterior))
                 if v is not None]
        if given:
            raise TypeError(f"Enhancer(backend) takes no {', '.join(given)}: the backend brings them")
        self.backend = backend
        self.cfg = backend.cfg
        self.spec = backend.spec
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
        """Network evaluations per row (the backend's figure, e.g. score evaluations each on ``num_samples``
        spectrograms, or decoder forward passes each on the chains)."""
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
            outs, error = [None] * len(rows), f"enhancement failed: {one_line(exc, None) or type(exc).__name__}"
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
