"""Enhancing one data set with several processes (hosts): disjoint shares, one log part each, one merged log.

Every process of a run lists the same input tree, reads every file's header and takes its share of the
files with :func:`assign_shares`: the longest file first, each to the process with the least audio so far
(ties to the lower process index, then by path), so the shares are disjoint, cover every file, are balanced
by duration and are the same in every process and on every rerun. A process enhances only its share, on its
own devices (the usual batching and ``shard_map`` over them), skipping outputs that exist, so a killed process
rerun with the same flags finishes only what it had left. Per-utterance noise keys come from the seed and
the file's relative path, and on CPU each row is computed on its own (:class:`jaxse.engine.batch.Enhancer`'s
``row_by_row``), so the outputs are bit-identical to those of a one-process run on the same kind of machine.
That includes the CPU threads per process: XLA:CPU splits some sums by thread count, so a process pinned to
one core and one with two differ in the last bit (1 LSB of 16-bit PCM on some samples, measured).

Each process appends its rows to its own part of the log, ``LOG.parts/process-I-of-N.csv`` next to the
log ``LOG`` (default ``OUTDIR/enhance_log.csv``); when it finishes, it appends to ``LOG`` every part's rows
not merged yet (:func:`merge_logs`, under a file lock, remembering in ``LOG.parts/merged.json`` how many rows
of each part were merged). So ``LOG`` stays the one append-only log a one-process run writes, and after the
last process ends it holds every row. For a run whose processes ended at different times or were killed,
merge by hand::

    python -m jaxse.multihost OUTDIR          # or the log file of --log
"""

from __future__ import annotations

import csv
import dataclasses
import heapq
import json
import os
import sys
from pathlib import Path
from typing import Mapping

from jaxse.errors import one_line
from jaxse.engine.log import LOG_FIELDS, LOG_NAME

PARTS_SUFFIX = ".parts"
MERGED_NAME = "merged.json"


@dataclasses.dataclass(frozen=True)
class Share:
    """This process's place in a run of ``count`` processes (``index`` in ``[0, count)``)."""

    index: int = 0
    count: int = 1

    def __post_init__(self):
        from jaxse.parallel import check_process_ids

        check_process_ids(self.count, self.index)  # "--process_id must be in [0, N) ..."

    @property
    def single(self) -> bool:
        return self.count == 1

    def __str__(self) -> str:
        return f"process {self.index} of {self.count}"


def resolve_share(coordinator_address: str | None = None, num_processes: int | None = None,
                  process_id: int | None = None, auto: bool = False, coordinator_timeout: float | None = None,
                  prog: str = "enhance.py") -> Share:
    """This process's share, joining ``jax.distributed`` where asked (call before any other JAX work).

    With ``coordinator_address`` (``host:port`` of process 0; also ``num_processes`` and ``process_id``) or
    ``auto`` (cluster detection: SLURM, Open MPI, TPU pods...), the process joins the run with
    :func:`jaxse.parallel.initialize_distributed` and its share is ``jax.process_index()`` of
    ``jax.process_count()``. With ``num_processes`` and ``process_id`` alone, the share is just those: no
    coordination at all, so each process (and a rerun of one of them) can start and stop on its own.
    Out-of-range values are a ``ValueError`` that says the valid range (``--process_id must be in [0, N)
    ...``). ``coordinator_timeout`` (seconds; ``None``: the default) and ``prog`` (the prefix of its lines):
    :func:`jaxse.parallel.initialize_distributed`, which says it is waiting and gives up after that long.
    """
    from jaxse.parallel import DEFAULT_COORDINATOR_TIMEOUT, check_process_ids, initialize_distributed

    if coordinator_address is not None or auto:
        timeout = DEFAULT_COORDINATOR_TIMEOUT if coordinator_timeout is None else coordinator_timeout
        if initialize_distributed(coordinator_address, num_processes, process_id, auto=auto,
                                  coordinator_timeout=timeout, prog=prog):
            import jax

            return Share(jax.process_index(), jax.process_count())
        return Share()
    check_process_ids(num_processes, process_id)
    if num_processes in (None, 1):
        return Share()
    if process_id is None:
        raise ValueError(f"--num_processes {num_processes} needs a --process_id in [0, {num_processes})")
    return Share(int(process_id), int(num_processes))


def assign_shares(durations: Mapping[str, float], count: int) -> dict[str, int]:
    """Each key's process in ``[0, count)``: longest first to the process with the least audio (then the
    fewest files, then the lowest index), so unreadable files (duration 0) are spread too. Deterministic."""
    loads = [(0.0, 0, i) for i in range(count)]  # (seconds, files, process)
    owner = {}
    for key in sorted(durations, key=lambda k: (-float(durations[k] or 0.0), k)):
        load, n, i = heapq.heappop(loads)
        owner[key] = i
        heapq.heappush(loads, (load + float(durations[key] or 0.0), n + 1, i))
    return owner


def parts_dir(log_path) -> Path:
    log_path = Path(log_path)
    return log_path.with_name(log_path.name + PARTS_SUFFIX)


def part_path(log_path, share: Share) -> Path:
    """Where ``share``'s process writes its log rows."""
    return parts_dir(log_path) / f"process-{share.index}-of-{share.count}.csv"


def _read_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    return (rows[0], rows[1:]) if rows else ([], [])


def _part_order(path: Path) -> tuple:
    """Parts sorted by process count, then index (``process-I-of-N.csv``); anything else last, by name."""
    try:
        i, n = path.stem[len("process-"):].split("-of-")
        return (0, int(n), int(i), path.name)
    except ValueError:
        return (1, 0, 0, path.name)


def merge_logs(log_path) -> int:
    """Append to ``log_path`` the rows of its parts (``log_path.parts/*.csv``) not merged yet; returns how
    many rows were appended. Safe to call from several processes at once (a lock file serialises them) and
    again at any time (each part's merged row count is kept in ``merged.json``)."""
    import fcntl

    log_path = Path(log_path)
    parts = parts_dir(log_path)
    if not parts.is_dir():
        raise FileNotFoundError(f"{parts}: no log parts (not the log of a multi-process run?)")
    with open(parts / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        merged_file = parts / MERGED_NAME
        merged = json.loads(merged_file.read_text()) if merged_file.exists() else {}
        new_rows = []
        for part in sorted(parts.glob("process-*.csv"), key=_part_order):
            header, rows = _read_rows(part)
            if header and tuple(header) != LOG_FIELDS:
                raise ValueError(f"{part}: not an enhance log part (header {header})")
            done = int(merged.get(part.name, 0))
            new_rows += rows[done:]
            merged[part.name] = len(rows)
        if new_rows:
            fresh = not log_path.exists() or log_path.stat().st_size == 0
            with open(log_path, "a", newline="", encoding="utf-8") as fh:
                w = csv.writer(fh)
                if fresh:
                    w.writerow(LOG_FIELDS)
                w.writerows(new_rows)
        tmp = merged_file.with_name(merged_file.name + ".tmp")
        tmp.write_text(json.dumps(merged, indent=1, sort_keys=True))
        os.replace(tmp, merged_file)
        return len(new_rows)


def main(argv=None) -> int:
    """``python -m jaxse.multihost OUTDIR|LOG``: merge the log parts of a multi-process enhancement run."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m jaxse.multihost",
                                description="Merge the per-process log parts of a multi-process enhance.py run "
                                            "into its one log (rows not merged yet are appended).")
    p.add_argument("target", help="the run's output directory (log OUTDIR/enhance_log.csv) or its --log file")
    args = p.parse_args(argv)
    target = Path(args.target)
    log_path = target / LOG_NAME if target.is_dir() else target
    try:
        n = merge_logs(log_path)
    except (OSError, ValueError) as exc:
        sys.stderr.write(f"jaxse.multihost: error: {one_line(exc, None)}\n")
        return 2
    print(f"merged {n} new row(s) into {log_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
