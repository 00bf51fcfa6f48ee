"""The training input pipeline of every family, on grain: the local batch of each step, made in worker processes.

Element ``s`` of the pipeline is the local batch of training step ``s`` (1-based, as the training loop counts):
``phase_data[frames].train_batch(seed, s - 1, batch, process_index, process_count)`` with ``(frames, batch)``
the crop phase of step ``s`` (:func:`jaxse.data.phase_at`). So the stream is a pure function of ``(seed, step)``
and the process index, whoever computes it: ``num_workers = 0`` computes it in the calling thread (one step at a
time, as the loop always did), ``N > 0`` in ``N`` spawned worker processes (grain ``mp_prefetch``: worker ``i``
makes steps ``start + 1 + i``, ``start + 1 + i + N``, ...; the loop takes them in order), each holding at most
``prefetch`` finished batches. A resume starts the pipeline at the checkpoint's step, so it reproduces the
uninterrupted stream exactly with any number of workers; no iterator state needs saving beyond the step the
checkpoint already holds.

Memory: the batches in flight (``num_workers × prefetch`` local batches) plus, per process, the data sets'
:class:`~jaxse.data.cache.DecodeCache` (``data.cache_mb``), whatever the corpus size. Every family's data set
works unchanged (clean crops, pairs, on-the-fly mixing, visual features): anything with ``train_batch``.
"""

from __future__ import annotations

import dataclasses
import os

from jaxse.data import phase_at
from jaxse.data.cache import DecodeCache


def default_num_workers(cpu_count: int | None = None) -> int:
    """Worker processes for this machine: one core left to the training loop, at most 8."""
    cpus = os.cpu_count() if cpu_count is None else int(cpu_count)
    return max(0, min(8, (cpus or 1) - 1))


@dataclasses.dataclass(frozen=True)
class PipelineSettings:
    """``data.num_workers`` (0: in the training thread), ``data.prefetch`` (finished batches per worker) and
    ``data.cache_mb`` (bounded decode cache per process; 0: none)."""

    num_workers: int = 0
    prefetch: int = 2
    cache_mb: float = 0.0

    @classmethod
    def from_config(cls, config) -> "PipelineSettings":
        """The settings of ``config.data`` (fields read with ``.get``: an old config gets the defaults, with
        :func:`default_num_workers`); ``ValueError`` (one line) for a bad value."""
        d = config.data
        workers = d.get("num_workers", None)
        values = {"data.num_workers": default_num_workers() if workers is None else workers,
                  "data.prefetch": d.get("prefetch", 2), "data.cache_mb": d.get("cache_mb", 0)}
        for name, value in values.items():
            integer = name != "data.cache_mb"
            low = 1 if name == "data.prefetch" else 0
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value >= low
            if not ok or (integer and value != int(value)) or value != value or value == float("inf"):
                kind = "an integer" if integer else "a finite number"
                raise ValueError(f"{name} must be {kind} >= {low}, got {value!r}")
        return cls(int(values["data.num_workers"]), int(values["data.prefetch"]), float(values["data.cache_mb"]))


def share_cache(datasets, cache_mb: float) -> DecodeCache:
    """Give the data sets (``None`` entries skipped) one :class:`DecodeCache` of ``cache_mb`` MiB; returns it."""
    cache = DecodeCache.of_mb(cache_mb)
    for ds in datasets:
        if ds is not None and hasattr(ds, "set_cache"):
            ds.set_cache(cache)
    return cache


class StepBatch:
    """``step -> (step, local batch of that step)``: the pipeline's element function (picklable, for the
    workers)."""

    def __init__(self, phase_data: dict, phases, seed: int, process_index: int = 0, process_count: int = 1):
        self.phase_data, self.phases = dict(phase_data), list(phases)
        self.seed, self.process_index, self.process_count = int(seed), int(process_index), int(process_count)

    def __call__(self, step):
        step = int(step)
        _, frames, batch = phase_at(self.phases, step)
        rows = self.phase_data[frames].train_batch(self.seed, step - 1, batch, self.process_index,
                                                   self.process_count)
        return step, rows


class TrainBatches:
    """The local batches of steps ``start + 1 .. stop`` in order (:meth:`next`), from a grain pipeline.

    ``phase_data``: crop frames -> the training data set at that crop length; ``phases``:
    :func:`jaxse.data.crop_phases`. Close it (or use it as a context manager) to stop the workers.
    """

    def __init__(self, phase_data: dict, phases, seed: int, start: int, stop: int, process_index: int = 0,
                 process_count: int = 1, num_workers: int = 0, prefetch: int = 2):
        import grain  # imports jax: only where a pipeline is built

        self.start, self.stop = int(start), int(stop)
        self.expected = self.start + 1
        count = max(self.stop - self.start, 0)
        self.num_workers = min(int(num_workers), count)
        fn = StepBatch(phase_data, phases, seed, process_index, process_count)
        ds = grain.MapDataset.range(self.start + 1, self.stop + 1).map(fn)
        # No threads of grain's own: a worker makes one batch at a time, and with no worker the loop does.
        it = ds.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
        if self.num_workers > 0:
            from absl import flags

            if not flags.FLAGS.is_parsed():  # grain reads its absl flags; outside an absl app: their defaults
                flags.FLAGS.mark_as_parsed()
            # Batches travel pickled through the workers' queues, not in shared memory: grain leaves the blocks
            # of batches still in flight at exit to the resource tracker, which warns about "leaked" objects.
            it = grain.experimental.WithOptionsIterDataset(it, grain.experimental.DatasetOptions(min_shm_size=1 << 62))
            it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=self.num_workers,
                                                             per_worker_buffer_size=int(prefetch)))
        self._iter = iter(it) if count else iter(())

    def next(self, step: int):
        """The local batch of step ``step`` (the steps must be asked for in order)."""
        if int(step) != self.expected:
            raise RuntimeError(f"input pipeline: step {step} asked for, the next one is {self.expected}")
        got, rows = next(self._iter)
        if got != int(step):
            raise RuntimeError(f"input pipeline: got the batch of step {got} for step {step}")
        self.expected += 1
        return rows

    def __iter__(self):
        for step in range(self.expected, self.stop + 1):
            yield step, self.next(step)

    def close(self) -> None:
        close = getattr(self._iter, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> "TrainBatches":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
