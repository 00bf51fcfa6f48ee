"""Compare enhancement settings on a *validation* mixture set (never a test set): SI-SDR and RTF per setting.

    python -m jaxse.mix --clean ../shared/data/valid --noise ../shared/data/noise/train \\
        -o runs/eval/valid_small --snr -5 0 5 --seed 0 --max-files 6
    python benchmarks/tune_valid.py runs/eval/valid_small \\
        "method=udiffse+" "method=udiffse+,num_samples=1" "method=udiffse+,lmbd=2.5" [--checkpoint DIR]

Each positional setting is a comma-separated list of :class:`jaxse.udiffse.PosteriorConfig` overrides
(values parsed as Python literals) on top of the *reference* defaults: a checkpoint's
``sampler_settings.json`` is not applied here, it is where the chosen result goes. All settings run on the
same mixtures with the same seed, one file per compiled call (``batch_size=1``: no dummy rows, so the RTF
is the per-file cost). Prints one line per setting (mean SI-SDR, its improvement over the input, the
per-SNR means, RTF without compilation) and, with ``--json``, writes everything. A manifest whose clean speech comes from a ``test`` folder is
refused: tuning on the test set would make its numbers meaningless.
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
from jaxse.enhance import Enhancer, load_prior  # noqa: E402
from jaxse.metrics import si_sdr  # noqa: E402
from jaxse.udiffse import PosteriorConfig  # noqa: E402


def parse_setting(text: str) -> dict:
    """``"method=udiffse+,lmbd=2.5"`` -> ``{"method": "udiffse+", "lmbd": 2.5}`` (unknown fields rejected)."""
    fields = {f.name for f in dataclasses.fields(PosteriorConfig)}
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep or name not in fields:
            raise SystemExit(f"tune_valid: error: bad setting {part!r} (fields: {', '.join(sorted(fields))})")
        try:
            out[name] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[name] = value
    return out


def load_mixtures(mix_dir: Path, sample_rate: int) -> list[dict]:
    manifest = json.loads((mix_dir / "manifest.json").read_text())
    if Path(manifest["clean_root"]).name == "test":
        raise SystemExit("tune_valid: error: this mixture set is built from test speech; tune on valid speech only")
    return [{"id": r["id"], "snr": r["snr_db"],
             "noisy": read_audio(mix_dir / r["noisy"], sample_rate).samples,
             "clean": read_audio(mix_dir / r["clean"], sample_rate).samples}
            for r in manifest["mixtures"]]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mix_dir", type=Path, help="output folder of python -m jaxse.mix (valid speech)")
    ap.add_argument("settings", nargs="+", help='PosteriorConfig overrides, e.g. "method=udiffse+,num_samples=2"')
    ap.add_argument("--checkpoint", default=None, help="prior (default: the shipped one)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    settings = [parse_setting(s) for s in args.settings]
    model, variables, spec = load_prior(args.checkpoint)
    mixes = load_mixtures(args.mix_dir, spec.sample_rate)
    seconds = sum(len(m["clean"]) for m in mixes) / spec.sample_rate
    inputs = [si_sdr(m["noisy"], m["clean"]) for m in mixes]
    snrs = sorted({m["snr"] for m in mixes})
    report = {"mix_dir": str(args.mix_dir), "checkpoint": args.checkpoint or "shipped", "seed": args.seed,
              "num_mixtures": len(mixes), "audio_seconds": round(seconds, 2),
              "input_si_sdr": float(np.mean(inputs)), "results": []}
    print(f"{len(mixes)} mixtures, {seconds:.1f} s of audio; input SI-SDR {np.mean(inputs):.2f} dB", flush=True)
    for overrides in settings:
        cfg = PosteriorConfig(**overrides)
        enh = Enhancer(model, variables, cfg, spec=spec, batch_size=1, seed=args.seed)
        t0 = time.perf_counter()
        outs = enh.enhance([m["noisy"] for m in mixes], [m["id"] for m in mixes])
        wall = time.perf_counter() - t0
        compile_s = float(sum(enh.compile_seconds.values()))
        scores = np.array([si_sdr(o, m["clean"]) for o, m in zip(outs, mixes)])
        gains = scores - np.array(inputs)
        by_snr = {str(s): float(np.mean([g for g, m in zip(gains, mixes) if m["snr"] == s])) for s in snrs}
        row = {"settings": overrides, "nfe": cfg.nfe, "si_sdr": float(scores.mean()),
               "si_sdr_gain": float(gains.mean()), "si_sdr_gain_sem": float(gains.std(ddof=1) / np.sqrt(len(gains)))
               if len(gains) > 1 else float("nan"), "gain_by_snr": by_snr,
               "per_file": [round(float(s), 2) for s in scores],
               "compile_s": round(compile_s, 1), "rtf": round((wall - compile_s) / seconds, 2)}
        report["results"].append(row)
        snr_text = " ".join(f"{s}dB:{g:+.2f}" for s, g in by_snr.items())
        print(f"{args.settings[len(report['results']) - 1]:<40} SI-SDR {row['si_sdr']:6.2f} dB "
              f"(gain {row['si_sdr_gain']:+.2f} ± {row['si_sdr_gain_sem']:.2f}; {snr_text}) "
              f"NFE {row['nfe']} RTF {row['rtf']:.1f}", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
