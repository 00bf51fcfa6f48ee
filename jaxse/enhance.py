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
  :class:`DiffusionBackend` (compressed Hann STFT, :func:`jaxse.udiffse.posterior_mean`) and
  :class:`RVAEBackend` (sine-window STFT, :func:`jaxse.rvae_se.rvae_posterior`) are the two there are;
  :func:`load_backend` makes either from a method name (:data:`METHODS`) and a checkpoint.
* :func:`enhance_files` runs an :class:`Enhancer` over a file or a directory tree: mirrored output tree,
  resampling to the prior's rate and back, atomic writes, resumable, a CSV log, bad files skipped.

Design choices:

* **Keys.** Row noise comes from ``PRNGKey(0)`` folded with ``(seed, BLAKE2b(uid), chunk index)``; the CLI
  uses the file's path relative to the input as ``uid``. The posteriors take one key per utterance, so the
  per-row posterior is ``jax.vmap``-ed over the rows, each row being a one-utterance batch with its own
  key. A result therefore does not depend on the other rows of its batch, the batch size or the device
  count (up to float rounding, ~1e-6; the accept/reject samplers MHEM and MALAEM can turn rounding into an
  occasional different decision, see :mod:`jaxse.rvae_se`).
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

from jaxse import parallel, rvae_se, udiffse
from jaxse.audio import AUDIO_EXTENSIONS, AudioError, read_audio, resample, resampled_length, write_audio
from jaxse.logging_utils import ProgressBar, format_duration
from jaxse.rvae_se import RVAEPosteriorConfig, rvae_posterior
from jaxse.rvae_spectral import RVAESpecConfig, sine_window
from jaxse.spectral import SpecConfig
from jaxse.udiffse import PosteriorConfig, posterior_mean

# Extensions looked for in an input directory: the usual ones plus the other containers libsndfile reads.
INPUT_EXTENSIONS = tuple(AUDIO_EXTENSIONS) + (
    ".oga", ".opus", ".aifc", ".snd", ".caf", ".w64", ".rf64", ".voc", ".sph", ".nist", ".wve", ".avr",
    ".paf", ".svx", ".xi", ".sds", ".ircam", ".sf")
LOG_NAME = "enhance_log.csv"
LOG_FIELDS = ("file", "duration_s", "seconds", "rtf", "status", "message")
RVAE_PREFIX = "rvae-"
# enhance.py --method: the diffusion samplers, then the RVAE EM algorithms
METHODS = tuple(udiffse.METHODS) + tuple(RVAE_PREFIX + m for m in rvae_se.METHODS)


# ---------------------------------------------------------------------------------------------- backends


class MethodBackend:
    """What an enhancement method gives :class:`Enhancer`; batching, devices, chunks, keys and files are shared.

    Attributes (set by subclasses):
      name: the method as ``enhance.py --method`` names it (``"udiffse+"``, ``"rvae-ldem"``, ...).
      cfg: the method's settings (a frozen dataclass: :class:`jaxse.udiffse.PosteriorConfig`,
        :class:`jaxse.rvae_se.RVAEPosteriorConfig`).
      spec: STFT settings with ``sample_rate``, ``n_fft``, ``hop_length`` and ``num_frames(length)``; the
        Enhancer resamples nothing itself, waveforms come at ``spec.sample_rate``.
      variables: network variables; the Enhancer replicates them on every device and passes them back to
        :meth:`posterior` inside the compiled program (so that they are arguments, not constants).
      quantum: frame counts of rows (buckets, ``chunk_frames``) must be multiples of this;
        ``quantum_note`` says why (for the error message).

    The compiled program of a bucket of ``T`` frames is, per device and for its rows ``u``::

        X, mask = analysis(waves, lengths, T)               # (U, F, T), zero on padding frames
        S_u = posterior(variables, key_u, X_u / NF_u, mask_u)   # vmapped over the rows
        waves = synthesis(S · NF, lengths, row_length)      # (U, row_length), zero past each length

    with ``NF_u = norm_factor(whole file)`` computed on the host.
    """

    name: str = ""
    cfg: Any = None
    spec: Any = None
    variables: Any = None
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

    def posterior(self, variables, key, x, mask):
        """One row: ``X (F, T)`` normalised, ``mask (T,)`` -> speech estimate ``(F, T)`` (traced, vmapped)."""
        raise NotImplementedError

    @property
    def nfe(self) -> int:
        """Network evaluations per row (the figure in the stats)."""
        raise NotImplementedError

    def cost(self) -> dict:
        """Cost figures per row for the stats (network passes, iterations)."""
        return {"nfe": self.nfe}

    def describe(self) -> str:
        """One line about the method and its cost per segment (printed by ``enhance.py``)."""
        return f"{self.name}, {self.nfe} network evaluations per segment"


class DiffusionBackend(MethodBackend):
    """UDiffSE / UDiffSE+ with a score model: compressed Hann STFT (:func:`jaxse.parallel.batched_spec`),
    ``NF = max |compress(stft(x))|`` (:func:`jaxse.parallel.norm_factor`), posterior mean
    (:func:`jaxse.udiffse.posterior_mean`, or ``posterior`` with its signature)."""

    def __init__(self, model, variables, cfg: PosteriorConfig = PosteriorConfig(), spec: SpecConfig = SpecConfig(),
                 posterior: Callable = posterior_mean):
        self.model = model
        self.variables = variables
        self.cfg = cfg
        self.spec = spec
        self.posterior_fn = posterior
        self.name = cfg.method
        net = getattr(model, "net", None)
        frame_multiple = getattr(net, "frame_multiple", None) or getattr(model, "frame_multiple", 1)
        self.quantum = parallel.frame_quantum(frame_multiple, spec.pad_multiple)
        self.quantum_note = f"lcm of the padding multiple {spec.pad_multiple} and the network's {frame_multiple}"

    def norm_factor(self, wave):
        return parallel.norm_factor(wave, self.spec)

    def analysis(self, waves, lengths, num_frames):
        return parallel.batched_spec(waves, lengths, num_frames, self.spec)

    def synthesis(self, spec, lengths, row_length):
        return parallel.batched_wave(spec, lengths, row_length, self.spec)

    def posterior(self, variables, key, x, mask):
        model = self.model

        def score_fn(xx, t):
            return model.score(variables, xx, t)

        s, _ = self.posterior_fn(key, score_fn, model.sde, self.cfg, x[None], mask[None])
        return s[0]

    @property
    def nfe(self) -> int:
        return self.cfg.nfe

    def cost(self) -> dict:
        return {"nfe": self.cfg.nfe, "samples": self.cfg.num_samples}

    def describe(self) -> str:
        return (f"{self.cfg.method}, {self.cfg.nfe} network evaluations per segment (x{self.cfg.num_samples} "
                "samples)")


class RVAEBackend(MethodBackend):
    """The RVAE EM algorithms: sine-window STFT without compression (:mod:`jaxse.rvae_spectral`, computed on
    the padded rows by :func:`jaxse.parallel.batched_stft`), ``NF = max |x|`` (the reference's peak
    normalisation), per-row :func:`jaxse.rvae_se.rvae_posterior` (or ``posterior`` with its signature) with the
    frame mask. Any frame count works; rows use buckets of ``frame_quantum`` (64) frames all the same.

    ``nfe`` counts decoder forward passes per row; :meth:`cost` has the EM iterations and every pass count
    (:meth:`jaxse.rvae_se.RVAEPosteriorConfig.cost`).
    """

    def __init__(self, params, cfg: RVAEPosteriorConfig = RVAEPosteriorConfig(),
                 spec: RVAESpecConfig = RVAESpecConfig(), *, posterior: Callable = rvae_posterior,
                 frame_quantum: int = 64, eps: float = 1e-12):
        self.variables = params
        self.cfg = cfg
        self.spec = spec
        self.posterior_fn = posterior
        self.name = RVAE_PREFIX + cfg.method
        self.quantum = int(frame_quantum)
        self.quantum_note = "the RVAE's bucket quantum"
        self.eps = float(eps)
        self.window = sine_window(spec.n_fft, np.float64)

    def norm_factor(self, wave):
        return max(float(np.max(np.abs(np.asarray(wave, np.float64)))), self.eps)

    def analysis(self, waves, lengths, num_frames):
        return parallel.batched_stft(waves, lengths, num_frames, self.spec, self.window)

    def synthesis(self, spec, lengths, row_length):
        return parallel.batched_istft(spec, lengths, row_length, self.spec, self.window)

    def posterior(self, variables, key, x, mask):
        return self.posterior_fn(key, variables, self.cfg, x, mask)[0]

    @property
    def nfe(self) -> int:
        return self.cfg.nfe

    def cost(self) -> dict:
        return self.cfg.cost()

    def describe(self) -> str:
        c = self.cost()
        enc = f"{c['encoder_forward']} encoder forward" + (
            f" and {c['encoder_backward']} backward" if c["encoder_backward"] else "")
        return (f"{self.name}, {c['em_iterations']} EM iterations: {c['decoder_forward']} decoder forward and "
                f"{c['decoder_backward']} backward passes per segment (on {c['chains']} chain(s)), {enc}, "
                f"{c['samples_per_m_step']} sample(s) per M-step")


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


class Enhancer:
    """Batched, compiled enhancement of 16 kHz (``spec.sample_rate``) waveforms with any :class:`MethodBackend`.

    ``Enhancer(model, variables, cfg, spec=..., posterior=...)`` is the diffusion path (a
    :class:`DiffusionBackend` is made from them); ``Enhancer(backend)`` takes a ready backend
    (e.g. :class:`RVAEBackend`), which brings its own settings, STFT and variables.

    Args:
      model: a :class:`jaxse.models.ScoreModel` (or any object with ``score(variables, x, t)``, ``sde`` and
        ``net.frame_multiple`` or ``frame_multiple``), or a :class:`MethodBackend`.
      variables: the model's variables (replicated on every device); not with a backend.
      cfg: the sampler settings (:class:`jaxse.udiffse.PosteriorConfig`); not with a backend.
      spec: STFT settings of the prior (default :class:`jaxse.spectral.SpecConfig`); not with a backend.
      batch_size: rows per compiled batch (rounded up to a multiple of the device count).
      chunk_frames: longest row in frames; longer signals are chunked. A multiple of the backend's quantum
        (``lcm(64, frame_multiple)`` for the diffusion priors, 64 for the RVAE).
      overlap: chunk overlap fraction (≤ 0.5).
      seed: base seed of the per-row keys.
      devices: devices to shard rows over (default: all local devices).
      posterior: ``(key, score_fn, sde, cfg, x (1, F, T), mask (1, T)) -> (S_hat (1, F, T), aux)``; default
        :func:`jaxse.udiffse.posterior_mean` (tests swap in analytic ones); not with a backend.
      buckets: frame buckets (default :func:`jaxse.parallel.bucket_sizes`).
      silence_threshold: inputs whose peak is at most this come back as zeros (not enhanced).
      max_pending: most unfinished inputs held before partial batches are run (bounds memory and latency).
      dtype: float dtype of the rows (``np.float64`` needs ``jax_enable_x64``, and float64 variables for a
        float64 posterior; for exact comparisons in tests).
    """

    def __init__(self, model, variables=None, cfg: PosteriorConfig | None = None, *, spec: SpecConfig | None = None,
                 batch_size: int = 4, chunk_frames: int = 1024, overlap: float = 0.5, seed: int = 0, devices=None,
                 posterior: Callable | None = None, buckets: Sequence[int] | None = None,
                 silence_threshold: float = 2.0**-15, max_pending: int | None = None, dtype=np.float32):
        if isinstance(model, MethodBackend):
            given = [n for n, v in (("variables", variables), ("cfg", cfg), ("spec", spec), ("posterior", posterior))
                     if v is not None]
            if given:
                raise TypeError(f"Enhancer(backend) takes no {', '.join(given)}: the backend brings them")
            backend = model
        else:
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
        self._programs: dict[int, Any] = {}
        self.compile_seconds: dict[int, float] = {}
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
        """Programs compiled so far (at most one per bucket)."""
        return len(self._programs)

    @property
    def nfe(self) -> int:
        """Network evaluations per row (diffusion: each on ``num_samples`` spectrograms; RVAE: decoder forward
        passes, each on the chains)."""
        return self.backend.nfe

    def _build(self, num_frames: int):
        backend = self.backend
        row = parallel.row_length(num_frames, self.spec)

        def local(variables, waves, lengths, nf, kdata):
            x, mask = backend.analysis(waves, lengths, num_frames)
            x = x / nf[:, None, None].astype(x.real.dtype)

            def one(kd, xu, mu):
                return backend.posterior(variables, parallel.derive_key(kd), xu, mu)

            s = jax.vmap(one)(kdata, x, mask)
            return backend.synthesis(s * nf[:, None, None].astype(s.real.dtype), lengths, row)

        fn = parallel.utterance_map(local, self.mesh, 5)
        rows = parallel.batch_sharding(self.mesh)
        jitted = jax.jit(fn, in_shardings=(parallel.replicated(self.mesh),) + (rows,) * 4, out_shardings=rows)
        b = self.batch_size
        args = (self.variables,
                jax.ShapeDtypeStruct((b, row), self.dtype), jax.ShapeDtypeStruct((b,), jnp.int32),
                jax.ShapeDtypeStruct((b,), self.dtype), jax.ShapeDtypeStruct((b, 5), jnp.uint32))
        t0 = time.perf_counter()
        compiled = jitted.lower(*args).compile()
        self.compile_seconds[num_frames] = time.perf_counter() - t0
        return compiled

    def program(self, num_frames: int):
        """The compiled program of a bucket (compiled on first use, then cached)."""
        if num_frames not in self._programs:
            self._programs[num_frames] = self._build(num_frames)
        return self._programs[num_frames]

    def run_rows(self, num_frames: int, waves: Sequence[np.ndarray], nfs: Sequence[float],
                 kdata: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Enhance up to ``batch_size`` rows of at most ``num_frames`` frames in one call (low level)."""
        b = self.batch_size
        n = len(waves)
        row = parallel.row_length(num_frames, self.spec)
        x, lengths = parallel.pad_rows(waves, b, row, self.dtype)
        nf = np.ones((b,), self.dtype)
        nf[:n] = np.asarray(nfs, self.dtype)
        kd = np.zeros((b, 5), np.uint32)
        if n:
            kd[:n] = np.stack(kdata)
        out = np.asarray(self.program(num_frames)(self.variables, x, lengths, nf, kd))
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

    def submit(self, uid: str, wave: np.ndarray, payload: Any = None) -> list[EnhanceResult]:
        """Queue one waveform (``spec.sample_rate``, 1-D); returns the inputs that got finished meanwhile.

        Full batches are run as soon as they fill up; when more than ``max_pending`` inputs are unfinished,
        partial batches are run for the oldest. Invalid input (too short, non-finite) comes back at once with
        ``error`` set.
        """
        t0 = time.perf_counter()
        wave = np.asarray(wave, self.dtype).reshape(-1)
        length = wave.shape[0]
        item = _Item(uid=str(uid), payload=payload, length=length, plan=None, ola=None, remaining=0)
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
            rows = [_Row(item, 0, wave, nf, bucket)]
        else:
            item.plan = parallel.plan_chunks(length, self.chunk_length, self.overlap)
            item.ola = parallel.OverlapAdd(item.plan)
            item.remaining = item.plan.num_chunks
            n = self.chunk_length
            rows = [_Row(item, i, wave[s:s + n], nf, self.chunk_frames) for i, s in enumerate(item.plan.starts)]
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
        """``(uid, wave)`` or ``(uid, wave, payload)`` in, :class:`EnhanceResult` out (in completion order)."""
        for it in items:
            yield from self.submit(*it)
        yield from self.flush()

    def enhance(self, waves: Sequence[np.ndarray], uids: Sequence[str] | None = None) -> list[np.ndarray]:
        """Enhance waveforms (any lengths) together; returns them in order. Raises ``ValueError`` on bad input.

        ``uids`` identify the inputs for the keys (default ``"0", "1", ...``): give stable names to make each
        result independent of what else is in the call.
        """
        uids = [str(i) for i in range(len(waves))] if uids is None else [str(u) for u in uids]
        if len(set(uids)) != len(uids):
            raise ValueError("uids must be unique")
        out: list[np.ndarray | None] = [None] * len(waves)
        for res in self.stream((u, w, i) for i, (u, w) in enumerate(zip(uids, waves))):
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
        self.program(bucket)  # compile outside the timed call (compile time is reported apart)
        t1 = time.perf_counter()
        try:
            outs = self.run_rows(bucket, [r.wave for r in rows], [r.nf for r in rows],
                                 [parallel.key_data(self.seed, r.item.uid, r.chunk) for r in rows])
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
            "compile_seconds": {int(k): round(v, 3) for k, v in self.compile_seconds.items()},
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


# ------------------------------------------------------------------------------------------- priors


class CheckpointError(Exception):
    """No usable checkpoint (one line, meant for the user)."""


def default_checkpoint_path() -> Path:
    """Where the prior shipped with the package lives: ``jaxse/assets/prior``."""
    return Path(__file__).resolve().parent / "assets" / "prior"


def load_prior(checkpoint=None):
    """``(model, variables, spec)`` from a train.py workdir/checkpoint, a reference ``.ckpt``/``.npz``, or the
    default prior (:func:`default_checkpoint_path`). Raises :class:`CheckpointError` with one clear line."""
    if checkpoint is None:
        path = default_checkpoint_path()
        if not path.exists():
            raise CheckpointError("no prior is shipped with this installation yet (jaxse/assets/prior is "
                                  "missing); pass --checkpoint PATH (a train.py workdir or checkpoint, or a "
                                  "reference .ckpt/.npz)")
    else:
        path = Path(checkpoint)
        if not path.exists():
            raise CheckpointError(f"{path}: no such checkpoint")
    try:
        if path.is_file() and path.suffix.lower() in (".ckpt", ".npz", ".pt", ".pth"):
            from jaxse.convert import import_reference

            model, variables = import_reference(path)
            return model, variables, SpecConfig()
        from jaxse.training import load_checkpoint

        model, variables, meta = load_checkpoint(path)
        spec = SpecConfig(**meta["spec"]) if "spec" in meta else SpecConfig()
        return model, variables, spec
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(f"{path}: could not load the checkpoint ({' '.join(str(exc).split())[:300]})") from exc


def default_rvae_checkpoint_path() -> Path:
    """Where an RVAE shipped with the package lives: ``jaxse/assets/rvae`` (``rvae.json`` + ``rvae_params.npz``)."""
    return Path(__file__).resolve().parent / "assets" / "rvae"


def load_rvae_prior(checkpoint=None):
    """``(params, spec)`` of an RVAE from a directory with ``rvae.json`` (``python -m jaxse.rvae_convert`` or the
    training export), a reference ``.pt`` state_dict or a ``.npz`` (:func:`jaxse.rvae_convert.load_rvae`), or
    the default (:func:`default_rvae_checkpoint_path`). The STFT settings come from the ``"spec"`` entry of
    ``rvae.json`` when there is one (else :class:`jaxse.rvae_spectral.RVAESpecConfig`). Raises
    :class:`CheckpointError` with one clear line."""
    if checkpoint is None:
        path = default_rvae_checkpoint_path()
        if not path.exists():
            raise CheckpointError("no RVAE is shipped with this installation yet (jaxse/assets/rvae is missing); "
                                  "pass --checkpoint PATH (a directory with rvae.json, as python -m "
                                  "jaxse.rvae_convert writes it, or a reference .pt state_dict)")
    else:
        path = Path(checkpoint)
        if not path.exists():
            raise CheckpointError(f"{path}: no such checkpoint")
    try:
        from jaxse.rvae_convert import CONFIG_FILE, load_rvae

        cfg, params = load_rvae(path)
        spec = RVAESpecConfig()
        meta_path = path / CONFIG_FILE
        if path.is_dir() and meta_path.is_file():
            meta_spec = json.loads(meta_path.read_text()).get("spec") or {}
            known = {f.name for f in dataclasses.fields(RVAESpecConfig)}
            spec = RVAESpecConfig(**{k: v for k, v in meta_spec.items() if k in known})
    except Exception as exc:
        raise CheckpointError(f"{path}: could not load the RVAE ({' '.join(str(exc).split())[:300]})") from exc
    if cfg.x_dim != spec.num_bins:
        raise CheckpointError(f"{path}: the RVAE models {cfg.x_dim} frequency bins, its STFT (n_fft={spec.n_fft}) "
                              f"has {spec.num_bins}")
    return params, spec


def is_rvae_method(method: str) -> bool:
    return str(method).startswith(RVAE_PREFIX)


def config_class(method: str):
    """The settings class of a method of :data:`METHODS`: ``PosteriorConfig`` or ``RVAEPosteriorConfig``."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r} (one of {', '.join(METHODS)})")
    return RVAEPosteriorConfig if is_rvae_method(method) else PosteriorConfig


def make_config(method: str, /, **fields):
    """The settings of ``method`` (``"udiffse+"``, ``"rvae-mhem"``, ...) with ``fields`` overridden; the method
    field is the method's (``"mhem"`` for ``"rvae-mhem"``), whatever ``fields`` says."""
    cls = config_class(method)
    fields["method"] = method[len(RVAE_PREFIX):] if cls is RVAEPosteriorConfig else method
    return cls(**fields)


SETTINGS_FILE = "sampler_settings.json"


def settings_path(method: str, checkpoint=None) -> Path | None:
    """The :data:`SETTINGS_FILE` that goes with ``checkpoint`` (default: the shipped prior or RVAE of
    ``method``): the file in the checkpoint directory, or ``None`` when there is none."""
    if checkpoint is None:
        root = default_rvae_checkpoint_path() if is_rvae_method(method) else default_checkpoint_path()
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


def load_backend(method: str = "udiffse", checkpoint=None, cfg=None) -> MethodBackend:
    """The backend of ``method`` (:data:`METHODS`) with its checkpoint (default: the shipped one) and settings
    (default: ``make_config(method, **checkpoint_settings(method, checkpoint))``, i.e. the reference defaults
    with what the checkpoint's :data:`SETTINGS_FILE` recommends). Raises :class:`CheckpointError` (one line)
    for a missing or unreadable checkpoint, ``ValueError`` for an unknown method or settings of the wrong
    class."""
    cls = config_class(method)
    cfg = make_config(method, **checkpoint_settings(method, checkpoint)) if cfg is None else cfg
    if not isinstance(cfg, cls):
        raise ValueError(f"{method} needs a {cls.__name__}, got a {type(cfg).__name__}")
    if cfg.method != make_config(method).method:
        raise ValueError(f"method {method!r} and cfg.method={cfg.method!r} disagree")
    if cls is RVAEPosteriorConfig:
        params, spec = load_rvae_prior(checkpoint)
        return RVAEBackend(params, cfg, spec)
    model, variables, spec = load_prior(checkpoint)
    return DiffusionBackend(model, variables, cfg, spec)


# -------------------------------------------------------------------------------------------- files


@dataclasses.dataclass
class RunSummary:
    total: int = 0
    done: int = 0
    skipped: int = 0
    failed: int = 0
    audio_seconds: float = 0.0
    compute_seconds: float = 0.0
    wall_seconds: float = 0.0
    stats: dict = dataclasses.field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    def line(self, log_path) -> str:
        rtf = self.compute_seconds / self.audio_seconds if self.audio_seconds else float("nan")
        comp = self.stats.get("compile_seconds", {})
        return (f"enhanced {self.done}/{self.total} files ({self.audio_seconds:.1f} s of audio, compute "
                f"{self.compute_seconds:.1f} s, RTF {rtf:.3f}); skipped {self.skipped} (output exists); "
                f"failed {self.failed}; {self.stats.get('compile_count', 0)} compiled program(s) "
                f"({sum(comp.values()):.1f} s, batch {self.stats.get('batch_size')} on "
                f"{self.stats.get('devices')} device(s)); wall {format_duration(self.wall_seconds)}; log: {log_path}")


class _FileProgress(ProgressBar):
    """Files done / total with an ETA from the audio seconds still to process."""

    def __init__(self, total_files: int, total_audio: float, stream=None):
        super().__init__(total_files, desc="enhance", stream=stream, log_interval=10.0)
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
    files = [f for f in _find(p) if not any(_is_under(f, e) for e in exclude)]
    return p, files


def _find(root: Path) -> list[Path]:
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such file or directory")
    exts = set(INPUT_EXTENSIONS)
    return sorted(f for f in root.rglob("*") if f.suffix.lower() in exts and f.is_file() and not f.name.startswith("."))


def _is_under(path: Path, directory: Path) -> bool:
    try:
        path.resolve().relative_to(Path(directory).resolve())
        return True
    except ValueError:
        return False


def enhance_files(input_path, output_dir, enhancer: Enhancer, *, overwrite: bool = False, log_path=None,
                  stream=None, progress: bool = True) -> RunSummary:
    """Enhance a file or a directory tree into ``output_dir`` (same relative paths and extensions).

    Each file is read (any format libsndfile reads), mixed down to mono, resampled to the prior's rate,
    enhanced, resampled back to its own rate and written atomically with its own length. Files whose output
    exists are skipped unless ``overwrite``. Unreadable, empty, non-finite or too-short files are logged and
    skipped. One CSV row per file goes to ``log_path`` (default ``output_dir/enhance_log.csv``, appended).
    """
    stream = sys.stderr if stream is None else stream
    t_start = time.perf_counter()
    out_root = Path(output_dir)
    log_path = Path(log_path) if log_path else out_root / LOG_NAME
    root, files = list_inputs(input_path, exclude=[out_root])
    summary = RunSummary(total=len(files))
    log = _CsvLog(log_path)
    sr = enhancer.spec.sample_rate
    headers = {f.relative_to(root).as_posix(): _header(f) for f in files}
    durations = {k: frames / rate if rate else 0.0 for k, (frames, rate) in headers.items()}
    todo = [k for k in headers if overwrite or not (out_root / k).exists()]
    enhancer.fit_batch_size(sum(enhancer.rows_for(resampled_length(*headers[k], sr)) for k in todo if headers[k][1]))
    bar = _FileProgress(len(files), sum(durations.values()), stream=stream)
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
        elif status == "skipped":
            summary.skipped += 1
        else:
            summary.failed += 1
            say(f"FAILED {rel}: {message}")
        bar.audio_done += durations.get(rel, 0.0)
        bar.update(bar.step + 1)

    def on_result(res: EnhanceResult):
        rel, out_path, orig_sr, orig_len, subtype, t_read = res.payload
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
            finish(rel, duration, seconds + time.perf_counter() - t0, "ok")
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
            payload = (rel, out_path, audio.sample_rate, audio.samples.shape[0], subtype, time.perf_counter() - t0)
            for res in enhancer.submit(rel, x, payload):
                on_result(res)
        for res in enhancer.flush():
            on_result(res)
    finally:
        bar.close()
        log.close()
    summary.stats = enhancer.stats()
    summary.wall_seconds = time.perf_counter() - t_start
    return summary


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
