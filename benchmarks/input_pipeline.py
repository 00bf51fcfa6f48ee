"""The training input pipeline measured on this machine (:mod:`jaxse.data.pipeline`): throughput and host memory.

**Throughput** (default): crops/s of ``--frames``-frame crops (256: 32,640 samples at 16 kHz) and the MB/s of
audio decoded to float32, with 0, 1, 2, ... input workers, from disk with no decode cache (every row's file
decoded again; the OS page cache is warm after the first pass), and the peak resident memory of the process and
its workers (psutil, else ``/proc/PID/status`` VmRSS) sampled every 0.2 s. Then the step rate each family's
reference-size config would need from the host (crops per step × steps/s of the accelerator: from an
accelerator check JSON's training figure with ``--check-json``, else the assumptions printed)::

    python benchmarks/input_pipeline.py [--data ../shared/data/train,../shared/data/train_extra] \\
        [--workers 0 1 2] [--seconds 20] [--batch 8] [--json out.json]

**Memory** (``--memory``): a training run of a small prior (``configs/cpu_small.py`` sized down: nf 8, two
levels) over a large synthetic corpus made from the data (``--entries`` 20,000: a manifest naming each file
many times under different ids, or with ``--tree`` a folder of that many symbolic links), with the host RSS of
the run (train.py and its input workers) recorded at every 100th step up to ``--steps``, printed as a curve::

    python benchmarks/input_pipeline.py --memory --steps 2000 [--workers 1] [--cache-mb 0] [--tree] \\
        [--code DIR]   # DIR: another checkout's train.py and jaxse (e.g. the previous loader, with --tree)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from jaxse.data import CleanSpeechDataset  # noqa: E402
from jaxse.data.cache import DecodeCache  # noqa: E402
from jaxse.data.pipeline import TrainBatches  # noqa: E402

# Steps/s ASSUMED for each reference config on one H100 (bfloat16) when no accelerator check JSON is given. The 28M
# NCSN++M: the short-lease recipe's estimate (README, configs/short_lease.py: 14.9 TFLOP per step at batch 8,
# ~7 steps/s) doubled for the recipe's batch 4; the 65M NCSN++ (about 2x the 28M's FLOPs per row) at batch 28;
# the AV prior as the 28M; SGMSE+ (4-channel 65M-size net) and the one-forward supervised net at their config's
# batch 1; the 1M-parameter RVAE at batch 128. No accelerator has measured them yet.
ASSUMED = {"udiffse_plus_28m": 14.0, "udiffse_65m": 1.0, "av_udiffse_28m": 14.0, "sgmse": 25.0, "supervised": 50.0,
           "rvae": 50.0}


def rss_tree_mb(pid: int) -> float:
    """Resident MB of process ``pid`` and all its descendants."""
    try:
        import psutil

        proc = psutil.Process(pid)
        procs = [proc] + proc.children(recursive=True)
        total = 0
        for p in procs:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        return total / 2**20
    except ImportError:
        return _proc_rss(pid) / 1024


def _proc_rss(pid: int) -> float:
    """KB of VmRSS of ``pid`` and its children, from /proc (no psutil)."""
    total = 0.0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += float(line.split()[1])
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            total += _proc_rss(int(child))
    except OSError:
        pass
    return total


class RssSampler(threading.Thread):
    """Samples :func:`rss_tree_mb` of ``pid`` every ``every`` seconds into ``samples`` ``(t, MB)``."""

    def __init__(self, pid: int, every: float = 0.2):
        super().__init__(daemon=True)
        self.pid, self.every, self.samples, self.stop = pid, every, [], threading.Event()
        self.t0 = time.perf_counter()

    def run(self):
        while not self.stop.is_set():
            self.samples.append((time.perf_counter() - self.t0, rss_tree_mb(self.pid)))
            self.stop.wait(self.every)

    @property
    def peak(self) -> float:
        return max((mb for _, mb in self.samples), default=float("nan"))


# ------------------------------------------------------------------------------------ throughput


def measure(ds, workers: int, batch: int, seconds: float, prefetch: int) -> dict:
    """Crops/s of ``ds`` through a pipeline with ``workers`` workers for about ``seconds`` (after the first batch)."""
    sampler = RssSampler(os.getpid())
    sampler.start()
    t0 = time.perf_counter()
    pipe = TrainBatches({ds.crop_frames: ds}, [(0, ds.crop_frames, batch)], seed=0, start=0, stop=10**7,
                        num_workers=workers, prefetch=prefetch)
    try:
        pipe.next(1)
        first = time.perf_counter() - t0
        t1, step, samples = time.perf_counter(), 1, 0
        while time.perf_counter() - t1 < seconds:
            step += 1
            pipe.next(step)
            samples += sum(int(ds.lengths[i]) for i, _ in ds.global_batch_plan(0, step - 1, batch))
        elapsed = time.perf_counter() - t1
    finally:
        pipe.close()
        sampler.stop.set()
        sampler.join()
    crops = (step - 1) * batch
    return {"workers": workers, "first_batch_s": round(first, 2), "crops": crops, "seconds": round(elapsed, 2),
            "crops_per_s": round(crops / elapsed, 1), "decoded_mb_per_s": round(samples * 4 / 2**20 / elapsed, 1),
            "peak_rss_mb": round(sampler.peak, 1),
            "rss_mb": [[round(t, 1), round(mb, 1)] for t, mb in sampler.samples[::5]]}


def reference_needs(best_crops_per_s: float, check_json: str | None) -> list[dict]:
    """Per reference config: crops per step, the steps/s assumed (or measured by the accelerator check for the
    28M recipe, the others scaled by the same factor), the crops/s that needs, and the steps/s the host gives."""
    from configs import av_udiffse_28m, rvae, sgmse, supervised, udiffse_65m, udiffse_plus_28m

    rates, source = dict(ASSUMED), "assumed (see ASSUMED)"
    if check_json:
        train = json.loads(Path(check_json).read_text()).get("train") or {}
        if train.get("steps_per_s") and "28m" in str(train.get("config", "")):
            scale = float(train["steps_per_s"]) / ASSUMED["udiffse_plus_28m"]
            rates = {k: v * scale for k, v in ASSUMED.items()}
            source = f"accelerator check {check_json} (28M: {train['steps_per_s']:.2f} steps/s; others scaled)"
    rows = []
    for name, mod in (("udiffse_plus_28m", udiffse_plus_28m), ("udiffse_65m", udiffse_65m),
                      ("av_udiffse_28m", av_udiffse_28m), ("sgmse", sgmse), ("supervised", supervised),
                      ("rvae", rvae)):
        c = mod.get_config()
        batch, frames = int(c.training.batch_size), int(c.data.crop_frames)
        # without a cache every row decodes its whole file: the cost of a row hardly depends on the crop length
        rows.append({"config": name, "batch": batch, "crop_frames": frames, "steps_per_s": round(rates[name], 2),
                     "source": source, "crops_per_s_needed": round(batch * rates[name], 1),
                     "host_steps_per_s": round(best_crops_per_s / batch, 1)})
    return rows


def throughput(args) -> dict:
    ds = CleanSpeechDataset(args.data, crop_frames=args.frames, cache=DecodeCache(0))
    print(f"{len(ds)} files ({ds.total_duration / 3600:.2f} h) from {args.data}; {args.frames}-frame crops "
          f"({ds.crop_length} samples), batches of {args.batch}, no decode cache", flush=True)
    results = []
    for n in args.workers:
        r = measure(ds, n, args.batch, args.seconds, args.prefetch)
        results.append(r)
        print(f"workers {n}: {r['crops_per_s']:7.1f} crops/s, {r['decoded_mb_per_s']:6.1f} MB/s decoded, first "
              f"batch {r['first_batch_s']:.1f} s, peak RSS {r['peak_rss_mb']:.0f} MB (process + workers)", flush=True)
    base = next((r["crops_per_s"] for r in results if r["workers"] == 1), None)
    for r in results:
        if base:
            r["vs_1_worker"] = round(r["crops_per_s"] / base, 2)
    best = max(r["crops_per_s"] for r in results)
    needs = reference_needs(best, args.check_json)
    print(f"\nreference configs (steps/s {needs[0]['source']}); the host's best here: {best:.0f} crops/s")
    for n in needs:
        print(f"  {n['config']:18s} batch {n['batch']:3d} x {n['crop_frames']:3d} frames at {n['steps_per_s']:5.1f} "
              f"steps/s needs {n['crops_per_s_needed']:7.1f} crops/s; this host feeds {n['host_steps_per_s']:6.1f} "
              "steps/s")
    return {"mode": "throughput", "data": str(args.data), "files": len(ds), "hours": ds.total_duration / 3600,
            "frames": args.frames, "batch": args.batch, "cpus": os.cpu_count(), "results": results,
            "reference": needs}


# ------------------------------------------------------------------------------------ memory


def synthetic_corpus(data: str, entries: int, out: Path, tree: bool) -> str:
    """A corpus of ``entries`` files made from the audio of ``data``: a manifest naming each file many times under
    its own id, or (``tree``) a folder of symbolic links. Returns the data root."""
    from jaxse.data.files import list_audio
    from jaxse.data import split_roots

    found, _ = list_audio(split_roots(data))
    if tree:
        root = out / "tree"
        for k in range(entries):
            link = root / f"spk{k % 200:03d}" / f"utt{k:06d}{found[k % len(found)].path.suffix}"
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(Path(found[k % len(found)].path).resolve())
        return str(root)
    manifest = out / "corpus.jsonl"
    with open(manifest, "w") as fh:
        for k in range(entries):
            e = found[k % len(found)]
            fh.write(json.dumps({"id": f"utt{k:06d}", "path": str(Path(e.path).resolve()), "duration": e.duration,
                                 "sample_rate": e.sample_rate, "frames": e.frames}) + "\n")
    return str(manifest)


def memory(args) -> dict:
    code = Path(args.code).resolve() if args.code else REPO
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        root = synthetic_corpus(args.data, args.entries, tmp, args.tree)
        print(f"{args.entries} entries ({'symlink tree' if args.tree else 'manifest'}) in "
              f"{time.perf_counter() - t0:.1f} s; training {args.steps} steps with {code}/train.py", flush=True)
        flags = [f"--config={code / 'configs' / 'cpu_small.py'}", f"--workdir={tmp / 'run'}",
                 f"--config.data.train_dir={root}", "--config.model.nf=8", "--config.model.ch_mult=(1,2)",
                 f"--config.training.num_steps={args.steps}", "--config.training.log_every=100",
                 "--config.training.eval_every=100000", "--config.training.checkpoint_every=100000",
                 "--config.training.sample_every=0", "--config.training.num_valid=8"]
        flags += [f"--config.{kv}" for kv in args.set]
        if not args.code:  # the fields of the new loader
            flags += [f"--config.data.num_workers={args.workers[0]}", f"--config.data.cache_mb={args.cache_mb}"]
        env = dict(os.environ, PYTHONPATH=str(code), JAX_PLATFORMS="cpu")
        proc = subprocess.Popen([sys.executable, str(code / "train.py"), *flags], cwd=REPO, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        sampler = RssSampler(proc.pid, every=0.5)
        sampler.start()
        curve, metrics, seen = [], tmp / "run" / "metrics.jsonl", set()
        while proc.poll() is None:
            time.sleep(0.2)
            if metrics.is_file():
                for line in metrics.read_text().splitlines():
                    rec = json.loads(line)
                    if "train/loss" in rec and rec["step"] not in seen:
                        seen.add(rec["step"])
                        curve.append((rec["step"], round(rss_tree_mb(proc.pid), 1)))
                        print(f"step {rec['step']:5d}: RSS {curve[-1][1]:7.1f} MB "
                              f"({rec.get('train/steps_per_sec', 0):.2f} steps/s)", flush=True)
        sampler.stop.set()
        err = proc.stderr.read()
        if proc.returncode != 0:
            raise SystemExit(f"train.py failed ({proc.returncode}): {err[-2000:]}")
        startup = next((line for line in err.splitlines() if "training files" in line), "")
    at100 = next((mb for s, mb in curve if s >= 100), None)
    growth = round(max(mb for _, mb in curve) - at100, 1) if at100 is not None else None
    print(f"growth after step 100: {growth} MB (peak {sampler.peak:.0f} MB); {startup.strip()}")
    return {"mode": "memory", "code": str(code), "entries": args.entries, "tree": args.tree, "steps": args.steps,
            "workers": None if args.code else args.workers[0], "cache_mb": None if args.code else args.cache_mb,
            "curve": curve, "growth_after_100_mb": growth, "peak_mb": round(sampler.peak, 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=f"{REPO.parent / 'shared/data/train'},{REPO.parent / 'shared/data/train_extra'}",
                    help="audio folders (comma-separated) or a manifest")
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--frames", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=20.0, help="measuring time per worker count")
    ap.add_argument("--prefetch", type=int, default=2)
    ap.add_argument("--check-json", default=None, help="an accelerator check JSON (its training steps/s)")
    ap.add_argument("--memory", action="store_true", help="the memory run instead of the throughput one")
    ap.add_argument("--entries", type=int, default=20_000)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--cache-mb", type=float, default=0.0)
    ap.add_argument("--tree", action="store_true", help="a symlink tree instead of a manifest (--memory)")
    ap.add_argument("--code", default=None, help="a checkout whose train.py runs (--memory; e.g. the old loader)")
    ap.add_argument("--set", nargs="*", default=[], metavar="GROUP.FIELD=VALUE",
                    help="config overrides of the --memory run (e.g. data.crop_frames=16)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    result = memory(args) if args.memory else throughput(args)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
