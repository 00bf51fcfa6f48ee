"""The output folder of an enhancement run: its lock (:class:`OutputLock`, one run at a time per folder or per
process share), the check that something can be written there at all (:func:`probe_space`, before any model
loads), and the removal of the temporary files a killed run left (:func:`remove_stale_parts`).

**Lock.** A run holds ``flock`` locks in its output folder for as long as it runs (the kernel drops them with the
process, however it ends: a kill -9 leaves no stale lock). A one-process run holds ``OUTDIR/.enhance.lock``
exclusively; a process of a multi-process run (:mod:`jaxse.multihost`) holds it shared, beside its own
``OUTDIR/.enhance.lock.process-I-of-N`` exclusively: the processes of one split share the folder by design,
while a second one-process run, or a second process with the same share, is refused at once (non-blocking: a
run does not wait for another; it says which lock is held). The lock files are hidden and are no audio: they are
never taken for inputs or outputs, and a run removes them as it ends when no other run holds them.
"""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

from jaxse.errors import JaxseError

LOCK_NAME = ".enhance.lock"
# the temporary files of jaxse.audio.write_atomic: ".<name>.<12 hex digits>.part"
PART_PATTERN = re.compile(r"^\.(?P<name>.+)\.[0-9a-f]{12}\.part$")
PROBE_BYTES = 64 * 1024


class OutputLocked(JaxseError):
    """Another run holds the output folder (one line naming the lock)."""


class OutputLock:
    """The locks of one run on ``output_dir`` (see the module docstring); ``share``: a
    :class:`jaxse.multihost.Share` or ``None``. :meth:`acquire` creates the folder when missing (and
    :meth:`release` removes what it created when asked, e.g. after a usage error, if empty)."""

    def __init__(self, output_dir, share=None):
        self.root = Path(output_dir)
        shared = share is not None and not share.single
        self.paths = [(self.root / LOCK_NAME, shared)]
        if shared:
            self.paths.append((self.root / f"{LOCK_NAME}.process-{share.index}-of-{share.count}", False))
        self._fds: list[tuple[int, Path]] = []
        self._created: list[Path] = []

    def acquire(self) -> "OutputLock":
        """Take every lock, or raise :class:`OutputLocked` holding none (``OSError`` if the folder cannot be made)."""
        missing = []
        p = self.root
        while not p.exists():
            missing.append(p)
            p = p.parent
        self.root.mkdir(parents=True, exist_ok=True)
        self._created = missing  # innermost first
        try:
            for path, shared in self.paths:
                self._fds.append((_lock(path, shared), path))
        except BaseException:
            self.release(remove_created=True)
            raise
        return self

    def release(self, remove_created: bool = False) -> None:
        """Drop the locks, removing each lock file no other run holds; with ``remove_created``, also the folders
        :meth:`acquire` made, if they are empty."""
        import fcntl

        for fd, path in reversed(self._fds):
            try:  # unlink only while holding it exclusively: a run that opens it next sees a new file
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if _same_file(fd, path):
                    os.unlink(path)
            except OSError:
                pass
            os.close(fd)
        self._fds = []
        if remove_created:
            for d in self._created:
                try:
                    d.rmdir()
                except OSError:
                    break
        self._created = []

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _lock(path: Path, shared: bool) -> int:
    """An open descriptor of ``path`` holding its flock (shared or exclusive), or :class:`OutputLocked`."""
    import fcntl

    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise OutputLocked(f"output directory {path.parent} is in use by another enhance run (which holds "
                                   f"its lock {path.name}; wait for it to end, or choose another -o)") from None
            raise
        if _same_file(fd, path):  # (not unlinked by the run that held it just before)
            return fd
        os.close(fd)


def probe_space(output_dir, nbytes: int = PROBE_BYTES) -> None:
    """Write, fsync and remove a hidden file of ``nbytes`` in ``output_dir``: ``OSError`` (e.g. ENOSPC, a full
    disk) when nothing could be written there. Nothing is left behind."""
    path = Path(output_dir) / f".enhance-probe-{os.getpid()}"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(b"\0" * nbytes)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
    finally:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def remove_stale_parts(output_dir, targets) -> int:
    """Remove the temporary files that an interrupted write of one of ``targets`` (relative output paths) left
    in ``output_dir`` (``.<name>.<12 hex digits>.part`` beside the output, :data:`PART_PATTERN`); returns how
    many. Only names of exactly this pattern whose output is one of ``targets`` are touched (a run's targets are
    written by that run alone, so no other live writer's file is removed)."""
    root = Path(output_dir)
    wanted: dict[Path, set[str]] = {}
    for rel in targets:
        p = root / rel
        wanted.setdefault(p.parent, set()).add(p.name)
    removed = 0
    for folder, names in wanted.items():
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            m = PART_PATTERN.match(entry.name)
            if m and m.group("name") in names and entry.is_file(follow_symlinks=False):
                try:
                    os.unlink(entry.path)
                    removed += 1
                except FileNotFoundError:
                    pass
    return removed
