"""Compare priors and enhancement settings on a *validation* mixture set (never a test set).

    python -m jaxse.mix --clean ../shared/data/valid --noise ../shared/data/noise/train \\
        -o runs/eval/valid_small --snr -5 0 5 --seed 0 --max-files 6
    python benchmarks/tune_valid.py runs/eval/valid_small \\
        "method=udiffse+" "method=udiffse+,num_samples=1" "method=udiffse+,lmbd=2.5,chunk_frames=256" \\
        "method=rvae-ldem,num_em=30" [--checkpoint DIR [--checkpoint DIR2 ...]] [--json OUT.json]

Each positional setting is a comma-separated list of overrides (values parsed as Python literals) of the
settings class of its ``method`` (default ``udiffse``; :class:`jaxse.diffusion.udiffse.PosteriorConfig` or, for the
``rvae-*`` methods, :class:`jaxse.rvae.posterior.RVAEPosteriorConfig`) on top of the *reference* defaults: a
checkpoint's ``sampler_settings.json`` is not applied here, it is where the chosen result goes.
``chunk_frames=N`` sets the longest row the enhancer runs (longer files are cut into 50 %-overlapping
chunks of N frames), e.g. to cap the rows at the length the prior was trained on; ``dtype=bfloat16`` runs
the network's compute in bfloat16 (:func:`jaxse.enhance.load_backend`).

Every setting runs with every ``--checkpoint`` (default: the shipped prior or RVAE of the method; a diffusion
checkpoint is skipped for an RVAE method and the other way round), on the same mixtures with the same seed,
one file per compiled call (``batch_size=1``: no dummy rows, so the RTF is the per-file cost). One line per
run: mean SI-SDR and its gain over the input (± standard error), the per-SNR gains, the ESTOI gain, and the
RTF without compilation; ``--json`` writes everything. A manifest whose clean speech comes from a ``test``
folder is refused: tuning on the test set would make its numbers meaningless.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jaxse.audio import read_audio  # noqa: E402
from jaxse import registry  # noqa: E402
from jaxse.enhance import Enhancer, config_class, load_backend, make_config  # noqa: E402
from jaxse.evaluation.metrics import estoi, si_sdr  # noqa: E402

ENHANCER_FIELDS = ("chunk_frames",)  # settings of the Enhancer rather than of the method
LOAD_FIELDS = ("dtype",)  # settings of the loaded network (load_backend)


def parse_setting(text: str) -> dict:
    """``"method=udiffse+,lmbd=2.5"`` -> ``{"method": "udiffse+", "lmbd": 2.5}`` (unknown fields rejected)."""
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep:
            raise SystemExit(f"tune_valid: error: bad setting {part!r} (expected FIELD=VALUE)")
        try:
            out[name] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[name] = value
    method = out.setdefault("method", "udiffse")
    try:
        fields = {f.name for f in dataclasses.fields(config_class(method))} | set(ENHANCER_FIELDS) | set(LOAD_FIELDS)
    except ValueError as exc:
        raise SystemExit(f"tune_valid: error: {exc}") from None
    unknown = sorted(set(out) - fields)
    if unknown:
        raise SystemExit(f"tune_valid: error: unknown field(s) {', '.join(unknown)} for {method} "
                         f"(fields: {', '.join(sorted(fields))})")
    return out


def fits_checkpoint(method: str, checkpoint) -> bool:
    """Whether ``method`` runs on ``checkpoint``: the family its files name (:func:`jaxse.registry.detect_family`;
    a checkpoint that names none, e.g. a reference file, is of the default family) is the method's."""
    found = registry.detect_family(checkpoint) or registry.DEFAULT_FAMILY
    return found == registry.method(method).family


def load_mixtures(mix_dir: Path, sample_rate: int) -> list[dict]:
    manifest = json.loads((mix_dir / "manifest.json").read_text())
    if Path(manifest["clean_root"]).name == "test":
        raise SystemExit("tune_valid: error: this mixture set is built from test speech; tune on valid speech only")
    return [{"id": r["id"], "snr": r["snr_db"],
             "noisy": read_audio(mix_dir / r["noisy"], sample_rate).samples,
             "clean": read_audio(mix_dir / r["clean"], sample_rate).samples}
            for r in manifest["mixtures"]]


def _mean_sem(values) -> tuple[float, float]:
    values = np.asarray(values, np.float64)
    sem = float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else float("nan")
    return float(values.mean()), sem


def run_one(setting: dict, checkpoint, mixes: list[dict], inputs: dict, seed: int) -> dict:
    """Enhance every mixture with one setting and checkpoint; the scores and costs as a JSON-able dict."""
    fields = {k: v for k, v in setting.items() if k not in ENHANCER_FIELDS + LOAD_FIELDS and k != "method"}
    enhancer_kw = {k: int(setting[k]) for k in ENHANCER_FIELDS if k in setting}
    method = setting["method"]
    backend = load_backend(method, checkpoint, make_config(method, **fields), setting.get("dtype"))
    enh = Enhancer(backend, batch_size=1, seed=seed, **enhancer_kw)
    t0 = time.perf_counter()
    outs = enh.enhance([m["noisy"] for m in mixes], [m["id"] for m in mixes])
    wall = time.perf_counter() - t0
    compile_s = float(sum(enh.compile_seconds.values()))
    seconds = sum(len(m["clean"]) for m in mixes) / backend.spec.sample_rate
    sdr = np.array([si_sdr(o, m["clean"]) for o, m in zip(outs, mixes)])
    sto = np.array([estoi(o, m["clean"]) for o, m in zip(outs, mixes)])
    gains, sto_gains = sdr - inputs["si_sdr"], sto - inputs["estoi"]
    snrs = sorted({m["snr"] for m in mixes})
    by_snr = {str(s): float(np.mean([g for g, m in zip(gains, mixes) if m["snr"] == s])) for s in snrs}
    gain, gain_sem = _mean_sem(gains)
    sto_gain, sto_sem = _mean_sem(sto_gains)
    return {"settings": setting, "checkpoint": str(checkpoint) if checkpoint else "shipped",
            "nfe": getattr(backend.cfg, "nfe", None), "si_sdr": float(sdr.mean()), "si_sdr_gain": gain,
            "si_sdr_gain_sem": gain_sem, "gain_by_snr": by_snr, "estoi": float(sto.mean()), "estoi_gain": sto_gain,
            "estoi_gain_sem": sto_sem, "per_file": [round(float(s), 2) for s in sdr],
            "compile_s": round(compile_s, 1), "rtf": round((wall - compile_s) / seconds, 2)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mix_dir", type=Path, help="output folder of python -m jaxse.mix (valid speech)")
    ap.add_argument("settings", nargs="+", help='overrides, e.g. "method=udiffse+,num_samples=2,chunk_frames=256"')
    ap.add_argument("--checkpoint", action="append", default=None,
                    help="prior or RVAE directory (repeatable; default: the shipped one of each method)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    settings = [(text, parse_setting(text)) for text in args.settings]
    checkpoints = args.checkpoint or [None]
    mixes = load_mixtures(args.mix_dir, 16000)
    seconds = sum(len(m["clean"]) for m in mixes) / 16000
    inputs = {"si_sdr": np.array([si_sdr(m["noisy"], m["clean"]) for m in mixes]),
              "estoi": np.array([estoi(m["noisy"], m["clean"]) for m in mixes])}
    report = {"mix_dir": str(args.mix_dir), "seed": args.seed, "num_mixtures": len(mixes),
              "audio_seconds": round(seconds, 2), "input_si_sdr": float(inputs["si_sdr"].mean()),
              "input_estoi": float(inputs["estoi"].mean()), "results": []}
    print(f"{len(mixes)} mixtures, {seconds:.1f} s of audio; input SI-SDR {report['input_si_sdr']:.2f} dB, "
          f"ESTOI {report['input_estoi']:.3f}", flush=True)
    for checkpoint in checkpoints:
        for text, setting in settings:
            if checkpoint is not None and not fits_checkpoint(setting["method"], checkpoint):
                continue
            row = run_one(setting, checkpoint, mixes, inputs, args.seed)
            report["results"].append(row)
            snr_text = " ".join(f"{s}dB:{g:+.2f}" for s, g in row["gain_by_snr"].items())
            where = f" [{checkpoint}]" if checkpoint else ""
            print(f"{text:<40} SI-SDR {row['si_sdr']:6.2f} dB (gain {row['si_sdr_gain']:+.2f} ± "
                  f"{row['si_sdr_gain_sem']:.2f}; {snr_text}) ESTOI {row['estoi_gain']:+.3f} ± "
                  f"{row['estoi_gain_sem']:.3f} NFE {row['nfe']} RTF {row['rtf']:.1f}{where}", flush=True)
            if args.json:  # rewritten after every run: a long sweep keeps what it has measured
                args.json.parent.mkdir(parents=True, exist_ok=True)
                args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
