"""One table from several evaluation reports: ``python -m jaxse.compare``.

    python -m jaxse.compare runs/eval/report/matched_* [--names udiffse+,rvae-ldem,...] [--metrics ...] [-o T.md]

Each REPORT is a folder written by ``python -m jaxse.evaluate`` (its ``summary.json``). The table has one row
for the noisy input and one per report: per metric the overall mean of the enhanced files with the mean paired
improvement over the input in brackets, the number of files, and the total real-time factor. Rows are named
after the report folders unless ``--names`` is given.

All reports must score the same test set: the same number of files and the same input scores (the noisy
files' metric means agree to 1e-6). Comparing methods on different mixtures is refused with one ``error:``
line, since the table would then mean nothing. Without ``-o`` the table is printed; with it, it is written
atomically (and printed).

No jax.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Sequence

from jaxse.audio import write_bytes_atomic

DEFAULT_METRICS = ("si_sdr", "pesq_nb_raw", "pesq_wb", "estoi", "dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl")
LABELS = {"si_sdr": "SI-SDR (dB)", "si_sir": "SI-SIR (dB)", "si_sar": "SI-SAR (dB)", "pesq_nb_raw": "PESQ (P.862 raw nb)",
          "pesq_nb": "PESQ nb MOS-LQO", "pesq_wb": "PESQ wb", "estoi": "ESTOI", "dnsmos_sig": "SIG",
          "dnsmos_bak": "BAK", "dnsmos_ovrl": "OVRL"}
INPUT_TOL = 1e-6


class CompareError(ValueError):
    """A bad invocation: the CLI prints it as one ``error:`` line."""


def load_summary(report) -> dict:
    path = Path(report)
    path = path / "summary.json" if path.is_dir() else path
    try:
        summary = json.loads(path.read_text())
    except FileNotFoundError:
        raise CompareError(f"{report}: no summary.json (a folder written by python -m jaxse.evaluate)") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise CompareError(f"{path}: unreadable summary ({exc})") from None
    if "overall" not in summary or "num_files" not in summary:
        raise CompareError(f"{path}: not a jaxse.evaluation.evaluate summary")
    return summary


def _stat(summary: dict, metric: str, which: str) -> float | None:
    value = summary["overall"].get(metric, {}).get(which, {}).get("mean")
    return None if value is None or not math.isfinite(value) else float(value)


def _check_same_inputs(names: Sequence[str], summaries: Sequence[dict], metrics: Sequence[str]) -> None:
    first, ref = names[0], summaries[0]
    for name, s in zip(names[1:], summaries[1:]):
        if s["num_files"] != ref["num_files"]:
            raise CompareError(f"{name} scores {s['num_files']} files and {first} {ref['num_files']}: "
                               "compare reports of the same test set")
        for m in metrics:
            a, b = _stat(ref, m, "input"), _stat(s, m, "input")
            if (a is None) != (b is None) or (a is not None and abs(a - b) > INPUT_TOL * max(1.0, abs(a))):
                raise CompareError(f"{name} and {first} have different input {m} ({b} vs {a}): not the same "
                                   "noisy files")


def _cell(value: float | None, delta: float | None, metric: str) -> str:
    if value is None:
        return "–"
    d = 3 if metric == "estoi" else 2
    text = f"{value:.{d}f}"
    return text if delta is None else f"{text} ({delta:+.{d}f})"


def table(reports: Sequence, names: Sequence[str] | None = None,
          metrics: Sequence[str] = DEFAULT_METRICS) -> str:
    """The markdown table of ``reports`` (folders or summary.json files), rows named ``names``."""
    if not reports:
        raise CompareError("no reports given")
    names = list(names) if names else [Path(r).name if Path(r).is_dir() else Path(r).parent.name for r in reports]
    if len(names) != len(reports):
        raise CompareError(f"{len(names)} names for {len(reports)} reports")
    summaries = [load_summary(r) for r in reports]
    metrics = [m for m in metrics if any(m in s["metrics"] for s in summaries)]
    if not metrics:
        raise CompareError("none of the requested metrics is in the reports")
    has_input = all(s["inputs"].get("noisy") for s in summaries)
    if has_input:
        _check_same_inputs(names, summaries, metrics)
    head = ["method", "n"] + [LABELS.get(m, m) for m in metrics] + ["RTF"]
    lines = ["| " + " | ".join(head) + " |", "|---|---:|" + "---:|" * (len(metrics) + 1)]
    if has_input:
        ref = summaries[0]
        lines.append("| input (noisy) | " + str(ref["num_files"]) + " | "
                     + " | ".join(_cell(_stat(ref, m, "input"), None, m) for m in metrics) + " | |")
    for name, s in zip(names, summaries):
        rtf = (s["overall"].get("rtf") or {}).get("total")
        cells = [_cell(_stat(s, m, "enhanced"), _stat(s, m, "improvement") if has_input else None, m)
                 for m in metrics]
        lines.append(f"| {name} | {s['num_files']} | " + " | ".join(cells) + " | "
                     + ("–" if rtf is None else f"{rtf:.3g}") + " |")
    note = ("Means over the files; in brackets the mean paired improvement over the noisy input. "
            "RTF: total processing seconds / total audio seconds (from enhance_log.csv).")
    return "\n".join(lines) + "\n\n" + note + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m jaxse.compare", description=__doc__.split("\n\n")[0])
    ap.add_argument("reports", nargs="+", help="jaxse.evaluation.evaluate report folders (or their summary.json)")
    ap.add_argument("--names", help="comma list of row names, one per report (default: the folder names)")
    ap.add_argument("--metrics", default=",".join(DEFAULT_METRICS),
                    help=f"comma list of metrics (default {','.join(DEFAULT_METRICS)})")
    ap.add_argument("-o", "--output", help="markdown file to write (atomically)")
    args = ap.parse_args(argv)
    try:
        names = [n.strip() for n in args.names.split(",")] if args.names else None
        text = table(args.reports, names, [m.strip() for m in args.metrics.split(",") if m.strip()])
    except CompareError as exc:
        print(f"compare: error: {exc}", file=sys.stderr)
        return 1
    if args.output:
        write_bytes_atomic(Path(args.output), text.encode("utf-8"))
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
