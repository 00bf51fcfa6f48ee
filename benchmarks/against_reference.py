"""Per-NFE speed of jaxse's score networks beside the reference PyTorch code, in one run on one machine.

The project's machines differ in CPU (AVX2-only and AVX-512 both occur), so only a ratio measured in one run
means anything. This script times the bare score-network forward of the reference code (through
``../shared/peer/time_reference.py``, run with a PyTorch interpreter you give it: nothing of the reference is
imported here) and jaxse's at the same shapes, then prints the ratio ``jaxse / reference`` per shape::

    python benchmarks/against_reference.py --reference-python ref-venv/bin/python \\
        --udiffse UDIFFSE_EXPORT --fast FAST_UDIFFSE_EXPORT --configs 28m:1x256,28m:4x256,65m:1x256 \\
        --reps 3 -o nfe_vs_reference.json

How to get the two reference work trees and the PyTorch venv (torch 2.13.0 CPU; a wheel may be in
``$PIP_FIND_LINKS``) is in ``../shared/peer/README.md``. Both sides get random weights (speed does not depend
on them), 256 frequency bins, complex inputs, ``t = 0.5``, one warm-up call, then the median of ``--reps``
calls; jaxse's first call (compilation) is reported apart. The reference runs with ``--threads`` torch threads;
XLA:CPU uses the machine's cores. ``--skip-reference`` times jaxse alone (e.g. where no torch is installed).

Every figure is printed with the instruction-set level each side ran at: jaxse's (``jaxse.xla_flags.isa_level``:
the CPU's, or the ``--xla_cpu_max_isa`` cap, with the XLA flags jaxse chose for it) and PyTorch's
(``torch.backends.cpu.get_cpu_capability()``). ``--isa AVX2`` stands in for an AVX2-only machine on an AVX-512
one by capping both sides (``XLA_FLAGS=--xla_cpu_max_isa=AVX2``; ``ATEN_CPU_CAPABILITY=avx2
ONEDNN_MAX_CPU_ISA=AVX2``): an estimate, since the libraries that read the CPU themselves (YNNPACK, XNNPACK,
Eigen's build) ignore such caps.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from jaxse.diffusion.models import UDIFFSE_65M, UDIFFSE_PLUS_28M  # noqa: E402
from jaxse.pytree import count_params  # noqa: E402

NETWORKS = {"28m": (UDIFFSE_PLUS_28M, "nfe28", "ncsnpp28M"), "65m": (UDIFFSE_65M, "nfe65", "ncsnpp")}
NUM_BINS = 256


def parse_configs(text: str) -> list[tuple[str, int, int]]:
    """``"28m:1x256,65m:4x256"`` -> ``[("28m", 1, 256), ("65m", 4, 256)]``."""
    out = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        net, _, shape = part.partition(":")
        if net not in NETWORKS or "x" not in shape:
            raise ValueError(f"bad config {part!r}: expected NET:BxT with NET in {', '.join(NETWORKS)}")
        b, t = shape.split("x")
        out.append((net, int(b), int(t)))
    return out


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_flags() -> list[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return sorted(f for f in line.split(":", 1)[1].split() if f.startswith(("avx", "fma", "amx")))
    except OSError:
        pass
    return []


def time_jaxse(net: str, batch: int, frames: int, reps: int, warmup: int) -> dict:
    """Median seconds of one jitted ``score`` call of the network at ``(batch, 256, frames)``."""
    model = NETWORKS[net][0]
    variables = model.init(jax.random.PRNGKey(0), NUM_BINS)
    rng = np.random.default_rng(0)
    x = jnp.asarray((rng.standard_normal((batch, NUM_BINS, frames))
                     + 1j * rng.standard_normal((batch, NUM_BINS, frames))).astype(np.complex64))
    t = jnp.full((batch,), 0.5, jnp.float32)
    fn = jax.jit(model.score)
    t0 = time.perf_counter()
    jax.block_until_ready(fn(variables, x, t))
    first = time.perf_counter() - t0
    times = []
    for i in range(warmup + reps):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(variables, x, t))
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return {"net": net, "b": batch, "T": frames, "params": count_params(variables["params"]),
            "first_call_s": first, "median": statistics.median(times), "min": min(times), "max": max(times),
            "all": times}


REFERENCE_CAPS = {"AVX2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}}


def reference_env(isa: str) -> dict:
    return dict(os.environ, **REFERENCE_CAPS.get(isa, {}))


def torch_capability(python: str, isa: str) -> str:
    """What PyTorch's CPU dispatch runs at under the caps of ``isa`` (e.g. ``AVX512``, ``AVX2``)."""
    p = subprocess.run([python, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"],
                       env=reference_env(isa), capture_output=True, text=True)
    return p.stdout.strip().splitlines()[-1] if p.returncode == 0 and p.stdout.strip() else "unknown"


def jaxse_isa() -> str:
    from jaxse import xla_flags

    rec = xla_flags.applied()
    capped = "--xla_cpu_max_isa" in os.environ.get("XLA_FLAGS", "")
    text = xla_flags.isa_level() + (" (capped)" if capped else "")
    return text + (f" + {' '.join(rec['added'])}" if rec.get("added") else "")


def time_reference(args, configs) -> dict:
    """``{(net, b, T): median seconds}`` of the reference forwards (one subprocess of the peer harness)."""
    want: dict[str, list[str]] = {}
    for net, b, t in configs:
        want.setdefault(net, []).append(f"{b}x{t}")
    cmd = [args.reference_python, str(args.harness), "--udiffse", str(args.udiffse), "--fast", str(args.fast),
           "--what", ",".join(NETWORKS[n][1] for n in want), "--threads", str(args.threads), "--reps",
           str(args.reps), "--warmup", "1"]
    for net, shapes in want.items():
        cmd += [f"--{NETWORKS[net][1]}-configs", ",".join(shapes)]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "reference.json"
        subprocess.run(cmd + ["--out", str(out)], check=True, stdout=subprocess.DEVNULL, env=reference_env(args.isa))
        data = json.loads(out.read_text())
    by_backbone = {v[2]: k for k, v in NETWORKS.items()}
    times = {}
    for entry in data.get("nfe", []):
        net = by_backbone.get(entry.get("backbone"))
        for c in entry.get("configs", []):
            times[(net, int(c["b"]), int(c["T"]))] = float(c["median"])
    return {"times": times, "torch": next((e.get("torch") for e in data.get("nfe", [])), None),
            "machine": data.get("machine"), "isa": torch_capability(args.reference_python, args.isa)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default="28m:1x256,28m:4x256,65m:1x256", help="NET:BxT,... (NET: 28m, 65m)")
    ap.add_argument("--reference-python", help="python of a venv with torch (for the reference)")
    ap.add_argument("--udiffse", type=Path, help="exported UDiffSE work tree (joanne-b-nortier/UDiffSE)")
    ap.add_argument("--fast", type=Path, help="exported fast_UdiffSE work tree (jeaneudesAyilo/fast_UdiffSE)")
    ap.add_argument("--harness", type=Path, default=REPO.parent / "shared" / "peer" / "time_reference.py")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--skip-reference", action="store_true")
    ap.add_argument("--isa", default="native", choices=("native", "AVX2"),
                    help="AVX2: cap both sides at AVX2 (an estimate of an AVX2-only machine on an AVX-512 one)")
    ap.add_argument("-o", "--output", type=Path)
    args = ap.parse_args(argv)
    if args.isa == "AVX2" and "--xla_cpu_max_isa" not in os.environ.get("XLA_FLAGS", ""):
        # XLA reads its flags once, before jaxse (imported above) chose its own: start again with the cap.
        env = dict(os.environ, XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") + " --xla_cpu_max_isa=AVX2").strip())
        argv = sys.argv[1:] if argv is None else list(argv)
        os.execve(sys.executable, [sys.executable, str(Path(__file__).resolve()), *argv], env)
    configs = parse_configs(args.configs)
    if not args.skip_reference and not (args.reference_python and args.udiffse and args.fast):
        ap.error("--reference-python, --udiffse and --fast are needed (or --skip-reference)")

    ref = {"times": {}, "isa": None} if args.skip_reference else time_reference(args, configs)
    rows = [time_jaxse(net, b, t, args.reps, args.warmup) for net, b, t in configs]
    for r in rows:
        r["reference"] = ref["times"].get((r["net"], r["b"], r["T"]))
        r["ratio"] = r["median"] / r["reference"] if r["reference"] else None
    isa = {"jaxse": jaxse_isa(), "reference": ref.get("isa")}
    result = {"cpu": cpu_model(), "cpu_flags": cpu_flags(), "jax": jax.__version__, "torch": ref.get("torch"),
              "isa": isa, "xla_flags": os.environ.get("XLA_FLAGS", ""),
              "threads_reference": args.threads, "reps": args.reps, "rows": rows}
    print(f"CPU: {result['cpu']} ({' '.join(result['cpu_flags'])}); jax {jax.__version__}, torch {ref.get('torch')}")
    print("| network | batch x frames | ISA jaxse | ISA reference | reference s/NFE | jaxse s/NFE | jaxse / reference "
          "| jaxse first call s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        rf = f"{r['reference']:.3f}" if r["reference"] else "n/a"
        ratio = f"{r['ratio']:.2f}" if r["ratio"] else "n/a"
        print(f"| {r['net']} ({r['params'] / 1e6:.1f}M) | {r['b']} x {r['T']} | {isa['jaxse']} | {isa['reference']} "
              f"| {rf} | {r['median']:.3f} | {ratio} | {r['first_call_s']:.1f} |")
    if args.output:
        args.output.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
