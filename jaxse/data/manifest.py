"""``python -m jaxse.data.manifest ROOT [ROOT ...] -o train.jsonl [--jobs N]``: the manifest of audio trees.

One pass over the roots (each searched recursively, files sorted, roots in the order given): every file's
header is read (in ``--jobs`` processes when > 1) and written as one JSON line (``path`` relative to the
manifest's folder when the file lies under it, else absolute; ``duration``, ``sample_rate``, ``frames``; the
format: :mod:`jaxse.data.files`). Unreadable files are left out, counted on stderr with the first of them.
A training config names the manifest as ``data.train_dir`` / ``data.valid_dir``: a start or resume then
probes nothing.

Bad input (a missing root, no audio at all, an output that is a folder): one line on stderr, exit 2, nothing
written.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Sequence

from jaxse.audio import AUDIO_EXTENSIONS, find_audio_files
from jaxse.data.files import AudioEntry, probe_many, write_manifest


def build_manifest(roots, out, jobs: int = 1, extensions=AUDIO_EXTENSIONS) -> tuple[list[AudioEntry], list[str]]:
    """Probe every audio file under ``roots`` and write the manifest ``out``: ``(entries, errors)``.

    ``ValueError`` (one line, nothing written) for a missing root or when no file is readable."""
    paths = []
    for root in roots:
        try:
            paths += find_audio_files(root, extensions)
        except FileNotFoundError:
            raise ValueError(f"{root}: no such folder or file") from None
    if not paths:
        raise ValueError(f"no audio files ({', '.join(extensions)}) under {', '.join(map(str, roots))}")
    entries, errors = [], []
    for path, got in zip(paths, probe_many(paths, jobs)):
        if isinstance(got, str):
            errors.append(got)
        else:
            entries.append(AudioEntry(path, *got))
    if not entries:
        raise ValueError(f"none of the {len(paths)} audio files is readable, first: {errors[0]}")
    write_manifest(entries, out)
    return entries, errors


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m jaxse.data.manifest",
                                 description="Write the JSON-lines manifest of audio trees (path, duration, "
                                             "sample_rate, frames), for data.train_dir / data.valid_dir.")
    ap.add_argument("roots", nargs="+", metavar="ROOT", help="audio folders (searched recursively) or files")
    ap.add_argument("-o", "--output", required=True, help="the manifest to write (.jsonl)")
    ap.add_argument("--jobs", type=int, default=1, metavar="N", help="processes probing headers (default 1)")
    args = ap.parse_args(argv)
    out = Path(args.output)
    if args.jobs < 1:
        ap.error(f"--jobs must be >= 1, got {args.jobs}")
    if out.is_dir() or not out.name.lower().endswith(".jsonl"):
        print(f"error: -o {out}: the manifest must be a .jsonl file name", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    try:
        entries, errors = build_manifest(args.roots, out, args.jobs)
    except (ValueError, OSError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    hours = sum(e.duration for e in entries) / 3600
    skipped = f"; {len(errors)} unreadable left out, first: {errors[0]}" if errors else ""
    print(f"wrote {len(entries)} files ({hours:.2f} h) to {os.fspath(out)} in {time.perf_counter() - t0:.1f} s"
          f"{skipped}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
