"""Wall time of a dataset run with and without tail batches (the partial last batch of each frame bucket run on a
program compiled for fewer rows, instead of padded with dummy rows to ``--batch-size``).

Both runs enhance the same files with the same settings, seed and engine (``jaxse.enhance.Enhancer``), one after
the other in this process; compilation is counted apart from the run. Prints per run: programs compiled, compile
seconds, batches, rows computed, dummy rows, run seconds without compilation, and total; then whether the outputs
agree (they are bit-identical on CPU, where rows run one by one)::

    python benchmarks/tail_batches.py runs/eval/test12_matched/noisy --batch-size 4 \\
        --config num_samples=1 --config num_steps=6 [--method udiffse+] [--checkpoint DIR] [--json out.json]

``--config FIELD=VALUE`` overrides a sampler setting (after the checkpoint's ``sampler_settings.json``), as
``enhance.py --config.FIELD=VALUE`` does.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from jaxse import enhance as enh  # noqa: E402
from jaxse.audio import read_audio  # noqa: E402


def parse_value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def run_once(backend, waves, uids, batch_size: int, tail_batches: bool, seed: int) -> dict:
    engine = enh.Enhancer(backend, batch_size=batch_size, tail_batches=tail_batches, seed=seed)
    start = time.perf_counter()
    results = engine.enhance(waves, uids)
    total = time.perf_counter() - start
    stats = engine.stats()
    compile_s = float(sum(engine.compile_seconds.values()))
    return {"tail_batches": tail_batches, "total_s": total, "compile_s": compile_s, "run_s": total - compile_s,
            "programs": stats["compile_count"], "batches": stats["batches"], "rows": stats["rows"],
            "dummy_rows": stats["dummy_rows"], "outputs": dict(zip(uids, results))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", help="folder of noisy 16 kHz files (searched recursively)")
    ap.add_argument("--method", default="udiffse+")
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--config", action="append", default=[], metavar="FIELD=VALUE")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    files = sorted(p for p in Path(args.folder).rglob("*") if p.suffix.lower() in (".wav", ".flac"))
    if not files:
        ap.error(f"no .wav/.flac files under {args.folder}")
    fields = enh.checkpoint_settings(args.method, args.checkpoint)
    for item in args.config:
        key, _, value = item.partition("=")
        fields[key] = parse_value(value)
    backend = enh.load_backend(args.method, args.checkpoint, enh.make_config(args.method, **fields))
    waves, uids = [], []
    for f in files:
        waves.append(read_audio(f, backend.spec.sample_rate).samples)
        uids.append(str(f.relative_to(args.folder)))
    seconds = sum(len(w) for w in waves) / backend.spec.sample_rate
    print(f"{len(files)} files, {seconds:.1f} s of audio, {args.method} {fields}, batch {args.batch_size}", flush=True)

    runs = [run_once(backend, waves, uids, args.batch_size, tail, args.seed) for tail in (False, True)]
    print("| partial batches | programs | compile s | batches | rows | dummy rows | run s (no compile) | total s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in runs:
        label = "own program (tail batches)" if r["tail_batches"] else "padded to the batch size"
        print(f"| {label} | {r['programs']} | {r['compile_s']:.1f} | {r['batches']} | {r['rows']} | {r['dummy_rows']} "
              f"| {r['run_s']:.1f} | {r['total_s']:.1f} |")
    diff = max(float(np.max(np.abs(runs[0]["outputs"][u] - runs[1]["outputs"][u]))) for u in uids)
    print(f"run time with tail batches / padded: {runs[1]['run_s'] / runs[0]['run_s']:.2f}; "
          f"largest output difference between the two runs: {diff:.3g}")
    if args.json:
        out = {"files": len(files), "audio_s": seconds, "method": args.method, "settings": fields,
               "batch_size": args.batch_size, "max_abs_diff": diff,
               "runs": [{k: v for k, v in r.items() if k != "outputs"} for r in runs]}
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
