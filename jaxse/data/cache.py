"""The decoded-audio cache of the data sets: one least-recently-used store bounded in bytes (numpy only).

Every data set of :mod:`jaxse.data`, :mod:`jaxse.sgmse.data` and :mod:`jaxse.av.data` reads its decoded files
(clean speech, noisy/clean pairs, noise recordings, visual features) through a :class:`DecodeCache`; the
training loop gives all of a run's data sets one shared cache of ``data.cache_mb`` megabytes (0: none, every
row decoded from disk), so that a process holds at most that much decoded audio whatever the corpus size.
A data set built without one gets its own unbounded cache (the behaviour for small corpora, tests and
interactive use: each file decoded once).

Keys name the file and how it was decoded (kind, path, sample rate, trim bounds), so data sets over the same
files share entries. A cache is per process: pickled (to a worker process of :mod:`jaxse.data.pipeline`) it
arrives empty, with its bound.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

MB = 1 << 20


def nbytes(value) -> int:
    """Bytes of an array or of a tuple/list of arrays."""
    if isinstance(value, (tuple, list)):
        return sum(nbytes(v) for v in value)
    return int(np.asarray(value).nbytes)


class DecodeCache:
    """Least-recently-used store of decoded files, at most ``max_bytes`` bytes in all.

    ``max_bytes=None``: unbounded (nothing evicted); ``0``: off (:meth:`put` stores nothing). A value larger
    than the bound is not stored; storing one evicts the least recently used entries until the total fits.
    :attr:`hits` and :attr:`misses` count :meth:`get` calls.
    """

    def __init__(self, max_bytes: int | None = None):
        if max_bytes is not None and int(max_bytes) < 0:
            raise ValueError(f"cache size must be >= 0 bytes, got {max_bytes}")
        self.max_bytes = None if max_bytes is None else int(max_bytes)
        self._entries: OrderedDict = OrderedDict()
        self.nbytes = 0
        self.hits = 0
        self.misses = 0

    @classmethod
    def of_mb(cls, megabytes: float | None) -> "DecodeCache":
        """A cache of ``megabytes`` MiB (``data.cache_mb``; ``None``: unbounded, 0: off)."""
        if megabytes is None:
            return cls(None)
        megabytes = float(megabytes)
        if not megabytes >= 0:
            raise ValueError(f"data.cache_mb must be >= 0, got {megabytes}")
        return cls(int(megabytes * MB))

    @property
    def enabled(self) -> bool:
        return self.max_bytes != 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key) -> bool:
        return key in self._entries

    def keys(self) -> list:
        """The keys held, least recently used first."""
        return list(self._entries)

    def get(self, key):
        """The value of ``key`` (now the most recently used), or ``None``."""
        value = self._entries.get(key)
        if value is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return value

    def put(self, key, value):
        """Store ``value`` under ``key`` when it fits the bound (evicting the least recently used); returns it."""
        size = nbytes(value)
        if self.max_bytes is not None and size > self.max_bytes:
            return value
        old = self._entries.pop(key, None)
        if old is not None:
            self.nbytes -= nbytes(old)
        if self.max_bytes is not None:
            while self._entries and self.nbytes + size > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self.nbytes -= nbytes(evicted)
        self._entries[key] = value
        self.nbytes += size
        return value

    def clear(self) -> None:
        self._entries.clear()
        self.nbytes = 0

    def __getstate__(self) -> dict:
        return {"max_bytes": self.max_bytes}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["max_bytes"])

    def __repr__(self) -> str:
        bound = "unbounded" if self.max_bytes is None else f"{self.max_bytes / MB:.1f} MiB"
        return (f"DecodeCache({bound}: {len(self)} entries, {self.nbytes / MB:.1f} MiB, {self.hits} hits, "
                f"{self.misses} misses)")
