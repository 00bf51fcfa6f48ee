"""Console progress bar and metric writers for training (no tqdm, no TensorFlow).

* :class:`ProgressBar` draws ``step/total``, steps/s, the latest loss and the ETA on stderr. On a
  terminal it redraws one line in place; otherwise (a log file) it prints a plain line now and then.
* :class:`MetricWriter` writes scalars to TensorBoard event files (``tensorboardX``) under
  ``WORKDIR/tb`` and, one JSON object per line, to ``WORKDIR/metrics.jsonl``. Audio goes to TensorBoard.

Both take ``enabled``: in a multi-process run only process 0 passes ``True``; the others get objects
that do nothing, so the training loop needs no ``if`` around every call.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Mapping

import numpy as np


def format_duration(seconds: float) -> str:
    """``3725 -> '1:02:05'``, ``65 -> '01:05'``; ``'?'`` for an unknown (non-finite) duration."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def _format_value(v) -> str:
    if isinstance(v, (float, np.floating)):
        v = float(v)
        if v != 0.0 and (abs(v) >= 1e4 or abs(v) < 1e-3):
            return f"{v:.3e}"
        return f"{v:.4f}"
    return str(v)


class ProgressBar:
    """A one-line progress bar for a loop of ``total`` steps, starting at ``initial`` (a resumed run).

    ``update(step, **postfix)`` is cheap (it redraws at most every ``min_interval`` seconds on a
    terminal, every ``log_interval`` seconds otherwise). The rate is measured over the steps done by
    this process (``initial`` excluded), so the ETA of a resumed run is right from the start.
    """

    def __init__(
        self,
        total: int,
        initial: int = 0,
        desc: str = "train",
        stream=None,
        enabled: bool = True,
        width: int = 24,
        min_interval: float = 0.2,
        log_interval: float = 30.0,
    ):
        self.total = int(total)
        self.initial = int(initial)
        self.step = int(initial)
        self.desc = desc
        self.stream = sys.stderr if stream is None else stream
        self.enabled = bool(enabled)
        self.width = int(width)
        self.postfix: dict = {}
        self._t0 = time.perf_counter()
        self._last_draw = -math.inf
        isatty = getattr(self.stream, "isatty", None)
        self._tty = bool(isatty and isatty())
        self._interval = min_interval if self._tty else log_interval
        self._dirty = False  # a partial line is on screen (tty only)

    @property
    def rate(self) -> float:
        """Steps per second since the bar was created (0 before the first step)."""
        done = self.step - self.initial
        elapsed = time.perf_counter() - self._t0
        return done / elapsed if done > 0 and elapsed > 0 else 0.0

    @property
    def eta(self) -> float:
        r = self.rate
        return (self.total - self.step) / r if r > 0 else math.inf

    def format(self) -> str:
        frac = min(max(self.step / self.total, 0.0), 1.0) if self.total > 0 else 1.0
        filled = int(round(frac * self.width))
        bar = "#" * filled + "." * (self.width - filled)
        parts = [f"{self.desc} [{bar}] {self.step}/{self.total}", f"{self.rate:.2f} step/s"]
        parts += [f"{k} {_format_value(v)}" for k, v in self.postfix.items()]
        parts.append(f"ETA {format_duration(self.eta)}")
        return " | ".join(parts)

    def update(self, step: int, force: bool = False, **postfix) -> None:
        """Set the number of completed steps (absolute, not an increment) and optional fields."""
        self.step = int(step)
        self.postfix.update(postfix)
        if not self.enabled:
            return
        now = time.perf_counter()
        if force or now - self._last_draw >= self._interval or self.step >= self.total:
            self._last_draw = now
            self._draw()

    def _draw(self) -> None:
        line = self.format()
        if self._tty:
            self.stream.write("\r" + line + "\x1b[K")
            self._dirty = True
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def write(self, message: str) -> None:
        """Print a line without garbling the bar (the bar is redrawn below it on a terminal)."""
        if not self.enabled:
            return
        if self._tty and self._dirty:
            self.stream.write("\r\x1b[K")
        self.stream.write(message + "\n")
        if self._tty and self._dirty:
            self.stream.write(self.format())
        self.stream.flush()

    def close(self) -> None:
        if not self.enabled:
            return
        self._draw()
        if self._tty:
            self.stream.write("\n")
            self._dirty = False
        self.stream.flush()


class MetricWriter:
    """Scalars to ``WORKDIR/tb`` (TensorBoard) and ``WORKDIR/metrics.jsonl``; audio to TensorBoard.

    Each ``write_scalars(step, {...})`` call appends one line ``{"step": s, "time": unix, **scalars}``.
    ``resume_step``: when a run restarts from a checkpoint at that step, lines of the JSONL file with
    a larger step (written after that checkpoint by the interrupted run) are dropped first, so the
    file describes one consistent run. TensorBoard shows the newest value at a repeated step.
    """

    def __init__(self, workdir, enabled: bool = True, resume_step: int | None = None, tensorboard: bool = True):
        self.enabled = bool(enabled)
        self.workdir = Path(workdir)
        self.jsonl_path = self.workdir / "metrics.jsonl"
        self._tb = None
        self._fh = None
        if not self.enabled:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and self.jsonl_path.exists():
            self._truncate_after(int(resume_step))
        self._fh = open(self.jsonl_path, "a", encoding="utf-8")
        if tensorboard:
            from tensorboardX import SummaryWriter  # imported lazily: only the writing process needs it

            self._tb = SummaryWriter(logdir=str(self.workdir / "tb"))

    def _truncate_after(self, step: int) -> None:
        kept = []
        for line in self.jsonl_path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a crash
            if int(rec.get("step", -1)) <= step:
                kept.append(line)
        tmp = self.jsonl_path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(k + "\n" for k in kept), encoding="utf-8")
        tmp.replace(self.jsonl_path)

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        rec = {"step": int(step), "time": round(time.time(), 3)}
        for k, v in scalars.items():
            rec[k] = float(v)
            if self._tb is not None:
                self._tb.add_scalar(k, float(v), int(step))
        self._fh.write(json.dumps(rec) + "\n")
        self._fh.flush()

    def write_audio(self, step: int, tag: str, wave, sample_rate: int) -> None:
        if not self.enabled or self._tb is None:
            return
        self._tb.add_audio(tag, np.asarray(wave, np.float32).reshape(-1), int(step), sample_rate=int(sample_rate))

    def write_text(self, step: int, tag: str, text: str) -> None:
        if not self.enabled or self._tb is None:
            return
        self._tb.add_text(tag, text, int(step))

    def flush(self) -> None:
        if self._fh is not None:
            self._fh.flush()
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def read_metrics(workdir) -> list[dict]:
    """The records of ``WORKDIR/metrics.jsonl`` (empty list if there is none)."""
    path = Path(workdir) / "metrics.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return out
