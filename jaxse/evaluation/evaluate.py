"""Score a folder of enhanced files against clean references: ``python -m jaxse.evaluate``.

    python -m jaxse.evaluate --enhanced DIR --clean DIR [--noisy DIR] [--manifest FILE] -o REPORTDIR
                             [--metrics all] [--jobs N] [--figures 3]

* Files are paired by their path relative to each folder, without the extension
  (``enhanced/a/b.wav`` <-> ``clean/a/b.flac`` <-> ``noisy/a/b.wav``). An enhanced file without its clean
  (or noisy) counterpart, or a noisy (without ``--noisy``: a clean) file without its enhanced output, is an error
  (exit status 2; ``--allow-missing`` scores the files present in every folder instead, and lists the others on
  stderr and in the report: ``missing`` counts them by reason, ``missing_files`` names them).
* The manifest written by ``python -m jaxse.mix`` gives each file's SNR and noise type (records are matched
  by their ``noisy`` path less the leading ``noisy/`` and the extension). Without ``--manifest``,
  ``<noisy>/../manifest.json`` is used when it exists.
* ``<enhanced>/enhance_log.csv`` (written by ``enhance.py``), when present, gives each file's real-time
  factor (its last ``ok`` row) and the total RTF = sum of seconds / sum of durations.
* Every metric of :mod:`jaxse.evaluation.metrics` is computed per file in a pool of ``--jobs`` processes (each with
  one-threaded onnxruntime sessions), for the enhanced file and, with ``--noisy``, for the noisy input
  (columns ``input_<metric>``). A metric that fails on a file is NaN with its reason in the ``message``
  column; it is left out of the means and counted.

Outputs (each written atomically, all of them only after every file has been scored):

* ``results.csv``: one row per file (sorted by path): file, snr_db, noise_type, duration_s, the metrics,
  the input metrics, rtf, message.
* ``summary.json`` / ``summary.md``: per metric the mean ± 95 % confidence half-width (Student t with
  n − 1 degrees of freedom) and n, for the enhanced files, the noisy inputs and their paired difference
  (improvement), overall and by SNR and by noise type; the RTF; what each PESQ variant is.
* ``figures/*.png``: ``--figures K`` spectrograms (noisy / enhanced / clean, dB), one file per SNR in turn,
  linked from ``summary.md``.

A bad invocation (missing folder, unpaired files, unreadable manifest, missing optional package) prints
one ``error:`` line on stderr, exits with status 1 (2 for unpaired files) and writes nothing.

numpy / scipy / soundfile (+ the metric packages); no jax.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from jaxse.evaluation import metrics as M
from jaxse.audio import AUDIO_EXTENSIONS, AudioError, read_audio, write_bytes_atomic
from jaxse.logging_utils import ProgressBar, format_duration
from jaxse.errors import JaxseError, one_line
from jaxse.evaluation.figures import choose_figures, draw_figure, figure_name

SAMPLE_RATE = M.SAMPLE_RATE
LOG_NAME = "enhance_log.csv"
MANIFEST_NAME = "manifest.json"
CONFIDENCE = 0.95
SUMMARY_VERSION = 1
# Extensions looked for (the common ones plus the other containers libsndfile reads, like enhance.py).
EXTENSIONS = tuple(AUDIO_EXTENSIONS) + (
    ".oga", ".opus", ".aifc", ".snd", ".caf", ".w64", ".rf64", ".voc", ".sph", ".nist", ".wve", ".avr",
    ".paf", ".svx", ".xi", ".sds", ".ircam", ".sf")
LENGTH_TOLERANCE_S = 0.01
"""Enhanced and clean lengths differing by more than this are noted in the ``message`` column."""

METRIC_INFO = {
    "pesq_nb_raw": "PESQ narrow-band, raw ITU-T P.862 score (-0.5..4.5), the 'PESQ' of the UDiffSE papers "
                   "(pypesq); the pesq package's P.862.1 output inverted, on pypesq-style int16 input",
    "pesq_nb": "PESQ narrow-band, ITU-T P.862.1 MOS-LQO (1.02..4.55): pesq.pesq(16000, ref, deg, 'nb')",
    "pesq_wb": "PESQ wide-band, ITU-T P.862.2 MOS-LQO (1.04..4.64): pesq.pesq(16000, ref, deg, 'wb')",
    "estoi": "extended STOI: pystoi.stoi(ref, deg, 16000, extended=True)",
    "si_sdr": "scale-invariant SDR (dB), reference formula",
    "si_sir": "scale-invariant SIR (dB) against the noise n = noisy - clean",
    "si_sar": "scale-invariant SAR (dB), same decomposition",
    "dnsmos_sig": "DNSMOS P.835 SIG (sig.onnx, reference polynomial; clips < 2 s not scored)",
    "dnsmos_bak": "DNSMOS P.835 BAK (bak_ovr.onnx, reference polynomial; clips < 2 s not scored)",
    "dnsmos_ovrl": "DNSMOS P.835 OVRL (bak_ovr.onnx, reference polynomial; clips < 2 s not scored)",
}
METRIC_LABELS = {
    "pesq_nb_raw": "PESQ-NB raw (P.862)", "pesq_nb": "PESQ-NB MOS-LQO (P.862.1)",
    "pesq_wb": "PESQ-WB MOS-LQO (P.862.2)", "estoi": "ESTOI", "si_sdr": "SI-SDR (dB)",
    "si_sir": "SI-SIR (dB)", "si_sar": "SI-SAR (dB)", "dnsmos_sig": "DNSMOS SIG", "dnsmos_bak": "DNSMOS BAK",
    "dnsmos_ovrl": "DNSMOS OVRL", "rtf": "RTF",
}


class EvalError(JaxseError):
    """The evaluation cannot run as asked; the message is one line."""


class MissingFilesError(EvalError):
    """Files that do not pair up (an enhanced output, clean or noisy file missing) without ``--allow-missing``:
    the CLI exits with status 2."""


@dataclass(frozen=True)
class Item:
    """One enhanced file and its counterparts; ``key`` is the relative path without extension."""

    key: str
    enhanced: Path
    clean: Path
    noisy: Path | None
    file: str  # path of the enhanced file relative to the enhanced folder
    snr_db: float | None = None
    noise_type: str | None = None
    rtf: float | None = None
    seconds: float | None = None
    duration: float | None = None


# --------------------------------------------------------------------------------------------------
# Inputs


def _strip_ext(rel: str) -> str:
    p = Path(rel)
    return p.with_suffix("").as_posix() if p.suffix else p.as_posix()


def index_dir(root, what: str) -> dict[str, Path]:
    """``{relative path without extension: file}`` of the audio files under ``root`` (hidden files skipped).
    Two files differing only by their extension are an error: pairing would be ambiguous."""
    root = Path(root)
    if not root.is_dir():
        raise EvalError(f"{what} folder {root} does not exist or is not a directory")
    exts = {e.lower() for e in EXTENSIONS}
    out: dict[str, Path] = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if p.suffix.lower() not in exts or any(part.startswith(".") for part in rel.parts) or not p.is_file():
            continue
        key = _strip_ext(rel.as_posix())
        if key in out:
            raise EvalError(f"{what} folder {root}: {out[key].name} and {p.name} have the same name without "
                            f"extension (pairing is by path without extension)")
        out[key] = p
    return out


def _first(keys: Iterable[str], k: int = 5) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:k])
    return shown + (f", ... ({len(keys) - k} more)" if len(keys) > k else "")


def load_manifest(path) -> dict[str, dict]:
    """``{noisy path less 'noisy/' and extension: record}`` of a ``jaxse.evaluation.mix`` manifest."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EvalError(f"manifest {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EvalError(f"manifest {path} cannot be read: {one_line(exc, None)}") from None
    recs = obj.get("mixtures") if isinstance(obj, dict) else None
    if not isinstance(recs, list):
        raise EvalError(f"manifest {path} has no 'mixtures' list (not written by python -m jaxse.mix?)")
    out: dict[str, dict] = {}
    for i, rec in enumerate(recs):
        if not isinstance(rec, dict) or not isinstance(rec.get("noisy"), str):
            raise EvalError(f"manifest {path}: mixture {i} has no 'noisy' path")
        rel = rec["noisy"].replace("\\", "/")
        if rel.startswith("noisy/"):
            rel = rel[len("noisy/"):]
        out[_strip_ext(rel)] = rec
    return out


def read_enhance_log(path) -> dict[str, tuple[float, float]]:
    """``{relative path without extension: (duration_s, seconds)}`` from an ``enhance_log.csv``; the last
    ``ok`` row of a file wins (the log is appended to by every run)."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            cols = set(reader.fieldnames or ())
            need = {"file", "duration_s", "seconds", "status"}
            if not need <= cols:
                raise EvalError(f"{path}: not an enhance log (columns {', '.join(sorted(need - cols))} missing)")
            out: dict[str, tuple[float, float]] = {}
            for row in reader:
                if (row.get("status") or "").strip() != "ok":
                    continue
                try:
                    duration, seconds = float(row["duration_s"]), float(row["seconds"])
                except (TypeError, ValueError):
                    continue
                if duration > 0 and math.isfinite(seconds):
                    out[_strip_ext(row["file"].replace("\\", "/"))] = (duration, seconds)
            return out
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise EvalError(f"{path} cannot be read: {one_line(exc, None)}") from None


@dataclass
class Plan:
    items: list[Item]
    manifest: Path | None
    log: Path | None
    missing: dict[str, int]  # what --allow-missing left out, by reason
    notes: list[str]
    missing_files: dict[str, list[str]] = dataclasses.field(default_factory=dict)  # the same, file by file


def plan(enhanced_dir, clean_dir, noisy_dir=None, manifest=None, allow_missing: bool = False) -> Plan:
    """Pair the files and attach manifest and log information (nothing is read but names, JSON and CSV)."""
    enh = index_dir(enhanced_dir, "enhanced")
    clean = index_dir(clean_dir, "clean")
    noisy = index_dir(noisy_dir, "noisy") if noisy_dir is not None else None
    if not enh:
        raise EvalError(f"no audio files in the enhanced folder {enhanced_dir}")
    missing: dict[str, int] = {}
    notes: list[str] = []
    missing_files: dict[str, list[str]] = {}
    problems = {"no clean file": [k for k in enh if k not in clean]}
    if noisy is not None:
        problems["no noisy file"] = [k for k in enh if k not in noisy]
    # every input (noisy, or else clean) needs its enhanced output: a partly enhanced folder is not scored silently
    problems["no enhanced output"] = [k for k in (noisy if noisy is not None else clean) if k not in enh]
    for reason, keys in problems.items():
        if not keys:
            continue
        if not allow_missing:
            side = ("enhanced files have" if reason != "no enhanced output"
                    else "noisy files have" if noisy is not None else "clean files have")
            raise MissingFilesError(f"{len(keys)} {side} {reason} (pairing by path without extension): "
                                    f"{_first(keys)}; --allow-missing scores the rest")
        missing[reason] = len(keys)
        missing_files[reason] = sorted(keys)
    keys = sorted(k for k in enh if k in clean and (noisy is None or k in noisy))
    if not keys:
        raise EvalError("no enhanced file has all its counterparts")

    man_path = Path(manifest) if manifest is not None else None
    if man_path is None and noisy_dir is not None:
        guess = Path(noisy_dir).resolve().parent / MANIFEST_NAME
        if guess.is_file():
            man_path = guess
            notes.append(f"using the manifest {guess}")
    records = load_manifest(man_path) if man_path is not None else {}
    if man_path is not None:
        unmatched = [k for k in keys if k not in records]
        if len(unmatched) == len(keys):
            raise EvalError(f"none of the {len(keys)} files is in the manifest {man_path} (first: {keys[0]})")
        if unmatched:
            notes.append(f"{len(unmatched)} of {len(keys)} files are not in the manifest: {_first(unmatched, 3)}")

    log_path = Path(enhanced_dir) / LOG_NAME
    log = read_enhance_log(log_path) if log_path.is_file() else None

    items = []
    for k in keys:
        rec = records.get(k, {})
        snr = rec.get("snr_db")
        snr = float(snr) if isinstance(snr, (int, float)) and math.isfinite(snr) else None
        nt = rec.get("noise_type")
        duration = seconds = rtf = None
        if log is not None and k in log:
            duration, seconds = log[k]
            rtf = seconds / duration
        items.append(Item(key=k, enhanced=enh[k], clean=clean[k], noisy=noisy[k] if noisy is not None else None,
                          file=enh[k].relative_to(Path(enhanced_dir)).as_posix(), snr_db=snr,
                          noise_type=str(nt) if nt is not None else None, rtf=rtf, seconds=seconds,
                          duration=duration))
    if log is not None:
        no_rtf = sum(it.rtf is None for it in items)
        if no_rtf:
            notes.append(f"{no_rtf} of {len(items)} files have no 'ok' row in {log_path}")
    return Plan(items, man_path, log_path if log is not None else None, missing, notes, missing_files)


# --------------------------------------------------------------------------------------------------
# Scoring (runs in worker processes)


def score_item(item: Item, metrics: Sequence[str], short_clip: str = "nan", si_method: str = "reference") -> dict:
    """One results row: the metrics of the enhanced file (and of the noisy input), NaN with a message for
    anything that fails. Never raises for a problem with this file's audio."""
    row: dict = {"file": item.file, "snr_db": item.snr_db, "noise_type": item.noise_type, "duration_s": None}
    msgs: list[str] = []
    has_noisy = item.noisy is not None
    enh_metrics = [m for m in metrics if has_noisy or m not in M.NEEDS_NOISY]
    for m in metrics:
        row[m] = math.nan
        if has_noisy:
            row["input_" + m] = math.nan
    try:
        e = read_audio(item.enhanced, target_sr=SAMPLE_RATE).samples
        s = read_audio(item.clean, target_sr=SAMPLE_RATE).samples
        x = read_audio(item.noisy, target_sr=SAMPLE_RATE).samples if has_noisy else None
    except AudioError as exc:
        row["message"] = f"read: {exc}"
        return row
    row["duration_s"] = round(s.size / SAMPLE_RATE, 4)
    if abs(e.size - s.size) > LENGTH_TOLERANCE_S * SAMPLE_RATE:
        msgs.append(f"length: enhanced {e.size / SAMPLE_RATE:.3f} s vs clean {s.size / SAMPLE_RATE:.3f} s "
                    f"(cut to the shorter)")
    for prefix, sig in (("", e), ("input_", x)) if has_noisy else (("", e),):
        try:
            scores = M.compute_metrics(sig, s, x, SAMPLE_RATE, enh_metrics, short_clip=short_clip,
                                       si_method=si_method)
        except (ValueError, M.MetricError) as exc:
            msgs.append(f"{prefix or 'enhanced'}: {one_line(exc, None)}")
            continue
        for m, v in scores.items():
            row[prefix + m] = v
        msgs += [f"{prefix}{m}: {' '.join(r.split())}" for m, r in scores.errors.items()]
    row["message"] = "; ".join(msgs)
    return row


def _score_safely(args) -> dict:
    item, metrics, short_clip, si_method = args
    try:
        return score_item(item, metrics, short_clip, si_method)
    except M.MissingDependencyError:
        raise
    except Exception as exc:  # a bug or an unexpected library error: keep the run going, say what happened
        row = {"file": item.file, "snr_db": item.snr_db, "noise_type": item.noise_type, "duration_s": None}
        for m in metrics:
            row[m] = math.nan
            if item.noisy is not None:
                row["input_" + m] = math.nan
        row["message"] = f"{type(exc).__name__}: {one_line(exc, None)}"
        return row


class _Progress(ProgressBar):
    """The progress bar, without repeating its final line when writing to a log file."""

    _drawn = None

    def _draw(self) -> None:
        self._drawn = self.format()
        super()._draw()

    def close(self) -> None:
        if self.enabled and not self._tty and self._drawn is not None and self.step >= self.total:
            return  # the final state is already on a line of its own
        super().close()


def score_all(items: Sequence[Item], metrics: Sequence[str], jobs: int = 1, short_clip: str = "nan",
              si_method: str = "reference", progress: bool = True, stream=None) -> list[dict]:
    """Rows for ``items`` in their order. ``jobs > 1`` scores files in that many spawned processes."""
    stream = sys.stderr if stream is None else stream
    rows: list[dict | None] = [None] * len(items)
    bar = _Progress(len(items), desc="evaluate", stream=stream, enabled=progress)
    jobs = max(1, min(int(jobs), len(items)))
    tasks = [(it, tuple(metrics), short_clip, si_method) for it in items]
    failed = 0
    try:
        if jobs == 1:
            for i, t in enumerate(tasks):
                rows[i] = _score_safely(t)
                failed += bool(rows[i]["message"])
                bar.update(i + 1, flagged=failed)
        else:
            import multiprocessing

            ctx = multiprocessing.get_context("spawn")  # no fork: the caller may hold threads (jax, onnxruntime)
            with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
                futures = {pool.submit(_score_safely, t): i for i, t in enumerate(tasks)}
                for done, fut in enumerate(as_completed(futures), 1):
                    i = futures[fut]
                    rows[i] = fut.result()
                    failed += bool(rows[i]["message"])
                    bar.update(done, flagged=failed)
    finally:
        bar.close()
    return rows  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------------
# Statistics


def mean_ci(values, confidence: float = CONFIDENCE) -> dict:
    """``{"mean", "ci", "n", "n_nan"}`` of the finite ``values``: ``ci`` is the half-width of the Student t
    confidence interval of the mean, t_{(1+confidence)/2, n-1} · s / sqrt(n) with the n − 1 sample standard
    deviation s. ``mean`` is None without values, ``ci`` None with fewer than two."""
    v = np.asarray([float(x) for x in values if x is not None], np.float64)
    finite = v[np.isfinite(v)]
    n = int(finite.size)
    out = {"mean": None, "ci": None, "n": n, "n_nan": int(v.size - n)}
    if n == 0:
        return out
    out["mean"] = float(finite.mean())
    if n >= 2:
        from scipy import stats

        t = float(stats.t.ppf(0.5 + confidence / 2.0, n - 1))
        out["ci"] = float(t * finite.std(ddof=1) / math.sqrt(n))
    return out


def _paired(rows: Sequence[dict], metric: str) -> list[float]:
    out = []
    for r in rows:
        a, b = r.get(metric), r.get("input_" + metric)
        if a is not None and b is not None and math.isfinite(a) and math.isfinite(b):
            out.append(a - b)
    return out


def group_stats(rows: Sequence[dict], metrics: Sequence[str], has_input: bool) -> dict:
    """Per metric ``{"enhanced", "input", "improvement"}`` statistics (:func:`mean_ci`) of ``rows``; the
    improvement is the mean of the paired differences enhanced − input over files where both are finite.
    Adds ``rtf`` (per-file mean and total = sum of seconds / sum of durations) when rows have one."""
    out: dict = {"n_files": len(rows)}
    for m in metrics:
        st = {"enhanced": mean_ci(r.get(m) for r in rows)}
        if has_input and ("input_" + m) in (rows[0] if rows else {}):
            st["input"] = mean_ci(r.get("input_" + m) for r in rows)
            st["improvement"] = mean_ci(_paired(rows, m))
        out[m] = st
    timed = [r for r in rows if r.get("rtf") is not None and math.isfinite(r["rtf"])]
    if timed:
        total_s = sum(r.get("_seconds") or 0.0 for r in timed)
        total_d = sum(r.get("_duration") or 0.0 for r in timed)
        out["rtf"] = {"per_file": mean_ci(r["rtf"] for r in timed),
                      "total": total_s / total_d if total_d > 0 else None,
                      "seconds": total_s, "audio_seconds": total_d}
    return out


def _snr_key(v: float) -> str:
    return f"{v:g}"


def summarize(rows: Sequence[dict], metrics: Sequence[str], has_input: bool) -> dict:
    """Overall statistics and the breakdowns by SNR (numeric order) and by noise type (alphabetical)."""
    out = {"overall": group_stats(rows, metrics, has_input), "by_snr": {}, "by_noise_type": {}}
    snrs = sorted({r["snr_db"] for r in rows if r.get("snr_db") is not None})
    for v in snrs:
        out["by_snr"][_snr_key(v)] = group_stats([r for r in rows if r.get("snr_db") == v], metrics, has_input)
    types = sorted({r["noise_type"] for r in rows if r.get("noise_type")})
    for t in types:
        out["by_noise_type"][t] = group_stats([r for r in rows if r.get("noise_type") == t], metrics, has_input)
    for name, field in (("by_snr", "snr_db"), ("by_noise_type", "noise_type")):
        rest = [r for r in rows if r.get(field) is None or r.get(field) == ""]
        if out[name] and rest:
            out[name]["(unknown)"] = group_stats(rest, metrics, has_input)
    return out


# --------------------------------------------------------------------------------------------------
# Output


def _csv_value(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return f"{v:.7g}" if abs(v) < 1e6 else f"{v:.7e}"
    return str(v)


def results_csv(rows: Sequence[dict], columns: Sequence[str]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow([_csv_value(r.get(c)) for c in columns])
    return buf.getvalue().encode("utf-8")


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _decimals(metric: str) -> int:
    return 2 if metric.startswith("si_") else 3


def _fmt(st: dict | None, metric: str) -> str:
    if not st or st.get("mean") is None:
        return "–"
    d = _decimals(metric)
    ci = st.get("ci")
    return f"{st['mean']:.{d}f} ± {ci:.{d}f}" if ci is not None else f"{st['mean']:.{d}f}"


def _table(stats: dict, metrics: Sequence[str], has_input: bool) -> list[str]:
    head = "| metric | n | enhanced |" + (" input | improvement |" if has_input else "")
    sep = "|---|---:|---:|" + ("---:|---:|" if has_input else "")
    lines = [head, sep]
    for m in metrics:
        st = stats.get(m, {})
        n = st.get("enhanced", {}).get("n", 0)
        line = f"| {METRIC_LABELS.get(m, m)} | {n} | {_fmt(st.get('enhanced'), m)} |"
        if has_input:
            line += f" {_fmt(st.get('input'), m)} | {_fmt(st.get('improvement'), m)} |"
        lines.append(line)
    rtf = stats.get("rtf")
    if rtf:
        total = "–" if rtf.get("total") is None else f"{rtf['total']:.3f}"
        line = f"| RTF (per-file mean; total {total}) | {rtf['per_file']['n']} | " \
               f"{_fmt(rtf['per_file'], 'rtf')} |" + (" | |" if has_input else "")
        lines.append(line)
    return lines


def render_markdown(summary: dict) -> str:
    metrics = summary["metrics"]
    has_input = summary["inputs"]["noisy"] is not None
    L = ["# Evaluation report", ""]
    inp = summary["inputs"]
    L += [f"- enhanced: `{inp['enhanced']}`", f"- clean: `{inp['clean']}`"]
    if inp["noisy"]:
        L.append(f"- noisy: `{inp['noisy']}`")
    L.append(f"- manifest: `{inp['manifest']}`" if inp["manifest"] else "- manifest: none (no SNR / noise type)")
    L.append(f"- enhance log: `{inp['enhance_log']}`" if inp["enhance_log"] else "- enhance log: none (no RTF)")
    L.append(f"- files: {summary['num_files']}" + (
        "" if not summary["missing"] else " (left out: " + ", ".join(
            f"{v} with {k}" for k, v in summary["missing"].items()) + ")"))
    for reason, keys in summary.get("missing_files", {}).items():
        L.append(f"- left out ({reason}): " + ", ".join(f"`{k}`" for k in keys))
    L += ["", f"Values are mean ± half-width of the {int(CONFIDENCE * 100)} % confidence interval "
              "(Student t, n − 1 degrees of freedom); n counts the files with a finite value. "
              "Improvement = mean of the per-file differences enhanced − input.", ""]
    L += ["## Overall", ""] + _table(summary["overall"], metrics, has_input) + [""]
    for title, key, fmt in (("By SNR", "by_snr", "SNR {} dB"), ("By noise type", "by_noise_type", "{}")):
        if summary[key]:
            L += [f"## {title}", ""]
            for g, st in summary[key].items():
                L += [f"### {fmt.format(g)} ({st['n_files']} files)", ""] + _table(st, metrics, has_input) + [""]
    fails = {m: v for m, v in summary["failures"].items() if v}
    if fails:
        L += ["## Files without a value", "",
              "NaN values (left out of the means); the reasons are in the `message` column of results.csv.", ""]
        L += [f"- {k}: {v}" for k, v in fails.items()] + [""]
    L += ["## Metrics", ""] + [f"- **{METRIC_LABELS.get(m, m)}** (`{m}`): {METRIC_INFO[m]}" for m in metrics]
    L += ["", "The PESQ of the UDiffSE papers is `pesq_nb_raw` (pypesq = raw P.862 narrow-band), not the "
          "wide-band MOS-LQO that most recent papers report as 'PESQ'.", ""]
    if summary["figures"]:
        L += ["## Spectrograms", ""]
        for f in summary["figures"]:
            L += [f"### {f['file']}", "", f"![{f['file']}]({f['png']})", ""]
    return "\n".join(L) + "\n"


def build_summary(plan_: Plan, rows: Sequence[dict], metrics: Sequence[str], args_info: dict,
                  figures: list[dict]) -> dict:
    has_input = args_info["noisy"] is not None
    stats = summarize(rows, metrics, has_input)
    failures = {m: sum(1 for r in rows if not (isinstance(r.get(m), float) and math.isfinite(r[m])))
                for m in metrics}
    if has_input:
        failures.update({"input_" + m: sum(1 for r in rows if not (isinstance(r.get("input_" + m), float)
                                                                      and math.isfinite(r["input_" + m])))
                         for m in metrics})
    return {
        "version": SUMMARY_VERSION,
        "created_by": "python -m jaxse.evaluate",
        "inputs": args_info,
        "num_files": len(rows),
        "missing": plan_.missing,
        "missing_files": plan_.missing_files,
        "metrics": list(metrics),
        "metric_info": {m: METRIC_INFO[m] for m in metrics},
        "pesq_variants": {
            "pesq_nb_raw": "raw ITU-T P.862 narrow-band (as pypesq, the papers' PESQ)",
            "pesq_nb": "ITU-T P.862.1 MOS-LQO = 0.999 + 4/(1 + exp(-1.4945 raw + 4.6607))",
            "pesq_wb": "ITU-T P.862.2 MOS-LQO (wide-band model)",
        },
        "dnsmos_model": None if not set(metrics) & set(M.DNSMOS) else (
            "DNSMOS P.835 sig.onnx + bak_ovr.onnx (speechmos package), reference preprocessing (-30 LUFS, 9 s "
            "windows, 1 s hop) and polynomial fits; clips < 2 s: "
            + ("NaN" if args_info.get("short_clip", "nan") == "nan" else "0 (reference)")),
        "si_sir_sar_method": args_info.get("si_method", "reference") if set(metrics) & set(M.NEEDS_NOISY) else None,
        "confidence": CONFIDENCE,
        **stats,
        "failures": failures,
        "files_with_messages": sum(1 for r in rows if r.get("message")),
        "figures": figures,
    }


# --------------------------------------------------------------------------------------------------
# CLI


def evaluate(enhanced, clean, out_dir, noisy=None, manifest=None, metrics=None, jobs: int | None = None,
             figures: int = 3, short_clip: str = "nan", si_method: str = "reference",
             allow_missing: bool = False, progress: bool = True, stream=None) -> dict:
    """Run the whole evaluation (see the module docstring) and return the summary. Raises
    :class:`EvalError` or :class:`jaxse.evaluation.metrics.MissingDependencyError` before writing anything."""
    stream = sys.stderr if stream is None else stream
    try:
        names = M.resolve_metrics(metrics)
    except ValueError as exc:
        raise EvalError(str(exc)) from None
    if noisy is None:
        tokens = metrics.replace(",", " ").split() if isinstance(metrics, str) else list(metrics or ())
        named = [m for m in M.NEEDS_NOISY if m in {t.strip().lower().replace("-", "_") for t in tokens}]
        if named:
            raise EvalError(f"{', '.join(named)} need{'s' if len(named) == 1 else ''} the noisy mixtures (--noisy)")
        names = tuple(m for m in names if m not in M.NEEDS_NOISY)  # dropped from a group such as 'all'
        if not names:
            raise EvalError("no metric left to compute")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise EvalError(f"output {out_dir} exists and is not a directory")
    M.check_dependencies(names)
    if figures and figures > 0:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise M.MissingDependencyError(
                f"figures need the package 'matplotlib', which is not installed: {M.EVAL_EXTRA_HINT} "
                "(or --figures 0)") from None
    p = plan(enhanced, clean, noisy, manifest, allow_missing)
    for reason, keys in p.missing_files.items():  # --allow-missing: what is not scored, on stderr and in the report
        stream.write(f"note: left out {len(keys)} file(s) with {reason}: {', '.join(keys)}\n")
    for note in p.notes:
        stream.write(f"note: {note}\n")
    stream.flush()
    jobs = (os.cpu_count() or 1) if jobs is None else int(jobs)
    t0 = time.perf_counter()
    rows = score_all(p.items, names, jobs=jobs, short_clip=short_clip, si_method=si_method, progress=progress,
                     stream=stream)
    for r, it in zip(rows, p.items):
        r["rtf"] = it.rtf
        r["_seconds"], r["_duration"] = it.seconds, it.duration

    figs: list[dict] = []
    pngs: list[tuple[Path, bytes]] = []
    for i in choose_figures(rows, figures):
        name = "figures/" + figure_name(p.items[i].key)
        try:
            pngs.append((out_dir / name, draw_figure(p.items[i], rows[i])))
            figs.append({"file": rows[i]["file"], "png": name})
        except (AudioError, ValueError, OSError) as exc:
            stream.write(f"note: no figure for {rows[i]['file']}: {one_line(exc, None)}\n")

    info = {"enhanced": str(enhanced), "clean": str(clean), "noisy": str(noisy) if noisy is not None else None,
            "manifest": str(p.manifest) if p.manifest else None, "enhance_log": str(p.log) if p.log else None,
            "short_clip": short_clip, "si_method": si_method}
    summary = build_summary(p, rows, names, info, figs)
    summary["seconds"] = round(time.perf_counter() - t0, 3)
    columns = ["file", "snr_db", "noise_type", "duration_s", *names]
    if noisy is not None:
        columns += ["input_" + m for m in names]
    columns += ["rtf", "message"]
    out_dir.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(out_dir / "results.csv", results_csv(rows, columns))
    for path, data in pngs:
        write_bytes_atomic(path, data)
    clean_summary = _jsonable(summary)
    write_bytes_atomic(out_dir / "summary.json",
                  (json.dumps(clean_summary, indent=1, allow_nan=False) + "\n").encode("utf-8"))
    write_bytes_atomic(out_dir / "summary.md", render_markdown(clean_summary).encode("utf-8"))
    return clean_summary


def _nonneg_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {v}")
    return v


def _positive_int(text: str) -> int:
    v = _nonneg_int(text)
    if v == 0:
        raise argparse.ArgumentTypeError("expected a number >= 1")
    return v


def _headline(summary: dict) -> str:
    parts = []
    for m in ("pesq_nb_raw", "pesq_wb", "estoi", "si_sdr", "dnsmos_ovrl"):
        st = summary["overall"].get(m)
        if st and st["enhanced"]["mean"] is not None:
            s = f"{m} {st['enhanced']['mean']:.3f}"
            if "improvement" in st and st["improvement"]["mean"] is not None:
                s += f" ({st['improvement']['mean']:+.3f})"
            parts.append(s)
    rtf = summary["overall"].get("rtf")
    if rtf and rtf.get("total") is not None:
        parts.append(f"RTF {rtf['total']:.3f}")
    return ", ".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m jaxse.evaluate",
                                 description="Score enhanced files against clean references (PESQ, ESTOI, "
                                             "SI-SDR/SIR/SAR, DNSMOS) and write a report.")
    ap.add_argument("--enhanced", required=True, help="folder of enhanced files")
    ap.add_argument("--clean", required=True, help="folder of clean references (same relative paths)")
    ap.add_argument("--noisy", help="folder of the noisy inputs: input scores, improvements, SI-SIR/SAR")
    ap.add_argument("--manifest", help="jaxse.evaluation.mix manifest.json (default: <noisy>/../manifest.json if present)")
    ap.add_argument("-o", "--output", required=True, help="report folder (results.csv, summary.json/.md, figures/)")
    ap.add_argument("--metrics", nargs="+", default=["all"],
                    help=f"metrics or groups, space or comma separated (default all): {', '.join(M.ALL)}; "
                         f"groups: {', '.join(M.GROUPS)}")
    ap.add_argument("--jobs", type=_positive_int, default=None, help="worker processes (default: CPU count)")
    ap.add_argument("--figures", type=_nonneg_int, default=3, help="spectrogram figures to draw (default 3)")
    ap.add_argument("--short-clip", choices=M.SHORT_CLIP_MODES, default="nan",
                    help="DNSMOS of clips < 2 s: nan (default, excluded from means) or reference (0, as the "
                         "reference code)")
    ap.add_argument("--si-method", choices=M.SI_METHODS, default="reference",
                    help="SI-SIR/SAR decomposition: reference (fast_UdiffSE, default) or span (BSS-eval style)")
    ap.add_argument("--allow-missing", action="store_true",
                    help="score the files present in every folder instead of stopping at unpaired files")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    try:
        summary = evaluate(args.enhanced, args.clean, args.output, noisy=args.noisy, manifest=args.manifest,
                           metrics=" ".join(args.metrics), jobs=args.jobs, figures=args.figures,
                           short_clip=args.short_clip, si_method=args.si_method, allow_missing=args.allow_missing,
                           progress=not args.no_progress)
    except (EvalError, M.MissingDependencyError) as exc:
        print(f"error: {one_line(exc, None)}", file=sys.stderr)
        return 2 if isinstance(exc, MissingFilesError) else 1
    except KeyboardInterrupt:
        print("error: interrupted (no report written)", file=sys.stderr)
        return 130
    print(f"evaluated {summary['num_files']} files in {format_duration(time.perf_counter() - t0)}: "
          f"{_headline(summary)}; report in {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
