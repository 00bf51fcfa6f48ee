"""Per-NFE time of a score network under XLA:CPU flag sets, each in its own process (XLA reads its flags once).

    python benchmarks/xla_cpu_flags.py --net 28m --shape 1x256 --reps 3            # the default list of flag sets
    python benchmarks/xla_cpu_flags.py --flags= --flags=--xla_cpu_use_onednn=true    # chosen flag sets (one each)
    XLA_FLAGS=--xla_cpu_max_isa=AVX2 python benchmarks/xla_cpu_flags.py               # every set capped at AVX2

Prints the median seconds per forward for each flag set, its ratio to the first (the installed defaults), the
compile time, and the largest deviation of its output from the first set's (a flag must not change results
beyond float rounding). Only ratios measured in one run on one machine mean anything.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONV_DOT = "LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION,LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"
DEFAULT_SETS = [
    "",
    "--xla_cpu_experimental_ynn_fusion_type=",
    f"--xla_cpu_experimental_ynn_fusion_type={CONV_DOT}",
    f"--xla_cpu_experimental_xnn_fusion_type={CONV_DOT}",
    "--xla_cpu_use_onednn=true",
    f"--xla_cpu_experimental_onednn_fusion_type={CONV_DOT}",
    "--xla_cpu_experimental_xnn_graph_fusion_mode=XNN_GRAPH_FUSION_MODE_GREEDY",
    "--xla_cpu_prefer_vector_width=512",
]


def child(net: str, batch: int, frames: int, reps: int, out: str) -> None:
    sys.path.insert(0, str(REPO))
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxse.diffusion.models import SHIPPED_PRIOR_SIZE, UDIFFSE_65M, UDIFFSE_PLUS_28M

    model = {"28m": UDIFFSE_PLUS_28M, "65m": UDIFFSE_65M, "tiny": SHIPPED_PRIOR_SIZE}[net]
    variables = model.init(jax.random.PRNGKey(0), 256)
    rng = np.random.default_rng(0)
    x = jnp.asarray((rng.standard_normal((batch, 256, frames))
                     + 1j * rng.standard_normal((batch, 256, frames))).astype(np.complex64))
    t = jnp.full((batch,), 0.5, jnp.float32)
    t0 = time.perf_counter()
    compiled = jax.jit(model.score).lower(variables, x, t).compile()
    compile_s = time.perf_counter() - t0
    y = jax.block_until_ready(compiled(variables, x, t))
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(variables, x, t))
        times.append(time.perf_counter() - t0)
    np.save(out, np.asarray(y))
    print(json.dumps({"median": statistics.median(times), "min": min(times), "compile_s": compile_s}))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--net", default="28m", choices=("28m", "65m", "tiny"))
    ap.add_argument("--shape", default="1x256", help="BATCHxFRAMES")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--flags", action="append", default=None,
                    help="one XLA_FLAGS set to compare, written --flags=SET (repeat it; default: a built-in list); "
                         "the caller's own XLA_FLAGS go in front of every set")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    batch, frames = (int(v) for v in args.shape.split("x"))
    if args.child:
        child(args.net, batch, frames, args.reps, args.child[1])
        return 0
    import numpy as np

    sets = DEFAULT_SETS if args.flags is None else args.flags
    rows, first = [], None
    base = os.environ.get("XLA_FLAGS", "")
    tmp = Path(os.environ.get("TMPDIR", "/tmp"))
    for i, flags in enumerate(sets):
        # The caller's own XLA_FLAGS (e.g. --xla_cpu_max_isa=AVX2 to stand in for an AVX2 machine) stay in
        # front of every set; JAXSE_XLA_AUTO=0 keeps jaxse's per-CPU choice out, so each set is what it says.
        env = dict(os.environ, XLA_FLAGS=f"{base} {flags}".strip(), JAX_PLATFORMS="cpu", JAXSE_XLA_AUTO="0")
        out = tmp / f"xla_flags_{os.getpid()}_{i}.npy"
        p = subprocess.run([sys.executable, __file__, "--net", args.net, "--shape", args.shape, "--reps",
                            str(args.reps), "--child", "run", str(out)], env=env, capture_output=True, text=True)
        if p.returncode != 0:
            rows.append((flags, None, None, None, p.stderr.strip().splitlines()[-1][:120] if p.stderr else "failed"))
            continue
        r = json.loads(p.stdout.strip().splitlines()[-1])
        y = np.load(out)
        out.unlink()
        if first is None:
            first = (r["median"], y)
        dev = float(np.max(np.abs(y - first[1])) / max(np.max(np.abs(first[1])), 1e-30))
        rows.append((flags, r["median"], r["compile_s"], dev, ""))
    print(f"{args.net} {args.shape}, median of {args.reps}")
    print("| XLA_FLAGS | s/NFE | vs first | compile s | max rel. deviation | note |")
    print("|---|---|---|---|---|---|")
    for flags, med, comp, dev, note in rows:
        if med is None:
            print(f"| `{flags}` | n/a | | | | {note} |")
        else:
            print(f"| `{flags or '(defaults)'}` | {med:.3f} | {med / first[0]:.2f} | {comp:.1f} | {dev:.1e} | {note} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
