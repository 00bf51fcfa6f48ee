"""The tables of a benchmark run (:mod:`jaxse.evaluation.benchmark`), printed after it (the JSON holds
everything): the main table of each kind of network (diffusion, RVAE), the skipped pairs and the sweeps."""

from __future__ import annotations

import math
from typing import Sequence

from jaxse.evaluation.bench_methods import DIFFUSION, METHODS, RVAE


def _fs(v) -> str:
    """Seconds, compactly."""
    if v is None or not isinstance(v, (int, float)) or not math.isfinite(v):
        return "-"
    if v < 1e-3:
        return f"{v * 1e6:.0f}us"
    if v < 1.0:
        return f"{v * 1e3:.1f}ms"
    if v < 100:
        return f"{v:.2f}s"
    return f"{v:.0f}s"


def _fn(v, fmt: str = "{:.2f}") -> str:
    return "-" if v is None else fmt.format(v)


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h))
              for i, h in enumerate(headers)]
    line = "  ".join(str(h).rjust(w) if i > 1 else str(h).ljust(w) for i, (h, w) in enumerate(zip(headers, widths)))
    out = [line, "-" * len(line)]
    for r in rows:
        out.append("  ".join(str(c).rjust(w) if i > 1 else str(c).ljust(w) for i, (c, w) in enumerate(zip(r, widths))))
    return "\n".join(out)


def format_report(result: dict) -> str:
    """The tables printed after a run (the JSON holds everything)."""
    env = result["environment"]
    parts = [f"jax {env['jax']} / jaxlib {env['jaxlib']} / flax {env['flax']} on {env['device_count']}× "
             f"{env['device_kind']} ({env['backend']}), {env['cpu_count']} CPUs"
             + (", XLA optimisations off" if env["jax_disable_most_optimizations"] else "")]
    entries = {DIFFUSION: [], RVAE: []}
    for e in result["results"]:
        entries[_family(e)].append(e)
    headers = ["network", "method", "settings", "lower", "compile", "first", "steady", "NFE", "per-NFE", "forward",
               "GFLOP", "GFLOP/s", "overhead", "full NFE", "full time"]
    rows = []
    for e in entries[DIFFUSION]:
        if "error" in e:
            rows.append(_error_row(e, len(headers)))
            continue
        t, f, full = e["timing"], e["forward"], e["full_recipe"]
        star = "*" if full["extrapolated"] else ""
        rows.append([e["network"], e["method"], _describe_settings(e["settings"]), _fs(t["lower_s"]),
                     _fs(t["compile_s"]), _fs(t["first_call_s"]), _fs(t["steady_s"]), str(e["nfe"]),
                     _fs(e["per_nfe_s"]), _fs(f["steady_s"]), _fn(f["gflop"], "{:.1f}"),
                     _fn(f["gflops_per_s"], "{:.1f}"), _fn(e["overhead_ratio"]),
                     f"{full['nfe']}", f"{_fs(full['seconds'])}{star}"])
    if rows or not entries[RVAE]:
        parts.append(_table(headers, rows))
        if any(e.get("full_recipe", {}).get("extrapolated") for e in entries[DIFFUSION]):
            parts.append("* extrapolated: full-recipe NFE × measured per-NFE time × (rows·frames scale); "
                         "see full_recipe in the JSON")
    if entries[RVAE]:
        headers = ["network", "method", "settings", "lower", "compile", "first", "steady", "dec f/b", "enc f/b",
                   "per-EM", "decoder", "GFLOP", "GFLOP/s", "overhead", "RTF", "full EM", "full time", "full RTF"]
        rows = []
        for e in entries[RVAE]:
            if "error" in e:
                rows.append(_error_row(e, len(headers)))
                continue
            t, f, full, c = e["timing"], e["forward"], e["full_recipe"], e["cost"]
            star = "*" if full["extrapolated"] else ""
            rows.append([e["network"], e["method"], _describe_settings(e["settings"]), _fs(t["lower_s"]),
                         _fs(t["compile_s"]), _fs(t["first_call_s"]), _fs(t["steady_s"]),
                         f"{c['decoder_forward']}/{c['decoder_backward']}",
                         f"{c['encoder_forward']}/{c['encoder_backward']}", _fs(e["per_em_iter_s"]),
                         _fs(f["steady_s"]), _fn(f["gflop"], "{:.3g}"), _fn(f["gflops_per_s"], "{:.3g}"),
                         _fn(e["overhead_ratio"]), _fn(e["rtf"], "{:.3g}"), str(full["em_iters"]),
                         f"{_fs(full['seconds'])}{star}", f"{_fn(full['rtf'], '{:.3g}')}{star}"])
        parts.append("\nRVAE EM (one utterance per call; dec/enc f/b: decoder/encoder forward/backward passes, "
                     "decoder: bare forward on the chains; RTF = seconds / audio seconds)")
        parts.append(_table(headers, rows))
        if any(e.get("full_recipe", {}).get("extrapolated") for e in entries[RVAE]):
            parts.append("* extrapolated: full-recipe network passes × measured time per pass (backward = 2 forward); "
                         "see full_recipe in the JSON")
    if result.get("skipped"):
        parts.append(f"skipped (method and network of different families): "
                     f"{', '.join(sk['network'] + '/' + sk['method'] for sk in result['skipped'])}")
    sw = result.get("sweeps", {})
    if sw.get("steps"):
        parts.append("\nsteps sweep (prior PC sampler; scan = lax.scan, loop = Python loop over one jitted step, "
                     "compiled once for all step counts; unrolled = Python loop inside jit)")
        parts.append(_table(["network", "variant", "steps", "NFE", "lower", "compile", "first", "steady", "per-step"],
                            [[e["network"], e["variant"], str(e["steps"]), str(e["nfe"]), _fs(e["timing"]["lower_s"]),
                              _fs(e["timing"]["compile_s"]), _fs(e["timing"]["first_call_s"]),
                              _fs(e["timing"]["steady_s"]), _fs(e["per_step_s"])] for e in sw["steps"]]))
    if sw.get("batch"):
        parts.append("\nbatch sweep (utterances per call, posterior samples per utterance)")
        parts.append(_table(["network", "method", "batch", "samples", "rows", "compile", "steady", "per-utt", "utt/s"],
                            [[e["network"], e["method"], str(e["batch"]), _fn(e["samples"], "{}"), str(e["rows"]),
                              _fs(e["timing"]["compile_s"]), _fs(e["timing"]["steady_s"]), _fs(e["per_utterance_s"]),
                              _fn(e["utterances_per_s"], "{:.3g}")] for e in sw["batch"]]))
    if sw.get("length"):
        parts.append("\nlength sweep (STFT frames per utterance)")
        parts.append(_table(["network", "method", "frames", "audio", "compile", "steady", "per-frame", "RTF"],
                            [[e["network"], e["method"], str(e["frames"]), f"{e['audio_s']:.2f}s",
                              _fs(e["timing"]["compile_s"]), _fs(e["timing"]["steady_s"]), _fs(e["per_frame_s"]),
                              _fn(e["rtf"], "{:.3g}")] for e in sw["length"]]))
    if sw.get("cache"):
        parts.append("\npersistent compilation cache (each run a fresh process)")
        parts.append(_table(["network", "method", "run", "lower", "compile", "process", "cache files"],
                            [[e["network"], e["method"], e["run"], _fs(e["lower_s"]), _fs(e["compile_s"]),
                              _fs(e["process_s"]), _fn(e["cache_files"], "{}")] for e in sw["cache"]]))
    return "\n".join(parts)


def _family(e: dict) -> str:
    if e.get("family") in (DIFFUSION, RVAE):
        return e["family"]
    m = METHODS.get(e.get("method") or "")
    return m.family if m is not None else DIFFUSION


def _error_row(e: dict, width: int) -> list[str]:
    return ([e["network"], e.get("method") or "-", "ERROR: " + e["error"][:60]] + [""] * width)[:width]


def _describe_settings(s: dict) -> str:
    short = {"steps": "N", "em_iters": "EM", "samples": "b", "batch": "U", "frames": "T"}
    return " ".join(f"{short[k]}{v}" for k, v in s.items() if v is not None)
