"""Where the time of one jitted score-network forward goes on this CPU, per kind of operation.

    python benchmarks/profile_forward.py --net 28m --shape 1x256            # the UDiffSE+ NCSN++M
    python benchmarks/profile_forward.py --net tiny --shape 1x512 --top 15  # the shipped prior's size (nf 16)
    XLA_FLAGS=--xla_cpu_max_isa=AVX2 python benchmarks/profile_forward.py   # code generated for AVX2 only

Compiles ``score`` once, runs it ``--reps`` times under ``jax.profiler.trace``, and matches every executed
operation (an XLA:CPU thunk: a library call such as a YNNPACK fusion or a convolution, or a generated loop
fusion) to the compiled HLO, so each is put in a kind: 3×3 convolution, matrix product (the 1×1 convolutions,
dense layers, attention), reduction (GroupNorm statistics), elementwise loop fusion (GroupNorm scaling,
SiLU, FIR resampling, additions), concatenation/padding/copy. Prints milliseconds per forward per kind, the
share of the thunk time, and the ``--top`` most expensive operations with what they compute. Operations on
two threads can overlap, so the shares are of the summed thunk time, not of the wall time (printed apart).
Only times from one run on one machine compare; the CPU's instruction-set level is printed with them.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import re
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _computations(hlo: str) -> dict[str, str]:
    """Name -> body of every computation in an HLO module's text."""
    out = {}
    for m in re.finditer(r"^(?:ENTRY )?%?([\w.\-]+) [^\n]*\{\n(.*?)\n\}", hlo, re.S | re.M):
        out[m.group(1)] = m.group(2)
    return out


def _instructions(hlo: str) -> dict[str, str]:
    """Instruction name -> its line, for every instruction of every computation."""
    out = {}
    for line in hlo.splitlines():
        m = re.match(r"\s*(?:ROOT )?%([\w.\-]+) = ", line)
        if m:
            out[m.group(1)] = line
    return out


def classify(line: str, comps: dict[str, str]) -> tuple[str, str]:
    """(kind, short description) of one top-level instruction of the compiled module."""
    callee = re.search(r"calls=%?([\w.\-]+)", line)
    body = comps.get(callee.group(1), "") if callee else line
    ops = set(re.findall(r"\} (\w+)\(|\] (\w+)\(", body)) | set(re.findall(r" = [^ ]+ (\w+)\(", body))
    ops = {o for pair in ops for o in (pair if isinstance(pair, tuple) else (pair,)) if o}
    shape = re.search(r"= (\w+\[[\d,]*\])", line)
    where = re.search(r'op_name="([^"]*)"', line) or re.search(r'op_name="([^"]*)"', body)
    where = re.sub(r"^jit\(\w+\)/", "", where.group(1)) if where else ""
    desc = (shape.group(1) if shape else "") + " " + ",".join(sorted(ops - {"parameter", "bitcast", "constant"}))
    desc += f"  [{where}]" if where else ""
    if "convolution" in ops:
        window = re.search(r"window=\{size=(\w+)", body)
        size = window.group(1) if window else "?"
        return ("convolution 1x1" if size == "1x1" else f"convolution {size}"), desc
    if "dot" in ops:
        return "matrix product", desc
    if "reduce" in ops or "reduce-window" in ops:
        return "reduction", desc
    if ops & {"concatenate", "pad", "copy", "transpose", "slice", "dynamic-slice", "dynamic-update-slice"} and \
            not ops & {"add", "multiply", "subtract", "divide", "exponential", "logistic", "rsqrt"}:
        return "concatenate / pad / copy", desc
    if ops:
        return "elementwise fusion", desc
    return "other", desc


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--net", default="28m", choices=("28m", "65m", "tiny"))
    ap.add_argument("--shape", default="1x256", help="BATCHxFRAMES")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--top", type=int, default=10)
    ap.add_argument("--kind", help="list the top operations of this kind only (e.g. 'elementwise fusion')")
    args = ap.parse_args(argv)

    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxse.diffusion.models import SHIPPED_PRIOR_SIZE, UDIFFSE_65M, UDIFFSE_PLUS_28M
    from jaxse.xla_flags import isa_level

    model = {"28m": UDIFFSE_PLUS_28M, "65m": UDIFFSE_65M, "tiny": SHIPPED_PRIOR_SIZE}[args.net]
    batch, frames = (int(v) for v in args.shape.split("x"))
    variables = model.init(jax.random.PRNGKey(0), 256)
    rng = np.random.default_rng(0)
    x = jnp.asarray((rng.standard_normal((batch, 256, frames))
                     + 1j * rng.standard_normal((batch, 256, frames))).astype(np.complex64))
    t = jnp.full((batch,), 0.5, jnp.float32)
    compiled = jax.jit(model.score).lower(variables, x, t).compile()
    hlo = compiled.as_text()
    comps, instrs = _computations(hlo), _instructions(hlo)
    for _ in range(2):
        jax.block_until_ready(compiled(variables, x, t))
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        with jax.profiler.trace(tmp, create_perfetto_trace=True):
            for _ in range(args.reps):
                jax.block_until_ready(compiled(variables, x, t))
        wall = (time.perf_counter() - t0) / args.reps
        trace = json.load(gzip.open(glob.glob(f"{tmp}/plugins/profile/*/perfetto_trace.json.gz")[0]))
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    per_op = collections.Counter()
    for e in events:
        if e.get("ph") == "X" and e.get("name") in instrs:
            per_op[e["name"]] += e.get("dur", 0) / 1e3 / args.reps  # µs -> ms per forward
    kinds, descs = collections.Counter(), {}
    counts = collections.Counter()
    for name, ms in per_op.items():
        kind, desc = classify(instrs[name], comps)
        kinds[kind] += ms
        counts[kind] += 1
        descs[name] = (kind, desc)
    total = sum(kinds.values())
    print(f"{args.net} {args.shape}: {wall * 1e3:.1f} ms per forward (wall, under the profiler), "
          f"{total:.1f} ms of operations; {isa_level()}; jax {jax.__version__}")
    print("| kind | ms per forward | share | operations |")
    print("|---|---:|---:|---:|")
    for kind, ms in kinds.most_common():
        print(f"| {kind} | {ms:.1f} | {ms / total:.0%} | {counts[kind]} |")
    print(f"\nthe {args.top} most expensive operations{' of kind ' + args.kind if args.kind else ''}:")
    shown = [(n, ms) for n, ms in per_op.most_common() if not args.kind or descs[n][0] == args.kind]
    for name, ms in shown[:args.top]:
        kind, desc = descs[name]
        print(f"  {ms:8.2f} ms  {kind:26s} {name:32s} {desc[:150]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
