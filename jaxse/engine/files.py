"""The dataset runner: :func:`enhance_files` runs an :class:`jaxse.engine.batch.Enhancer` over a file or a
directory tree. Mirrored output tree (same relative paths, extensions, sample rates and lengths), resampling to
the method's rate and back, atomic writes, resumable (outputs that exist are skipped), one CSV log row per file
(:mod:`jaxse.engine.log`), bad files logged and skipped, implausible output peaks flagged
(:func:`peak_warning`), and a multi-process run's share of the files (:mod:`jaxse.multihost`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import soundfile as sf

from jaxse import multihost
from jaxse.audio import (_UNCLIPPED_SUBTYPES, AUDIO_EXTENSIONS, AudioError, is_under, read_audio, resample,
                         resampled_length, write_audio)
from jaxse.errors import one_line
from jaxse.engine.batch import EnhanceResult, Enhancer
from jaxse.engine.log import LOG_NAME, CsvLog
from jaxse.engine.outdir import OutputLock, probe_space, remove_stale_parts
from jaxse.logging_utils import ProgressBar, format_duration

# Extensions looked for in an input directory: the usual ones plus the other containers libsndfile reads.
INPUT_EXTENSIONS = tuple(AUDIO_EXTENSIONS) + (
    ".oga", ".opus", ".aifc", ".snd", ".caf", ".w64", ".rf64", ".voc", ".sph", ".nist", ".wve", ".avr",
    ".paf", ".svx", ".xi", ".sds", ".ircam", ".sf")

# An enhanced file is flagged (still written, logged "ok" with a "warning: ..." message) when its peak exceeds
# PEAK_RATIO_LIMIT x max(input peak, PEAK_FLOOR). Enhancement removes noise, so the speech estimate keeps about
# the mixture's level (the backends scale their estimate back by the input's own normalisation factor)
# and its peak seldom exceeds the mixture's by much, where noise and speech partly cancel. 4x (+12 dB) leaves
# room for that and flags the diverged samplers seen in practice (peaks of 23 to 9,103 for an input peak of
# 0.45 with --config.num_steps <= 5). The floor (-60 dBFS) keeps a near-silent input from flagging an output
# that is still quiet.
PEAK_RATIO_LIMIT = 4.0
PEAK_FLOOR = 1e-3


@dataclasses.dataclass
class RunSummary:
    """What an :func:`enhance_files` run did: file counts, audio and compute seconds, the engine's stats."""

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


def check_inputs(input_path, output_dir=None) -> list[Path]:
    """The input files (:func:`list_inputs`, leaving out ``output_dir``); ``ValueError`` (one line) for a folder
    holding none."""
    root, files = list_inputs(input_path, exclude=[Path(output_dir)] if output_dir is not None else [])
    if not files:
        raise ValueError(f"no audio files under {input_path} (extensions: {', '.join(INPUT_EXTENSIONS)})")
    return files


def check_output_paths(input_path, output_dir, log_path=None) -> None:
    """Raise ``ValueError`` (one line) if :func:`enhance_files` could not write ``output_dir`` and the log, or
    would write over or into its input; leaves nothing behind.

    Refused: an output directory that is a file, lies under a file or cannot be created or written; a log
    (default ``output_dir/enhance_log.csv``) that is a directory or cannot be created or written; an output
    directory that is the input folder or holds it (the outputs would overwrite the inputs, or land in the input
    tree while the inputs are skipped as outputs), or that is the folder of a single input file. A missing
    path is checked at its nearest existing ancestor: ``os.access`` (write + search: permissions, read-only
    file systems), then a ``.enhance-probe-*`` directory made there holding a 64 KiB file, written, fsynced
    and removed at once (what ``os.access`` lets pass: root on a pseudo file system, a full disk); an existing
    log is opened for appending and closed, unchanged. An output directory inside the input folder is fine: it is left out of the inputs.
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
    def refused(where: str, is_dir: bool = True) -> str | None:
        """Why nothing can be written in (or to) ``where``; ``None`` if it can."""
        if not os.access(where, os.W_OK | os.X_OK if is_dir else os.W_OK):
            return "permission denied or a read-only file system"
        try:  # what os.access lets pass (e.g. root on a pseudo file system) only trying shows; nothing is left
            if is_dir:
                probe_dir = tempfile.mkdtemp(prefix=".enhance-probe-", dir=where)
                try:
                    probe_space(probe_dir)  # some data too: a full disk still lets a directory be made
                finally:
                    os.rmdir(probe_dir)
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
                  share=None, lock: OutputLock | None = None) -> RunSummary:
    """Enhance a file or a directory tree into ``output_dir`` (same relative paths and extensions).

    Each file is read (any format libsndfile reads), mixed down to mono, resampled to the method's rate,
    enhanced, resampled back to its own rate and written atomically with its own length. Files whose output
    exists are skipped unless ``overwrite``. Unreadable, empty, non-finite or too-short files are logged and
    skipped. One CSV row per file goes to ``log_path`` (default ``output_dir/enhance_log.csv``, appended).
    An output whose peak is implausibly far above its input's (:func:`peak_warning`) is still written (clipped
    to the format's range where it clips) but its row keeps status ``ok`` with a ``warning: ...`` message, one
    ``WARNING`` line goes to ``stream`` and it counts in :attr:`RunSummary.warned`.

    ``conditioning``: for a method with a :class:`jaxse.core.backend.Conditioning`, ``conditioning(rel_path) ->
    (frames, dim)`` gives each file's stream (e.g. its feature file, :meth:`MethodBackend.load_conditioning`);
    an exception it raises fails that file only (its one-line message is logged).

    ``share``: a :class:`jaxse.multihost.Share` of a multi-process run: only this process's share of the files
    (:func:`jaxse.multihost.assign_shares`, balanced by duration) is enhanced, its rows go to its own log part,
    and at the end every part's new rows are appended to the log (:func:`jaxse.multihost.merge_logs`).

    ``lock``: the :class:`jaxse.engine.outdir.OutputLock` the caller holds on ``output_dir`` (``enhance.py``
    takes it before the model loads); without one, the run takes it itself for its duration. Temporary files a
    killed run left beside this run's outputs are removed first (their count said on ``stream``). A
    ``KeyboardInterrupt`` is raised again with the summary so far as its ``summary`` attribute (what was
    written is complete; a rerun resumes).

    Raises ``ValueError`` before creating anything if the output or the log cannot be written, the output
    would overwrite the input (:func:`check_output_paths`) or a folder holds no audio files
    (:func:`check_inputs`); :class:`jaxse.engine.outdir.OutputLocked` if another run holds ``output_dir``.
    """
    check_output_paths(input_path, output_dir, log_path)
    check_inputs(input_path, output_dir)
    own_lock = OutputLock(output_dir, share).acquire() if lock is None else None
    try:
        return _run_files(input_path, output_dir, enhancer, overwrite, log_path, stream, progress, conditioning,
                          share)
    finally:
        if own_lock is not None:
            own_lock.release()


def _run_files(input_path, output_dir, enhancer, overwrite, log_path, stream, progress, conditioning,
               share) -> RunSummary:
    stream = sys.stderr if stream is None else stream
    t_start = time.perf_counter()
    out_root = Path(output_dir)
    log_path = Path(log_path) if log_path else out_root / LOG_NAME
    root, files = list_inputs(input_path, exclude=[out_root])
    headers = {f.relative_to(root).as_posix(): _header(f) for f in files}
    shared = share is not None and not share.single
    if shared:
        files, headers = _share_of(root, files, headers, share)
    stale = remove_stale_parts(out_root, headers)
    run = _FileRun(enhancer, out_root, multihost.part_path(log_path, share) if shared else log_path, headers,
                   len(files), overwrite=overwrite, stream=stream, progress=progress,
                   desc=f"enhance ({share})" if shared else "enhance")
    if stale:
        run.say(f"note: removed {stale} stale temporary file(s) (.NAME.<hex>.part) left by an interrupted run")
    try:
        for f in files:
            run.submit_file(f, f.relative_to(root).as_posix(), conditioning)
        for res in enhancer.flush():
            run.on_result(res)
    except KeyboardInterrupt as exc:
        exc.summary = run.summary  # what was written is complete; the CLI says how many and exits 130
        raise
    finally:
        run.close()
    if shared:
        try:
            multihost.merge_logs(log_path)
        except (OSError, ValueError) as exc:  # the parts are intact: python -m jaxse.multihost merges them later
            run.say(f"WARNING could not merge the log parts into {log_path}: {one_line(exc, None)}")
    summary = run.summary
    summary.stats = enhancer.stats()
    summary.wall_seconds = time.perf_counter() - t_start
    return summary


def _share_of(root: Path, files: list[Path], headers: dict, share) -> tuple[list[Path], dict]:
    """This process's files and their headers (:func:`jaxse.multihost.assign_shares`, by duration)."""
    owner = multihost.assign_shares({k: n / r if r else 0.0 for k, (n, r) in headers.items()}, share.count)
    files = [f for f in files if owner[f.relative_to(root).as_posix()] == share.index]
    headers = {k: h for k, h in headers.items() if owner[k] == share.index}
    return files, headers


class _FileRun:
    """One :func:`enhance_files` run: its log, progress bar and summary, each input file read and submitted,
    each result written and logged."""

    def __init__(self, enhancer: Enhancer, out_root: Path, log_path: Path, headers: dict, total: int, *,
                 overwrite: bool, stream, progress: bool, desc: str):
        self.enhancer = enhancer
        self.out_root = out_root
        self.overwrite = overwrite
        self.stream = stream
        self.summary = RunSummary(total=total)
        self.log = CsvLog(log_path)
        self.sr = enhancer.spec.sample_rate
        self.durations = {k: frames / rate if rate else 0.0 for k, (frames, rate) in headers.items()}
        todo = [k for k in headers if overwrite or not (out_root / k).exists()]
        enhancer.fit_batch_size(sum(enhancer.rows_for(resampled_length(*headers[k], self.sr))
                                    for k in todo if headers[k][1]))
        self.bar = _FileProgress(total, sum(self.durations.values()), stream=stream, desc=desc)
        self.bar.enabled = bool(progress)
        self.said_mixdown = False
        self.said_log_error = False

    def say(self, message: str) -> None:
        if self.bar.enabled:
            self.bar.write(message)
        else:
            self.stream.write(message + "\n")
            self.stream.flush()

    def finish(self, rel: str, duration, seconds, status, message="") -> None:
        """Log one file's outcome, count it in the summary and advance the bar."""
        try:
            self.log.row(rel, duration, seconds, status, message)
        except OSError as exc:  # e.g. a full disk: the run goes on (its outcome is still said and counted)
            if not self.said_log_error:
                self.say(f"WARNING could not write the log {self.log.path}: {one_line(exc, None)} (rows are "
                         "missing from it; this line is said once)")
                self.said_log_error = True
        summary = self.summary
        if status == "ok":
            summary.done += 1
            summary.audio_seconds += duration or 0.0
            summary.compute_seconds += seconds or 0.0
            if message.startswith("warning: "):
                summary.warned += 1
                self.say(f"WARNING {rel}: {message[len('warning: '):]}")
        elif status == "skipped":
            summary.skipped += 1
        else:
            summary.failed += 1
            self.say(f"FAILED {rel}: {message}")
        self.bar.audio_done += self.durations.get(rel, 0.0)
        self.bar.update(self.bar.step + 1)

    def submit_file(self, f: Path, rel: str, conditioning: Callable[[str], Any] | None) -> None:
        """Read one input file and queue it on the enhancer (or log why not); finish what completes meanwhile."""
        out_path = self.out_root / rel
        if out_path.exists() and not self.overwrite:
            self.bar.total_audio -= self.durations.get(rel, 0.0)  # the ETA counts only the work left to do
            self.durations[rel] = 0.0
            self.finish(rel, None, None, "skipped", "output exists")
            return
        if out_path.resolve() == f.resolve():
            self.finish(rel, None, None, "error", "the output would overwrite the input (choose another -o)")
            return
        t0 = time.perf_counter()
        try:
            audio = read_audio(f)
        except AudioError as exc:
            msg = str(exc)
            msg = msg[len(str(f)) + 2:] if msg.startswith(f"{f}: ") else msg
            self.finish(rel, None, time.perf_counter() - t0, "error", msg)
            return
        except Exception as exc:  # anything else a decoder may throw
            self.finish(rel, None, time.perf_counter() - t0, "error", one_line(exc, None) or type(exc).__name__)
            return
        if audio.num_channels > 1 and not self.said_mixdown:
            self.say(f"note: multi-channel input is mixed down to mono (first: {rel}, {audio.num_channels} channels)")
            self.said_mixdown = True
        sr = self.sr
        x = audio.samples if audio.sample_rate == sr else resample(audio.samples, audio.sample_rate, sr)
        subtype = _subtype_of(f)
        payload = (rel, out_path, audio.sample_rate, audio.samples.shape[0], subtype, time.perf_counter() - t0,
                   float(np.max(np.abs(audio.samples))))
        cond = None
        if conditioning is not None:
            try:
                cond = conditioning(rel)
            except Exception as exc:  # a missing or unreadable stream fails this file only
                self.finish(rel, None, time.perf_counter() - t0, "error", one_line(exc, None) or type(exc).__name__)
                return
        for res in self.enhancer.submit(rel, x, payload, *(() if cond is None else (cond,))):
            self.on_result(res)

    def on_result(self, res: EnhanceResult) -> None:
        """Write a finished input back at its own rate and length, and log it."""
        rel, out_path, orig_sr, orig_len, subtype, t_read, input_peak = res.payload
        seconds = res.seconds + t_read
        duration = orig_len / orig_sr
        if res.error:
            self.finish(rel, duration, seconds, "error", res.error)
            return
        try:
            t0 = time.perf_counter()
            y = res.wave
            if orig_sr != self.sr:
                y = resample(y, self.sr, orig_sr)
            y = fit_length(y, orig_len)
            _write(out_path, y, orig_sr, subtype)
            peak = float(np.max(np.abs(y))) if y.size else 0.0
            warning = peak_warning(peak, input_peak, clipped=_clipped(out_path, peak))
            self.finish(rel, duration, seconds + time.perf_counter() - t0, "ok",
                        f"warning: {warning}" if warning else "")
        except Exception as exc:  # nothing partial is left (atomic write); e.g. a full disk: this file fails
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else one_line(exc, None)
            self.finish(rel, duration, seconds, "error", f"could not write {out_path.name}: {why}")

    def close(self) -> None:
        self.bar.close()
        self.log.close()


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
    subtype = (_subtype_of(path) or "").upper()
    return peak >= 1.0 and not (subtype in _UNCLIPPED_SUBTYPES or subtype.startswith("MPEG"))


def _header(path: Path) -> tuple[int, int]:
    """(frames, sample rate) from the header; (0, 0) if unreadable."""
    try:
        info = sf.info(str(path))
        return (int(info.frames), int(info.samplerate)) if info.samplerate > 0 else (0, 0)
    except Exception:
        return 0, 0


def fit_length(y: np.ndarray, n: int) -> np.ndarray:
    """``y`` as float32 mono of exactly ``n`` samples (cut, or zero-padded at the end)."""
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
