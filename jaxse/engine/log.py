"""The enhance log: one CSV row per input file (``file, duration_s, seconds, rtf, status, message``), appended
and flushed row by row so that a killed run keeps its log. Written by :func:`jaxse.engine.files.enhance_files`,
its per-process parts merged by :func:`jaxse.multihost.merge_logs`."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from jaxse.errors import one_line

LOG_NAME = "enhance_log.csv"
LOG_FIELDS = ("file", "duration_s", "seconds", "rtf", "status", "message")


class CsvLog:
    """Append-only CSV (header written once); every row written whole with one unbuffered ``write``, so a
    killed run keeps its log. A row that cannot be written (``OSError``, e.g. a full disk) raises, leaving the
    file as it was before that row (a partial row is cut off again); a log whose header could not be written is
    removed (no 0-byte log is left)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        existed = self.path.exists()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        if os.fstat(self._fd).st_size == 0:
            try:
                self._write([LOG_FIELDS])
            except OSError:
                os.close(self._fd)
                if not existed:
                    os.unlink(self.path)
                raise

    def _write(self, rows) -> None:
        buf = io.StringIO()
        csv.writer(buf).writerows(rows)
        data = buf.getvalue().encode("utf-8")
        size = os.fstat(self._fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view):]
        except OSError:
            try:
                os.ftruncate(self._fd, size)  # no partial row for the next one to land after
            except OSError:
                pass
            raise

    def row(self, file: str, duration: float | None, seconds: float | None, status: str, message: str = "") -> None:
        rtf = seconds / duration if duration and seconds is not None else None
        fmt = lambda v, p: "" if v is None else f"{v:.{p}f}"  # noqa: E731
        self._write([[file, fmt(duration, 3), fmt(seconds, 3), fmt(rtf, 4), status, one_line(message, None)]])

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def read_log(path) -> list[dict]:
    """Rows of an enhance log (CSV) as dicts."""
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))
