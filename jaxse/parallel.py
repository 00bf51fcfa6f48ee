"""The shape of a batched enhancement run: buckets, padding and masks, keys, device sharding, chunking.

Everything here is about *where* utterances go, not about the method itself (:mod:`jaxse.diffusion.udiffse`,
:mod:`jaxse.rvae.posterior`; :mod:`jaxse.enhance` ties the two together):

* **Buckets.** Frame counts are padded to a small set of sizes (:func:`bucket_sizes`: multiples of the
  pad multiple 64 and of the network's frame multiple, in half-octave steps up to the chunk size), and batches have a
  fixed number of rows, so a dataset run compiles one program per bucket at most.
* **Padding and masks.** Utterances of different lengths share a batch as zero-padded waveform rows plus
  their true lengths. :func:`batched_spec` computes, inside ``jit`` and with static shapes, exactly what
  :func:`jaxse.spectral.normalize_for_inference` gives each utterance on its own (reflect-padded centred
  STFT of the true length, then zero frames), and the frame mask; :func:`batched_wave` is
  :func:`jaxse.spectral.spec_to_wave` without the reference's tail quirk (frames past the utterance are
  dropped before the inverse STFT, so the end is not attenuated). Both are the diffusion prior's compression
  around :func:`batched_stft` / :func:`batched_istft`, the same thing for any window and STFT setting (the
  RVAE methods use them directly, with the sine window of :mod:`jaxse.rvae.spectral` and no compression).
* **Keys.** Each utterance (chunk) draws its noise from its own key, derived from ``(seed, hash of its
  identity, chunk index)`` (:func:`key_data`, :func:`derive_key`), so a result depends neither on the
  batch it landed in nor on the number of devices.
* **Devices.** A 1-D mesh with axis ``"utt"`` (:func:`make_mesh`); :func:`utterance_map` runs a function
  with ``jax.shard_map``, batched arguments split over the axis and the network variables replicated. The
  batch size is a multiple of the device count; empty rows are silent dummy utterances.
* **Chunks.** A long signal is cut into chunks of a fixed length overlapping by (default) 50 %
  (:func:`plan_chunks`), each enhanced at the same compiled shape, and put back together by
  :class:`OverlapAdd`: sine-squared cross-fades in the waveform domain, normalised by the summed weights.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxse.spectral import SpecConfig, compress, decompress, hann_window

AXIS = "utt"


# ------------------------------------------------------------------------------------------ buckets


def frame_quantum(frame_multiple: int, pad_multiple: int = 64) -> int:
    """Smallest frame count that both the network (``frame_multiple``) and the padding rule accept."""
    return math.lcm(int(frame_multiple), int(pad_multiple))


def bucket_sizes(chunk_frames: int, quantum: int = 64) -> tuple[int, ...]:
    """Frame buckets up to ``chunk_frames``: ``quantum·2^k`` and ``quantum·3·2^(k-1)`` (×1.5 between doublings).

    The half-octave steps keep the padding under 50 % of the signal above ``2·quantum`` frames, at the cost
    of a few more compiled programs (only the buckets a run meets are compiled). ``chunk_frames`` must be a
    multiple of ``quantum`` and is always the last bucket. E.g. ``bucket_sizes(512) == (64, 128, 192, 256,
    384, 512)`` and ``bucket_sizes(320) == (64, 128, 192, 256, 320)``.
    """
    chunk_frames, quantum = int(chunk_frames), int(quantum)
    if quantum < 1 or chunk_frames < quantum or chunk_frames % quantum:
        raise ValueError(f"chunk_frames={chunk_frames} must be a positive multiple of {quantum}")
    sizes, n = set(), quantum
    while n < chunk_frames:
        sizes.add(n)
        if n >= 2 * quantum and 3 * n // 2 < chunk_frames:
            sizes.add(3 * n // 2)
        n *= 2
    sizes.add(chunk_frames)
    return tuple(sorted(sizes))


def choose_bucket(num_frames: int, buckets: Sequence[int]) -> int:
    """The smallest bucket holding ``num_frames`` frames."""
    for b in sorted(buckets):
        if num_frames <= b:
            return int(b)
    raise ValueError(f"{num_frames} frames exceed the largest bucket ({max(buckets)}); chunk the signal first")


def round_up(n: int, multiple: int) -> int:
    return -(-int(n) // int(multiple)) * int(multiple)


# ------------------------------------------------------------------------------- padding and masks


def pad_rows(waves: Sequence[np.ndarray], num_rows: int, row_length: int,
             dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
    """Stack 1-D waveforms into a zero-padded ``(num_rows, row_length)`` array (float32 by default); ``lengths``
    (num_rows,) int32.

    Rows past ``len(waves)`` are silent dummy utterances of length ``row_length``.
    """
    if len(waves) > num_rows:
        raise ValueError(f"{len(waves)} waveforms do not fit in {num_rows} rows")
    out = np.zeros((num_rows, row_length), dtype)
    lengths = np.full((num_rows,), row_length, np.int32)
    for i, w in enumerate(waves):
        w = np.asarray(w, dtype).reshape(-1)
        if w.shape[0] > row_length:
            raise ValueError(f"waveform {i} has {w.shape[0]} samples, more than the row length {row_length}")
        out[i, : w.shape[0]] = w
        lengths[i] = w.shape[0]
    return out, lengths


def num_frames_of(lengths, cfg: SpecConfig):
    """Frames of the centred STFT of ``lengths`` samples (works on ints, numpy and jax arrays)."""
    return 1 + lengths // cfg.hop_length


def frame_mask(lengths, num_frames: int, cfg: SpecConfig):
    """``(U, num_frames)`` float mask: 1 on the frames each utterance's STFT has, 0 on padding."""
    t = jnp.arange(num_frames)
    return (t[None, :] < num_frames_of(jnp.asarray(lengths), cfg)[:, None]).astype(jnp.float32)


def _window(cfg, window) -> np.ndarray:
    if window is not None:
        return np.asarray(window, np.float64)
    return cfg.window(np.float64) if hasattr(cfg, "window") else hann_window(cfg.n_fft, dtype=np.float64)


def batched_stft(waves, lengths, num_frames: int, cfg, window=None):
    """Plain (uncompressed) centred STFTs of zero-padded rows, as if each row were transformed on its own.

    ``waves`` (U, L) real, ``lengths`` (U,) int with ``1 + lengths // hop <= num_frames`` (and ``cfg.n_fft // 2 <
    lengths`` for reflect padding). ``cfg`` is any STFT setting with ``n_fft`` and ``hop_length`` and optionally
    ``pad_mode`` (``"reflect"``, the default, or ``"constant"``): :class:`jaxse.spectral.SpecConfig` or
    :class:`jaxse.rvae.spectral.RVAESpecConfig`. ``window`` (n_fft,) defaults to ``cfg.window()`` (the periodic
    Hann window when ``cfg`` has none).
    Returns ``(spec (U, F, num_frames) complex, mask (U, num_frames))``: row ``u`` equals the STFT of
    ``waves[u, :lengths[u]]`` followed by zero frames, computed with static shapes: the padding at the end of
    each row (reflection about its last sample, or zeros) is an index computation on its length.
    """
    waves = jnp.asarray(waves)
    n_fft, hop = cfg.n_fft, cfg.hop_length
    pad_mode = getattr(cfg, "pad_mode", "reflect")
    row = waves.shape[-1]
    pos = np.arange(num_frames)[:, None] * hop + np.arange(n_fft)[None, :] - n_fft // 2  # (T, n_fft)

    def one(x, length):
        p = jnp.asarray(pos)
        if pad_mode == "constant":
            inside = (p >= 0) & (p < length)
            return jnp.where(inside, x[jnp.clip(p, 0, row - 1)], 0.0)
        p = jnp.abs(p)  # reflect at the start: x[-p]
        p = jnp.where(p >= length, 2 * (length - 1) - p, p)  # reflect at the end: x[2(L-1) - p]
        return x[jnp.clip(p, 0, row - 1)]

    frames = jax.vmap(one)(waves, jnp.asarray(lengths))  # (U, T, n_fft)
    rdt = jnp.float64 if waves.dtype == jnp.float64 else jnp.float32
    w = _window(cfg, window)
    spec = jnp.swapaxes(jnp.fft.rfft(frames * jnp.asarray(w, dtype=rdt), n=n_fft, axis=-1), -1, -2)  # (U, F, T)
    mask = frame_mask(lengths, num_frames, cfg)
    return spec * mask[:, None, :], mask


def batched_istft(spec, lengths, row_length: int, cfg, window=None):
    """Inverse of :func:`batched_stft`: ``(U, F, T)`` -> ``(U, row_length)`` waveforms.

    Row ``u`` is the windowed overlap-add of its own frames only (frames past the utterance's are dropped, so
    its end is reconstructed exactly), divided by the summed squared window of those frames, followed by
    zeros: samples at and after ``lengths[u]`` are zero. ``window`` as in :func:`batched_stft`.
    """
    spec = jnp.asarray(spec)
    n_fft, hop = cfg.n_fft, cfg.hop_length
    num_frames = spec.shape[-1]
    lengths = jnp.asarray(lengths)
    mask = frame_mask(lengths, num_frames, cfg)  # (U, T)
    rdt = jnp.float64 if spec.dtype == jnp.complex128 else jnp.float32
    w = _window(cfg, window)
    spec = spec * mask[:, None, :]
    frames = jnp.fft.irfft(jnp.swapaxes(spec, -1, -2), n=n_fft, axis=-1) * jnp.asarray(w, dtype=rdt)  # (U, T, n_fft)
    total = n_fft + hop * (num_frames - 1)
    idx = np.arange(num_frames)[:, None] * hop + np.arange(n_fft)[None, :]
    u = spec.shape[0]
    out = jnp.zeros((u, total), rdt).at[:, idx].add(frames)
    env = jnp.zeros((u, total), rdt).at[:, idx].add(mask[:, :, None].astype(rdt) * jnp.asarray(w**2, rdt))
    out = out / jnp.where(env > 1e-11, env, 1.0)
    start = n_fft // 2
    out = out[:, start:start + row_length]
    if out.shape[-1] < row_length:
        out = jnp.pad(out, ((0, 0), (0, row_length - out.shape[-1])))
    keep = jnp.arange(row_length)[None, :] < lengths[:, None]
    return jnp.where(keep, out, 0.0)


def batched_spec(waves, lengths, num_frames: int, cfg: SpecConfig):
    """Compressed spectrograms of zero-padded rows, as if each row were transformed on its own.

    ``waves`` (U, L) real, ``lengths`` (U,) int with ``cfg.n_fft // 2 < lengths`` and ``1 + lengths // hop <=
    num_frames``. Returns ``(spec (U, F, num_frames) complex, mask (U, num_frames))``: row ``u`` equals
    ``compress(stft(waves[u, :lengths[u]]))`` followed by zero frames (the inference padding), computed with
    static shapes (:func:`batched_stft` with the Hann window, then the compression).
    """
    spec, mask = batched_stft(waves, lengths, num_frames, cfg)
    return compress(spec, cfg) * mask[:, None, :], mask


def batched_wave(spec, lengths, row_length: int, cfg: SpecConfig):
    """Inverse of :func:`batched_spec`: ``(U, F, T)`` compressed -> ``(U, row_length)`` waveforms.

    Row ``u`` equals ``spec_to_wave(spec[u], lengths[u], cfg)`` (frames past the utterance's own are
    dropped before the inverse STFT, so its end is reconstructed exactly) followed by zeros; samples
    at and after ``lengths[u]`` are zero (:func:`batched_istft` of the decompressed spectrogram).
    """
    return batched_istft(decompress(jnp.asarray(spec), cfg), lengths, row_length, cfg)


def row_length(num_frames: int, cfg: SpecConfig) -> int:
    """Longest waveform (exclusive bound) whose STFT has at most ``num_frames`` frames: ``num_frames·hop``."""
    return int(num_frames) * cfg.hop_length


def min_length(cfg: SpecConfig) -> int:
    """Shortest waveform the centred STFT accepts: its reflect padding needs more than ``n_fft // 2`` samples."""
    return cfg.n_fft // 2 + 1


def peak_magnitude(x: np.ndarray, cfg: SpecConfig, block_frames: int = 2048) -> float:
    """``max |stft(x)|`` (float64, numpy), computed block by block so that hours of audio fit in memory."""
    x = np.asarray(x, np.float64).reshape(-1)
    n_fft, hop = cfg.n_fft, cfg.hop_length
    pad = n_fft // 2
    if x.shape[0] <= pad:
        raise ValueError(f"signal of {x.shape[0]} samples is too short for a centred STFT with n_fft={n_fft}")
    xp = np.pad(x, (pad, pad), mode="reflect")
    n = cfg.num_frames(x.shape[0])
    window = hann_window(n_fft, dtype=np.float64)
    peak = 0.0
    for t0 in range(0, n, block_frames):
        t = np.arange(t0, min(n, t0 + block_frames))
        frames = xp[t[:, None] * hop + np.arange(n_fft)[None, :]] * window
        peak = max(peak, float(np.max(np.abs(np.fft.rfft(frames, n=n_fft, axis=-1)))))
    return peak


def norm_factor(x: np.ndarray, cfg: SpecConfig, eps: float = 1e-12) -> float:
    """The inference normalisation factor of a whole signal: ``max |compress(stft(x))|``, at least ``eps``.

    Equal to the ``NF`` of :func:`jaxse.spectral.normalize_for_inference` (zero frames do not change a max).
    """
    peak = peak_magnitude(x, cfg)
    if cfg.transform == "exponent":
        peak = cfg.factor * peak**cfg.exponent
    return max(peak, eps)


# --------------------------------------------------------------------------------------------- keys


def utterance_hash(uid: str) -> tuple[int, int]:
    """Two uint32 words of a stable hash (BLAKE2b) of an utterance's identity, e.g. its relative path."""
    d = hashlib.blake2b(str(uid).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(d[:4], "little"), int.from_bytes(d[4:], "little")


def key_data(seed: int, uid: str, chunk: int = 0) -> np.ndarray:
    """uint32[5] ``(seed low, seed high, hash0, hash1, chunk)``: everything a row's key is derived from."""
    seed = int(seed) % 2**64
    h0, h1 = utterance_hash(uid)
    return np.array([seed & 0xFFFFFFFF, seed >> 32, h0, h1, int(chunk) % 2**32], np.uint32)


def derive_key(data):
    """The PRNG key of one row from its :func:`key_data` (jit-safe): ``PRNGKey(0)`` folded with each word."""
    key = jax.random.PRNGKey(0)
    for i in range(5):
        key = jax.random.fold_in(key, data[i])
    return key


# ------------------------------------------------------------------------------------------ devices


def make_mesh(devices=None, axis: str = AXIS) -> Mesh:
    """A 1-D mesh over ``devices`` (default: all devices of all processes) with the one axis ``axis``.

    Devices are ordered by (process, id), so that process ``p`` holds the ``p``-th contiguous block of a
    batch split along the axis (training loads exactly those rows on each process). Enhancement uses the
    utterance axis :data:`AXIS`, training the data axis of :mod:`jaxse.training`.
    """
    devices = jax.devices() if devices is None else list(devices)
    devices = sorted(devices, key=lambda d: (d.process_index, d.id))
    return Mesh(np.asarray(devices), (axis,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Arrays split along their leading axis over the mesh's (one) axis."""
    return NamedSharding(mesh, PartitionSpec(mesh.axis_names[0]))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def utterance_map(fn: Callable, mesh: Mesh, num_args: int, replicated_argnums: Sequence[int] = (0,)) -> Callable:
    """``jax.shard_map`` of ``fn`` over the utterance axis.

    Arguments at ``replicated_argnums`` (e.g. the network variables) are replicated; the others, and all
    outputs, are split along their leading (utterance) axis, whose size must be a multiple of the device
    count. ``fn`` sees the local rows only and must treat rows independently.
    """
    rep = set(replicated_argnums)
    axis = mesh.axis_names[0]
    in_specs = tuple(PartitionSpec() if i in rep else PartitionSpec(axis) for i in range(num_args))
    return jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=PartitionSpec(axis), check_vma=False)


# ------------------------------------------------------------------------------------------- chunks


@dataclasses.dataclass(frozen=True)
class ChunkPlan:
    """Chunks ``[starts[i], starts[i] + chunk_length)`` covering ``[0, length)``, cross-faded over ``fade`` samples.

    Chunks start every ``chunk_length - fade`` samples; the last one is moved back to end at ``length``
    (so every chunk holds only real signal; it may overlap its neighbour by more than ``fade``).
    """

    length: int
    chunk_length: int
    fade: int
    starts: tuple[int, ...]

    @property
    def num_chunks(self) -> int:
        return len(self.starts)

    def weight(self, i: int) -> np.ndarray:
        """Cross-fade weight of chunk ``i``: sin² rise over its first ``fade`` samples (not for the first
        chunk), cos² fall over its last ``fade`` (not for the last chunk), 1 elsewhere. A rise and the
        fall it overlaps sum to 1 exactly; :class:`OverlapAdd` divides by the summed weights anyway, which
        covers the moved last chunk."""
        w = np.ones(self.chunk_length, np.float64)
        if self.num_chunks == 1 or self.fade == 0:
            return w
        ramp = np.sin(0.5 * np.pi * (np.arange(self.fade) + 0.5) / self.fade) ** 2
        if i > 0:
            w[: self.fade] = ramp
        if i < self.num_chunks - 1:
            w[-self.fade:] *= ramp[::-1]
        return w


def plan_chunks(length: int, chunk_length: int, overlap: float = 0.5) -> ChunkPlan:
    """Cut ``length`` samples into chunks of ``chunk_length`` overlapping by the fraction ``overlap`` (≤ 0.5).

    A signal no longer than one chunk is one chunk of its own length.
    """
    length, chunk_length = int(length), int(chunk_length)
    if not 0.0 <= overlap <= 0.5:
        raise ValueError(f"overlap must be in [0, 0.5], got {overlap}")
    if length <= chunk_length:
        return ChunkPlan(length, length, 0, (0,))
    fade = int(round(overlap * chunk_length))
    hop = chunk_length - fade
    starts = list(range(0, length - chunk_length, hop))
    starts.append(length - chunk_length)
    return ChunkPlan(length, chunk_length, fade, tuple(starts))


class OverlapAdd:
    """Accumulates enhanced chunks of a :class:`ChunkPlan` in any order; :meth:`result` when all arrived.

    Memory: two float32 buffers of the signal's length (the device only ever sees fixed-size chunks).
    """

    def __init__(self, plan: ChunkPlan):
        self.plan = plan
        self._sum = np.zeros(plan.length, np.float32)
        self._wsum = np.zeros(plan.length, np.float32)
        self._missing = set(range(plan.num_chunks))

    @property
    def done(self) -> bool:
        return not self._missing

    def add(self, i: int, chunk: np.ndarray) -> None:
        if i not in self._missing:
            raise ValueError(f"chunk {i} added twice or out of range")
        s, n = self.plan.starts[i], self.plan.chunk_length
        chunk = np.asarray(chunk, np.float64).reshape(-1)[:n]
        w = self.plan.weight(i)
        self._sum[s:s + n] += (w * chunk).astype(np.float32)
        self._wsum[s:s + n] += w.astype(np.float32)
        self._missing.discard(i)

    def result(self) -> np.ndarray:
        if self._missing:
            raise RuntimeError(f"chunks {sorted(self._missing)} are missing")
        return (self._sum / np.maximum(self._wsum, 1e-12)).astype(np.float32)


def to_host(x) -> np.ndarray:
    """A replicated (or process-local) array as numpy, also when it spans several processes."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        if x.is_fully_replicated:
            return np.asarray(x.addressable_data(0))
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


def to_host_tree(tree):
    """:func:`to_host` on every leaf of a pytree."""
    return jax.tree.map(to_host, tree)


DEFAULT_COORDINATOR_TIMEOUT = 300.0  # seconds a process waits for the whole run to form (--coordinator_timeout)

# The command-line flags of a multi-process run and the environment variables that set them where no flag does.
DISTRIBUTED_ENV = {"coordinator_address": "JAXSE_COORDINATOR_ADDRESS", "num_processes": "JAXSE_NUM_PROCESSES",
                   "process_id": "JAXSE_PROCESS_ID", "coordinator_timeout": "JAXSE_COORDINATOR_TIMEOUT"}


def distributed_settings(coordinator_address: str | None = None, num_processes: int | None = None,
                         process_id: int | None = None, coordinator_timeout: float | None = None,
                         environ=None) -> dict:
    """The multi-process settings of a command line, as keyword arguments of :func:`initialize_distributed`:
    each value given (a flag), else its environment variable (:data:`DISTRIBUTED_ENV`; unset or empty: none),
    and the timeout :data:`DEFAULT_COORDINATOR_TIMEOUT` when neither sets it. A variable that is not a number
    where one is needed, or a timeout that is not a finite number of seconds > 0: ``ValueError``, one line
    naming the variable or flag (``JAXSE_PROCESS_ID must be an integer, got 'abc'``)."""
    import os

    env = os.environ if environ is None else environ
    given = {"coordinator_address": coordinator_address, "num_processes": num_processes, "process_id": process_id,
             "coordinator_timeout": coordinator_timeout}
    out = {}
    for name, var in DISTRIBUTED_ENV.items():
        value, source = given[name], f"--{name}"
        text = str(env.get(var) or "").strip()
        if value is None and text:
            value, source = text, var
            if name in ("num_processes", "process_id"):
                least = 1 if name == "num_processes" else 0
                try:
                    value = int(text)
                except ValueError:
                    value = None
                if value is None or value < least:
                    raise ValueError(f"{var} must be an integer >= {least}, got {text!r}")
        if name == "coordinator_timeout":
            value = DEFAULT_COORDINATOR_TIMEOUT if value is None else value
            try:
                value = float(value)
                ok = math.isfinite(value) and value > 0
            except ValueError:
                ok = False
            if not ok:
                shown = text if source == var else given[name]
                raise ValueError(f"{source} must be a finite number of seconds > 0, got {shown!r}")
        out[name] = value
    return out


def check_process_ids(num_processes: int | None, process_id: int | None) -> None:
    """``ValueError`` (one line saying the valid range) unless ``num_processes`` (``None``: one process) is >= 1
    and ``process_id`` (``None``: 0) is in ``[0, num_processes)``."""
    if num_processes is not None and int(num_processes) < 1:
        raise ValueError(f"--num_processes must be >= 1, got {num_processes}")
    if process_id is None:
        return
    count = 1 if num_processes is None else int(num_processes)
    if not 0 <= int(process_id) < count:
        of = (f"--num_processes {count}" if num_processes is not None else
              "no --num_processes: a single process")
        raise ValueError(f"--process_id must be in [0, {count}) ({of}), got {process_id}")


def _split_address(address: str) -> tuple[str, int]:
    """``(host, port)`` of ``HOST:PORT`` (``[v6]:PORT`` too); ``ValueError`` naming the flag otherwise."""
    host, sep, port = str(address).strip().rpartition(":")
    try:
        number = int(port)
    except ValueError:
        number = -1
    if not sep or not host or not 0 < number < 65536:
        raise ValueError(f"--coordinator_address must be HOST:PORT (the port in 1..65535), got {address!r}")
    return host.strip("[]"), number


def _coordinator_timed_out(address: str | None, num_processes, timeout: float, prog: str) -> None:
    """What a process that waited ``timeout`` seconds for its run says (one line) before it exits with code 2."""
    import os
    import socket
    import sys

    if address is None:
        why = "the cluster's processes did not all join (--distributed)"
    else:
        host, port = _split_address(address)
        try:
            socket.create_connection((host, port), timeout=2).close()
            why = f"the coordinator at {address} answers, but not all {num_processes} processes joined"
        except OSError as exc:
            why = f"nothing answers at {address} ({exc.strerror or type(exc).__name__}): is process 0 running there?"
    sys.stderr.write(f"{prog}: error: no multi-process run formed within {timeout:g} s (--coordinator_timeout): "
                     f"{why}\n")
    sys.stderr.flush()
    os._exit(2)


def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None, auto: bool = False,
                           coordinator_timeout: float = DEFAULT_COORDINATOR_TIMEOUT, prog: str = "jaxse") -> bool:
    """Join a multi-process run (call before any other JAX work); returns whether it did.

    With ``coordinator_address`` (``host:port`` of process 0), ``num_processes`` and ``process_id``, calls
    ``jax.distributed.initialize`` with them; with ``auto=True`` and no address, lets JAX detect the cluster
    (SLURM, Open MPI, TPU pods...). Does nothing for a single process. CPU collectives use gloo. Bad values
    (an address that is not ``HOST:PORT``, ``process_id`` outside ``[0, num_processes)``): ``ValueError``
    before anything is joined.

    Before joining, one line goes to stderr: ``PROG: waiting for the coordinator at HOST:PORT (process I of N;
    up to S s, --coordinator_timeout)``. If the run has not formed after ``coordinator_timeout`` seconds
    (process 0 not started, not reachable, or fewer processes than ``num_processes``), the process writes
    ``PROG: error: no multi-process run formed within S s (--coordinator_timeout): ...`` (saying whether
    anything answers at the address) and exits with code 2, a usage/connection error: JAX's own timeout
    would abort the process with a C++ stack trace (``jax.distributed.initialize``'s
    ``initialization_timeout``, set here a minute later as a backstop), which Python cannot catch.
    """
    import sys
    import threading

    if coordinator_address is None and not auto:
        check_process_ids(num_processes, process_id)
        if num_processes not in (None, 1):
            raise ValueError("--num_processes > 1 needs a --coordinator_address (host:port of process 0)")
        return False
    if coordinator_address is not None:
        _split_address(coordinator_address)
        if num_processes == 1:
            check_process_ids(num_processes, process_id)
            return False
        if not auto:
            if num_processes is None or process_id is None:
                raise ValueError("--coordinator_address needs --num_processes and --process_id")
            check_process_ids(num_processes, process_id)
    timeout = float(coordinator_timeout)
    if not (math.isfinite(timeout) and timeout > 0):
        raise ValueError(f"--coordinator_timeout must be a finite number of seconds > 0, got {coordinator_timeout}")
    where = f"the coordinator at {coordinator_address}" if coordinator_address else "the cluster (auto-detected)"
    who = f"process {process_id} of {num_processes}; " if process_id is not None and num_processes else ""
    sys.stderr.write(f"{prog}: waiting for {where} ({who}up to {timeout:g} s, --coordinator_timeout)\n")
    sys.stderr.flush()
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    watchdog = threading.Timer(timeout, _coordinator_timed_out, (coordinator_address, num_processes, timeout, prog))
    watchdog.daemon = True
    watchdog.start()
    try:
        jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                                   process_id=process_id, initialization_timeout=int(math.ceil(timeout)) + 60)
    finally:
        watchdog.cancel()
    return True
