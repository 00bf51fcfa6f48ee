"""Cost of the audio-visual fusion blocks per network evaluation: the AV network against the audio-only network of
the same size, bare forward (compiled, median of ``--repeats`` calls after the first), in one run.

    python benchmarks/av_fusion_cost.py [--sizes small,28m] [--frames 256] [--dim 768] [--repeats 3]

``small``: the shipped prior's network (NCSN++M layout, nf 16) with ``--small-dim`` (32) features, as
``configs/av_cpu.py``; ``28m``: the UDiffSE+ NCSN++M with 768-dim features, as ``configs/av_udiffse_28m.py``.
The visual stream has ``frames / 256 · 51`` frames (25 fps). Prints the parameters, XLA's FLOP count and the
time of each, and the AV / AO ratios.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from jaxse.av.models import AVScoreModel  # noqa: E402
from jaxse.diffusion.models import UDIFFSE_PLUS_28M  # noqa: E402
from jaxse.diffusion.sde import complex_normal  # noqa: E402
from jaxse.evaluation.benchmark import time_program  # noqa: E402
from jaxse.pytree import count_params  # noqa: E402


def measure(model, frames: int, visual_frames: int, repeats: int) -> dict:
    variables = model.init(jax.random.PRNGKey(0))
    x = 0.3 * complex_normal(jax.random.PRNGKey(1), (1, 256, frames))
    t = jnp.full((1,), 0.5)
    if model.net.cond_dim:
        v = jax.random.normal(jax.random.PRNGKey(2), (1, visual_frames, model.net.cond_dim))
        r = time_program(model.score, (variables, x, t, v), repeats)
    else:
        r = time_program(model.score, (variables, x, t), repeats)
    return {"params": count_params(variables["params"]), **r}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="small,28m")
    ap.add_argument("--frames", type=int, default=256)
    ap.add_argument("--small-dim", type=int, default=32)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    small = dataclasses.replace(UDIFFSE_PLUS_28M, net=dataclasses.replace(UDIFFSE_PLUS_28M.net, nf=16))
    bases = {"small": (small, args.small_dim), "28m": (UDIFFSE_PLUS_28M, args.dim)}
    vf = int(args.frames / 256 * 51)
    print(f"bare forward, 1 x {args.frames} frames, {vf} visual frames; {jax.devices()[0].device_kind}")
    for name in args.sizes.split(","):
        base, dim = bases[name]
        ao = measure(base, args.frames, vf, args.repeats)
        av_model = AVScoreModel(net=dataclasses.replace(base.net, cond_dim=dim), parameterization=base.parameterization)
        av = measure(av_model, args.frames, vf, args.repeats)
        for label, r in (("audio-only", ao), (f"audio-visual ({dim}-dim features)", av)):
            gf = f"{r['flops'] / 1e9:.2f} GFLOP" if r.get("flops") else "FLOPs n/a"
            print(f"{name:>5} {label:<34} {r['params']:>11,} params  {gf:>12}  {r['steady_s'] * 1e3:9.1f} ms")
        fl = f"FLOPs x{av['flops'] / ao['flops']:.3f}, " if ao.get("flops") and av.get("flops") else ""
        print(f"{name:>5} AV / AO: params x{av['params'] / ao['params']:.3f}, {fl}time x{av['steady_s'] / ao['steady_s']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
