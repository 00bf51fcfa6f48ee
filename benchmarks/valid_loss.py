"""Validation DSM loss of trained priors on one fixed set of validation crops, to compare runs.

    python benchmarks/valid_loss.py jaxse/assets/prior runs/prior_coarse/checkpoints/1000 --frames 64 256

The loss of ``train.py``'s validation (EMA weights, ``num_valid`` centre crops of ``--frames`` frames of
``--valid-dir``, the same noise draws as a run with ``--seed``), for every checkpoint (exported prior,
workdir or ``checkpoints/<step>`` folder) and crop length. The loss sums over frames, so only losses at the
same ``--frames`` compare; this is how runs validated on other crop lengths are put side by side.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from configs.default import data_root  # noqa: E402
from jaxse import training  # noqa: E402
from jaxse.core.loading import load_checkpoint  # noqa: E402
from jaxse.data import CleanSpeechDataset  # noqa: E402
from jaxse.spectral import SpecConfig  # noqa: E402


def valid_loss(checkpoint, frames: int, valid_dir, num_valid: int = 80, batch: int = 8, seed: int = 0) -> dict:
    model, variables, meta = load_checkpoint(checkpoint)
    spec = SpecConfig(**meta["spec"])
    mesh = training.make_mesh(jax.local_devices()[:1])
    ds = CleanSpeechDataset(valid_dir, sample_rate=spec.sample_rate, crop_frames=frames, spec=spec)
    p_eval = training.make_eval_step(model, spec, mesh)
    key = training._run_keys(seed)[training._KEY_VALID]
    losses = [float(p_eval(variables, training.global_batch({"waves": b}, mesh), jax.random.fold_in(key, i))["loss"])
              for i, b in enumerate(ds.valid_batches(batch, num_valid))]
    return {"checkpoint": str(checkpoint), "step": int(meta["step"]), "frames": int(frames),
            "valid_loss": float(np.mean(losses)), "num_valid": len(losses) * batch}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--frames", type=int, nargs="+", default=[256])
    ap.add_argument("--valid-dir", default=str(Path(data_root()) / "valid"))
    ap.add_argument("--num-valid", type=int, default=80)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    rows = []
    for ckpt in args.checkpoints:
        for frames in args.frames:
            row = valid_loss(ckpt, frames, args.valid_dir, args.num_valid, seed=args.seed)
            rows.append(row)
            print(f"{ckpt:<50} step {row['step']:>6}  {frames:>4} frames  valid loss {row['valid_loss']:10.2f}",
                  flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
