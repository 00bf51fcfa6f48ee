"""The audio files of a data set and their headers: folders (probed), manifests (read, nothing probed), and the
header store a training run keeps in its workdir so that a resume probes nothing again (numpy-free).

A **manifest** is a JSON-lines file (``.jsonl``), one audio file per line::

    {"path": "speaker1/utt1.flac", "duration": 3.21, "sample_rate": 16000, "frames": 51360}

``path`` is relative to the manifest's folder, or absolute; ``frames`` and ``sample_rate`` are the file's
header values (``duration`` = frames / sample_rate, for people); further fields (e.g. ``"id"``) are ignored.
The order of the lines is the order of the files (their indices in the training plans). ``python -m
jaxse.data.manifest ROOT [ROOT ...] -o train.jsonl [--jobs N]`` writes one in one pass. A data root (``data.
train_dir``, ``valid_dir``, the clean speech of the mixing data set) may be a manifest instead of a folder.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from jaxse.audio import AUDIO_EXTENSIONS, AudioError, find_audio_files, probe_audio

logger = logging.getLogger(__name__)

MANIFEST_SUFFIX = ".jsonl"
WORKDIR_MANIFEST = "train_manifest.jsonl"
"""The header store of a training run that reads folders: ``WORKDIR/train_manifest.jsonl`` (absolute paths)."""


@dataclass(frozen=True)
class AudioEntry:
    """One audio file and its header: ``frames`` samples per channel at ``sample_rate`` Hz."""

    path: Path
    frames: int
    sample_rate: int

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate


def is_manifest(root) -> bool:
    """Whether a data root names a manifest (a ``.jsonl`` file) rather than a folder or an audio file."""
    return str(root).lower().endswith(MANIFEST_SUFFIX)


def manifest_line(entry: AudioEntry, base: Path | None = None) -> str:
    """The JSON line of ``entry``; ``path`` relative to ``base`` when the file lies under it, else absolute."""
    path = Path(os.path.abspath(entry.path))
    if base is not None:
        base = Path(os.path.abspath(base))
        if base == path.parent or base in path.parents:
            path = path.relative_to(base)
    return json.dumps({"path": path.as_posix(), "duration": round(entry.duration, 6),
                       "sample_rate": int(entry.sample_rate), "frames": int(entry.frames)})


def write_manifest(entries, out) -> Path:
    """Write ``entries`` as a manifest at ``out`` (atomically: a temporary file renamed); returns the path."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    with open(tmp, "w", encoding="utf-8") as fh:
        for e in entries:
            fh.write(manifest_line(e, out.parent) + "\n")
    os.replace(tmp, out)
    return out


def _parse_line(text: str, base: Path) -> AudioEntry:
    try:
        rec = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc.msg})") from None
    if not isinstance(rec, dict) or not isinstance(rec.get("path"), str) or not rec["path"]:
        raise ValueError("no \"path\"")
    frames, rate = rec.get("frames"), rec.get("sample_rate")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (frames, rate)):
        raise ValueError(f"{rec['path']}: \"frames\" and \"sample_rate\" must be positive integers, "
                         f"got {frames!r} and {rate!r}")
    path = Path(rec["path"])
    return AudioEntry(path if path.is_absolute() else base / path, frames, rate)


def read_manifest(path, check_files: bool = True) -> list[AudioEntry]:
    """The entries of a manifest, in order. Nothing is probed or decoded.

    ``ValueError`` (one line: how many entries are bad and the first of them) for a missing or empty manifest,
    lines that are not entries, or (``check_files``) entries whose file does not exist. A file that exists but
    does not decode is found only when a row needs it: logged once and read as silence, like any other.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such manifest")
    base = path.parent
    entries, bad, missing = [], [], []
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                entry = _parse_line(line, base)
            except ValueError as exc:
                bad.append(f"line {number}: {exc}")
                continue
            if check_files and not os.path.isfile(entry.path):
                missing.append(f"line {number}: {entry.path}")
            entries.append(entry)
    if bad:
        raise ValueError(f"{path}: {len(bad)} malformed manifest line(s), first {bad[0]}")
    if missing:
        raise ValueError(f"{path}: {len(missing)} of {len(entries)} files named in the manifest are missing, "
                         f"first {missing[0]}")
    if not entries:
        raise ValueError(f"{path}: empty manifest (no audio files)")
    return entries


# ------------------------------------------------------------------------------------ probing


def _probe(path: str):
    """``(frames, sample_rate)`` of ``path``, or the text of its :class:`AudioError` (picklable, for pools)."""
    try:
        info = probe_audio(path)
    except AudioError as exc:
        return str(exc)
    return info.num_frames, info.sample_rate


def probe_many(paths, jobs: int = 1) -> list:
    """:func:`_probe` of every path, in order: ``(frames, sample_rate)`` or an error text; ``jobs`` > 1 probes in
    a process pool."""
    paths = [str(p) for p in paths]
    if int(jobs) <= 1 or len(paths) < 64:
        return [_probe(p) for p in paths]
    with ProcessPoolExecutor(max_workers=int(jobs)) as pool:
        return list(pool.map(_probe, paths, chunksize=max(16, len(paths) // (8 * int(jobs)))))


class HeaderStore:
    """Headers known from a manifest at ``path`` (absolute paths), and those probed since (:attr:`new`)."""

    def __init__(self, path):
        self.path = Path(path)
        self.known: dict[str, tuple[int, int]] = {}
        self.new: list[AudioEntry] = []
        if self.path.is_file():
            try:
                for e in read_manifest(self.path, check_files=False):
                    self.known[os.path.abspath(e.path)] = (e.frames, e.sample_rate)
            except ValueError as exc:  # a damaged store is only a lost shortcut: probe again
                logger.warning("ignoring the header store %s: %s", self.path, exc)

    def probe(self, path) -> tuple[int, int]:
        """``(frames, sample_rate)`` of ``path``: from the store, else probed (:class:`AudioError` if unreadable)."""
        key = os.path.abspath(path)
        hit = self.known.get(key)
        if hit is not None:
            return hit
        info = probe_audio(path)
        self.known[key] = (info.num_frames, info.sample_rate)
        self.new.append(AudioEntry(Path(key), info.num_frames, info.sample_rate))
        return self.known[key]

    def save(self) -> Path | None:
        """Rewrite the store with every header known, if any was probed since it was read (a write that fails is
        logged: the store is only a shortcut for the next start)."""
        if not self.new:
            return None
        entries = [AudioEntry(Path(p), f, r) for p, (f, r) in self.known.items()]
        try:
            out = write_manifest(entries, self.path)
        except OSError as exc:
            logger.warning("could not write the header store %s: %s", self.path, " ".join(str(exc).split()))
            return None
        self.new = []
        return out


_STORE: HeaderStore | None = None


@contextlib.contextmanager
def header_store(path):
    """Within the block, every header the data sets probe is looked up in (and added to) the store at ``path``;
    the caller saves it (:meth:`HeaderStore.save`) once it may write."""
    global _STORE
    previous, _STORE = _STORE, HeaderStore(path)
    try:
        yield _STORE
    finally:
        _STORE = previous


def probe_header(path) -> tuple[int, int]:
    """``(frames, sample_rate)`` of an audio file (through the active :func:`header_store`, if any);
    :class:`AudioError` if it is unreadable."""
    if _STORE is not None:
        return _STORE.probe(path)
    info = probe_audio(path)
    return info.num_frames, info.sample_rate


def list_audio(roots, extensions=AUDIO_EXTENSIONS) -> tuple[list[AudioEntry], list[Path]]:
    """``(entries, skipped)`` of data roots in order: a manifest's entries as listed (nothing probed), a folder's
    audio files sorted (headers probed, or found in the active :func:`header_store`) or a file; unreadable
    files are logged and returned in ``skipped``. A missing folder: ``FileNotFoundError``; a bad manifest:
    ``ValueError``."""
    entries, skipped = [], []
    for root in roots:
        if is_manifest(root):
            entries += read_manifest(root)
            continue
        for path in find_audio_files(root, extensions):
            try:
                frames, rate = probe_header(path)
            except AudioError as exc:
                logger.warning("skipping unreadable audio file: %s", exc)
                skipped.append(path)
                continue
            entries.append(AudioEntry(path, frames, rate))
    return entries, skipped
