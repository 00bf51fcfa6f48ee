"""The enhance log: one CSV row per input file (``file, duration_s, seconds, rtf, status, message``), appended
and flushed row by row so that a killed run keeps its log. Written by :func:`jaxse.engine.files.enhance_files`,
its per-process parts merged by :func:`jaxse.multihost.merge_logs`."""

from __future__ import annotations

import csv
from pathlib import Path

from jaxse.errors import one_line

LOG_NAME = "enhance_log.csv"
LOG_FIELDS = ("file", "duration_s", "seconds", "rtf", "status", "message")


class CsvLog:
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
        self._w.writerow([file, fmt(duration, 3), fmt(seconds, 3), fmt(rtf, 4), status, one_line(message, None)])
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def read_log(path) -> list[dict]:
    """Rows of an enhance log (CSV) as dicts."""
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))
