"""The audio-visual mechanism on SYNTHETIC visual features: audio-only vs audio-visual UDiffSE+ on test mixtures.

    python benchmarks/av_synthetic.py runs/eval/test12_matched --av runs/av_cpu_best --ao runs/ao_cpu_best \\
        [--settings "num_samples=1,num_steps=15,lmbd=2.5,tweedie='ou'"] [--json OUT.json]

The mixtures are a :mod:`jaxse.mix` folder (``manifest.json``, ``clean/``, ``noisy/``). Every mixture is enhanced
four times with the same seed and settings: by UDiffSE+ with the audio-only prior ``--ao``, and by AV-UDiffSE+
with the audio-visual prior ``--av`` given (1) the synthetic visual features of the mixture's own clean speech
(:func:`jaxse.av.synthetic.synthetic_features`, with the settings the prior was trained with), (2) those of
another mixture's clean speech (shuffled: the next mixture in the manifest, tiled or cut to this one's frame
count), (3) zeros. One line per condition: SI-SDR and ESTOI gains over the noisy input (± standard error over
the mixtures), the paired SI-SDR difference to the audio-only prior, and the RTF without compilation.
The features are synthetic (made from the clean speech): this checks the mechanism, not lip reading.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jaxse.audio import read_audio  # noqa: E402
from jaxse.av.synthetic import synthetic_features  # noqa: E402
from jaxse.enhance import Enhancer, load_backend, make_config  # noqa: E402
from jaxse.evaluation.metrics import estoi, si_sdr  # noqa: E402


def _settings(text: str) -> dict:
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        k, _, v = part.partition("=")
        try:
            out[k] = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            out[k] = v
    return out


def _fit(v: np.ndarray, frames: int) -> np.ndarray:
    reps = int(np.ceil(frames / len(v)))
    return np.concatenate([v] * reps)[:frames]


def _mean_sem(x) -> tuple[float, float]:
    x = np.asarray(x, np.float64)
    return float(x.mean()), float(x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else float("nan")


def run(enh: Enhancer, mixes, conds) -> dict:
    compiled = sum(enh.compile_seconds.values())
    items = [(m["id"], m["noisy"], i) + (() if conds is None else (conds[i],)) for i, m in enumerate(mixes)]
    outs = [None] * len(mixes)
    t0 = time.perf_counter()
    for res in enh.stream(items):
        if res.error:
            raise SystemExit(f"av_synthetic: {res.uid}: {res.error}")
        outs[res.payload] = res.wave
    wall = time.perf_counter() - t0 - (sum(enh.compile_seconds.values()) - compiled)
    seconds = sum(len(m["noisy"]) for m in mixes) / 16000
    return {"si_sdr": [si_sdr(o, m["clean"]) for o, m in zip(outs, mixes)],
            "estoi": [estoi(o, m["clean"]) for o, m in zip(outs, mixes)], "rtf": wall / seconds}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mix_dir", type=Path)
    ap.add_argument("--av", required=True, help="audio-visual prior (train.py workdir or export, family av)")
    ap.add_argument("--ao", required=True, help="audio-only prior of the same budget")
    ap.add_argument("--settings", default="num_samples=1,num_steps=15,lmbd=2.5,tweedie='ou'",
                    help="UDiffSE+ settings for all four runs")
    ap.add_argument("--features", type=Path, default=Path("runs/synthetic_visual/train"),
                    help="the training features' folder (its SYNTHETIC_VISUAL_FEATURES.json gives the settings)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-files", type=int, default=None, help="only the first N mixtures of the manifest")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    label = json.loads((args.features / "SYNTHETIC_VISUAL_FEATURES.json").read_text())
    manifest = json.loads((args.mix_dir / "manifest.json").read_text())
    mixes = [{"id": r["id"], "snr": r["snr_db"], "noisy": read_audio(args.mix_dir / r["noisy"], 16000).samples,
              "clean": read_audio(args.mix_dir / r["clean"], 16000).samples, "rel": r["noisy"]}
             for r in manifest["mixtures"][:args.max_files]]
    true = [synthetic_features(m["clean"], Path(m["rel"]).relative_to("noisy").as_posix() if m["rel"].startswith(
        "noisy/") else m["rel"], 16000, label["dim"], label["bands"], label["noise"], label["seed"]) for m in mixes]
    conditions = {
        "synthetic visual features (true)": true,
        "synthetic visual features, shuffled across utterances": [
            _fit(true[(i + 1) % len(true)], len(true[i])) for i in range(len(true))],
        "zeroed visual features": [np.zeros_like(v) for v in true],
    }
    fields = _settings(args.settings)
    inputs = {"si_sdr": [si_sdr(m["noisy"], m["clean"]) for m in mixes],
              "estoi": [estoi(m["noisy"], m["clean"]) for m in mixes]}
    print(f"{len(mixes)} mixtures of {args.mix_dir}; input SI-SDR {np.mean(inputs['si_sdr']):.2f} dB, ESTOI "
          f"{np.mean(inputs['estoi']):.3f}; UDiffSE+ {fields}; SYNTHETIC visual features ({label['dim']} dims)",
          flush=True)
    results = {}
    ao = Enhancer(load_backend("udiffse+", args.ao, make_config("udiffse+", **fields)), batch_size=1, seed=args.seed)
    results["audio-only prior (no visual input)"] = run(ao, mixes, None)
    # one engine for the three AV conditions: compiled once, the same keys (seed and mixture id) in each
    av = Enhancer(load_backend("av-udiffse+", args.av, make_config("av-udiffse+", **fields)), batch_size=1,
                  seed=args.seed)
    for name, conds in conditions.items():
        results[f"AV prior, {name}"] = run(av, mixes, conds)
    base = np.asarray(results["audio-only prior (no visual input)"]["si_sdr"])
    rows = []
    for name, r in results.items():
        g, gs = _mean_sem(np.asarray(r["si_sdr"]) - inputs["si_sdr"])
        e, es = _mean_sem(np.asarray(r["estoi"]) - inputs["estoi"])
        d, ds = _mean_sem(np.asarray(r["si_sdr"]) - base)
        rows.append({"condition": name, "si_sdr_gain": g, "si_sdr_gain_sem": gs, "estoi_gain": e,
                     "estoi_gain_sem": es, "vs_audio_only": d, "vs_audio_only_sem": ds, "rtf": r["rtf"]})
        print(f"{name:<62} SI-SDR {g:+.2f} ± {gs:.2f} dB  ESTOI {e:+.3f} ± {es:.3f}  vs AO {d:+.2f} ± {ds:.2f} dB  "
              f"RTF {r['rtf']:.2f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"mix_dir": str(args.mix_dir), "settings": fields, "features": label,
                                         "rows": rows, "per_file": results, "inputs": inputs}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
