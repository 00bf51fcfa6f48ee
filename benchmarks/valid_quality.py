"""SI-SDR of the enhancement methods on a few mixtures of *validation* speech (never the test set).

    python benchmarks/valid_quality.py [--checkpoint DIR] [--methods udiffse+,udiffse] [--num 4] [--seconds 3]

Mixtures: the first ``--num`` files of ``$JAXSE_DATA/valid`` (default ``../shared/data/valid``), each cut
to ``--seconds``, with a random segment of a ``noise/train`` file at SNRs cycling over -5/0/5 dB
(numpy seed 0). Prints per-method mean SI-SDR of input and output, the improvement and the RTF.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jaxse.enhance import Enhancer, load_prior  # noqa: E402
from jaxse.metrics import si_sdr  # noqa: E402
from jaxse.udiffse import PosteriorConfig  # noqa: E402


def make_mixtures(root: Path, num: int, seconds: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    speech = sorted((root / "valid").glob("*.flac"))[:num]
    noises = sorted((root / "noise" / "train").glob("*.flac"))
    snrs = (-5.0, 0.0, 5.0)
    out = []
    for i, path in enumerate(speech):
        s, sr = sf.read(path, dtype="float32")
        s = s[: int(seconds * sr)]
        npath = noises[int(rng.integers(len(noises)))]
        n, _ = sf.read(npath, dtype="float32")
        while len(n) < len(s):
            n = np.concatenate([n, n])
        start = int(rng.integers(0, len(n) - len(s) + 1))
        n = n[start:start + len(s)]
        snr = snrs[i % len(snrs)]
        n = n * np.sqrt(np.sum(s**2) / max(np.sum(n**2), 1e-12) / 10 ** (snr / 10))
        out.append({"name": path.stem, "noise": npath.stem, "snr": snr, "clean": s, "noisy": s + n})
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--methods", default="udiffse+,udiffse")
    ap.add_argument("--num", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--num-samples", type=int, default=4)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    root = Path(os.environ.get("JAXSE_DATA", Path("..") / "shared" / "data"))
    mixes = make_mixtures(root, args.num, args.seconds)
    model, variables, spec = load_prior(args.checkpoint)
    audio = sum(len(m["clean"]) for m in mixes) / spec.sample_rate
    results = {"input_si_sdr": float(np.mean([si_sdr(m["noisy"], m["clean"]) for m in mixes])),
               "num_mixtures": len(mixes), "seconds_each": args.seconds, "methods": {}}
    for method in args.methods.split(","):
        cfg = PosteriorConfig(method=method, num_samples=args.num_samples)
        enh = Enhancer(model, variables, cfg, spec=spec, batch_size=len(mixes), chunk_frames=512)
        t0 = time.perf_counter()
        outs = enh.enhance([m["noisy"] for m in mixes], [m["name"] for m in mixes])
        wall = time.perf_counter() - t0
        scores = [si_sdr(o, m["clean"]) for o, m in zip(outs, mixes)]
        compile_s = float(sum(enh.compile_seconds.values()))
        results["methods"][method] = {
            "si_sdr": float(np.mean(scores)), "per_file": [round(s, 2) for s in scores],
            "wall_s_incl_compile": round(wall, 1), "compile_s": round(compile_s, 1),
            "rtf": round((wall - compile_s) / audio, 2), "nfe": cfg.nfe,
        }
        print(method, json.dumps(results["methods"][method]), flush=True)
    results["snrs"] = [m["snr"] for m in mixes]
    results["noises"] = [m["noise"] for m in mixes]
    print(json.dumps(results, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
