"""The short-lease recipe: on an accelerator lent for ~15 minutes (start-up included, no network), in <= 12 minutes:
check the device, train the best prior that fits ~7 minutes, enhance the validation mixtures with it and with the
shipped prior, and write ONE JSON with everything.

    bash benchmarks/short_lease.sh [--wheels DIR] [--data DIR] [--json FILE] [--workdir DIR] [...]
    python benchmarks/short_lease.py --data ../shared/data --workdir runs/short_lease --json short_lease.json

Phases, each run as its own process with its own time budget (a phase that fails or runs out of time is recorded
with its log's tail and the next phase still runs; the JSON is rewritten after every phase):

1. ``check`` (``--check-s``, default 120 s): the accelerator check (:mod:`jaxse.evaluation.accelerator`) reduced to
   the training config's network: its forward at the training batch and crop in float32 and bfloat16 (compile,
   steady time, XLA's FLOPs, memory), then the training step rate of the config in the faster dtype
   (``--dtype auto``: bfloat16 when its forward takes <= 0.8x the float32 one). The step rate sets the
   validation interval (about 8 validations in the run).
2. ``train`` (``--train-s``, default 400 s): ``train.py --config CONFIG`` (default ``configs/short_lease.py``)
   with ``training.max_seconds`` = the phase budget less ``--train-margin-s`` (setup before the loop, the last
   checkpoint), ``training.export_dir`` = ``WORKDIR/prior``: the EMA weights of every new lowest validation loss,
   the last step always validated. Training data: ``DATA/train`` (and ``DATA/train_extra`` when present),
   validation loss on ``DATA/valid``.
3. ``enhance`` (``--enhance-s``, default 140 s): the validation mixtures of the README (``python -m jaxse.mix
   --clean DATA/valid --noise DATA/noise/train --snr -5 0 5 --seed 0 --max-files 12``: valid12), then
   ``benchmarks/tune_valid.py`` with one setting (``--setting``, default the shipped prior's sampler settings
   with 256-frame chunks: one compiled program per prior) for the shipped prior and the new export, on the same
   mixtures with the same seed: SI-SDR and ESTOI (the metrics of ``python -m jaxse.evaluate``), their gains, RTF,
   and the paired SI-SDR difference new - shipped.

The JSON (``--json``, schema ``jaxse.short_lease/1``): the device and versions, each phase's status, budget and
seconds, the check's figures, the training config (with every override), steps done, steps/s, the train and
validation losses, the export, the enhancement scores of both priors, the total wall time. ``WORKDIR/logs`` keeps
each phase's full output. Rerunning with the same ``--workdir`` continues the training from its last checkpoint
(another ``max_seconds``). ``--set GROUP.FIELD=VALUE`` (repeatable) overrides the config for the check and the
training alike (the test runs the whole recipe on a CPU with a tiny network this way).
"""

from __future__ import annotations

import argparse
import ast
import datetime
import importlib.util
import json
import math
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCHEMA = "jaxse.short_lease/1"
SHIPPED_PRIOR = REPO / "jaxse" / "assets" / "prior"
# The shipped prior's sampler settings (jaxse/assets/prior/sampler_settings.json), float32, with rows cut into
# 50 %-overlapping chunks of 256 frames (the training crop): every file runs through one compiled program.
DEFAULT_SETTING = "method=udiffse+,lmbd=2.5,num_samples=2,num_steps=15,tweedie='ou',chunk_frames=256,dtype='float32'"
BF16_SPEEDUP = 0.8  # --dtype auto: bfloat16 when its forward takes at most this fraction of the float32 one
VALIDATIONS = 8  # about this many validations (and exports of a new best) in the run


def log(message: str) -> None:
    print(f"[short_lease {time.strftime('%H:%M:%S')}] {message}", flush=True)


def write_json_atomic(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str))
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------ config and overrides


def parse_override(text: str) -> tuple[str, str, str]:
    """``"model.nf=64"`` -> ``("model", "nf", "64")``; ``ValueError`` (one line) for anything else."""
    key, sep, value = text.partition("=")
    group, dot, field = key.strip().partition(".")
    if not sep or not dot or not group or not field or "." in field:
        raise ValueError(f"--set {text!r}: expected GROUP.FIELD=VALUE (e.g. model.nf=64)")
    return group, field, value.strip()


def literal(value: str):
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value


def load_config(path: Path, overrides: list[str]):
    """``get_config()`` of a config file with ``GROUP.FIELD=VALUE`` overrides (a field must exist)."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))  # the configs' ``from configs import ...``
    spec = importlib.util.spec_from_file_location(f"_short_lease_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    for text in overrides:
        group, field, value = parse_override(text)
        if group not in config or field not in config[group]:
            raise ValueError(f"--set {text!r}: the config has no field {group}.{field}")
        config[group][field] = literal(value)
    return config


def merge_overrides(*lists: list[str]) -> list[str]:
    """The overrides of ``lists`` in order, one per field: a later list wins where two name the same field."""
    out: dict[tuple[str, str], str] = {}
    for texts in lists:
        for text in texts:
            key = parse_override(text)[:2]
            out.pop(key, None)
            out[key] = text
    return list(out.values())


def config_json(config) -> dict:
    return json.loads(json.dumps(config.to_dict(), default=list))


# ------------------------------------------------------------------------------------ phase 1: the check


def choose_dtype(forward: list[dict], default: str) -> tuple[str, str]:
    """``(dtype, why)`` from the check's forward items: bfloat16 when it is clearly faster than float32."""
    t = {f["dtype"]: f.get("steady_s") for f in forward}
    f32, b16 = t.get("float32"), t.get("bfloat16")
    if not f32 or not b16:
        return default, f"the config's dtype {default}: no forward timing of both dtypes"
    ratio = b16 / f32
    dtype = "bfloat16" if ratio <= BF16_SPEEDUP else "float32"
    return dtype, f"bfloat16 forward takes {ratio:.2f}x the float32 one (bfloat16 when <= {BF16_SPEEDUP})"


def check_main(argv) -> int:
    """``short_lease.py check``: the reduced accelerator check of the config's network, in this process."""
    ap = argparse.ArgumentParser(prog="short_lease.py check")
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--set", action="append", default=[], dest="overrides")
    ap.add_argument("--json", type=Path, required=True)
    ap.add_argument("--budget-s", type=float, required=True)
    ap.add_argument("--dtype", choices=("auto", "float32", "bfloat16"), default="auto")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--train-steps", type=int, default=10)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from jaxse.evaluation import accelerator
    from jaxse.evaluation.bench_networks import model_of_config
    from jaxse.evaluation.bench_timing import time_train_step

    config = load_config(args.config, args.overrides)
    batch, crop = int(config.training.batch_size), int(config.data.crop_frames)
    dtypes = ("float32", "bfloat16") if args.dtype == "auto" else (args.dtype,)
    plan = accelerator.Plan(networks={"lease": model_of_config(load_config(args.config, args.overrides))},
                            shapes=((batch, crop),), dtypes=dtypes, seconds=0.0, recipes=(),
                            train_config=str(args.config), train_steps=args.train_steps, repeats=args.repeats,
                            quick=False)

    class LeaseCheck(accelerator.Check):
        def train(self) -> dict:
            dtype, why = (choose_dtype(self.result["forward"], str(config.model.dtype)) if args.dtype == "auto"
                          else (args.dtype, "--dtype"))
            self.result["dtype"], self.result["dtype_why"] = dtype, why
            config.model.dtype = dtype
            return {"config": args.config.name, "dtype": dtype, **time_train_step(config, args.train_steps)}

    check = LeaseCheck(plan, str(args.json), args.budget_s, log)
    check.result["schema"] = "jaxse.short_lease.check/1"
    result = check.run()
    return 1 if result["errors"] or result["train"] is None else 0


# ------------------------------------------------------------------------------------ running a phase


def run_command(cmd: list[str], timeout_s: float, log_path: Path, env: dict) -> tuple[int | None, bool]:
    """Run ``cmd`` (its output to ``log_path`` and, line by line, to stdout) for at most ``timeout_s``:
    ``(return code, timed out)``; past the limit it gets SIGTERM, then SIGKILL 15 s later."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w", encoding="utf-8") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                errors="replace", bufsize=1)

        def pump():
            for line in proc.stdout:
                fh.write(line)
                fh.flush()
                sys.stdout.write("    " + line)
                sys.stdout.flush()

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        timed_out = False
        try:
            proc.wait(timeout=max(1.0, timeout_s))
        except subprocess.TimeoutExpired:
            timed_out = True
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        reader.join(timeout=5)
    return proc.returncode, timed_out


def log_tail(path: Path, lines: int = 15, chars: int = 2000) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.replace("\r", "\n").splitlines()[-lines:])[-chars:]


class Recipe:
    """The three phases and the one JSON (rewritten after each phase)."""

    def __init__(self, args):
        self.args = args
        self.t0 = time.perf_counter()
        self.workdir = args.workdir.absolute()
        self.json_path = args.json.absolute()
        self.env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.env["PYTHONPATH"] = str(REPO) + (os.pathsep + self.env["PYTHONPATH"] if self.env.get("PYTHONPATH") else "")
        data = args.data.absolute()
        train_dirs = [str(data / "train")] + ([str(data / "train_extra")] if (data / "train_extra").is_dir() else [])
        self.data_overrides = [f"data.train_dir={','.join(train_dirs)}", f"data.valid_dir={data / 'valid'}"]
        self.overrides = merge_overrides(self.data_overrides, args.overrides)  # a --set data.* of the user wins
        self.config = load_config(args.config, self.overrides)
        budgets = {"check": args.check_s, "train": args.train_s, "enhance": args.enhance_s}
        self.result = {
            "schema": SCHEMA, "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "complete": False, "command": [sys.executable, *sys.argv], "host": platform.node(),
            "python": platform.python_version(), "setup_s": args.setup_s, "budgets_s": budgets,
            "total_budget_s": sum(budgets.values()), "data": str(data), "workdir": str(self.workdir),
            "device": None, "environment": None,
            "phases": {name: {"status": "pending", "budget_s": b} for name, b in budgets.items()},
            "check": None, "config": {"file": str(args.config), "overrides": self.overrides},
            "train": None, "enhance": None,
        }

    def save(self) -> None:
        self.result["wall_s"] = round(time.perf_counter() - self.t0, 1)
        write_json_atomic(self.json_path, self.result)

    def phase(self, name: str, cmd: list[str], timeout_s: float, part: str = "") -> dict:
        """Run one command of phase ``name`` (its ``part``, if the phase has several) within ``timeout_s``;
        the record (status ok / failed / timeout, seconds, return code, log, the log's tail on failure) is the
        phase's record, or its field ``part``."""
        rec = self.result["phases"][name]
        if part:
            rec = rec.setdefault(part, {})
        rec.update(status="running", command=cmd,
                   log=str(self.workdir / "logs" / f"{name}{'_' + part if part else ''}.log"))
        self.save()
        log(f"phase {name}{' (' + part + ')' if part else ''}: up to {timeout_s:.0f} s")
        t = time.perf_counter()
        rc, timed_out = run_command(cmd, timeout_s, Path(rec["log"]), self.env)
        rec.update(seconds=round(time.perf_counter() - t, 1), rc=rc,
                   status="timeout" if timed_out else ("ok" if rc == 0 else "failed"))
        if rec["status"] != "ok":
            rec["error"] = log_tail(Path(rec["log"]))
        log(f"phase {name}{' (' + part + ')' if part else ''}: {rec['status']} after {rec['seconds']:.0f} s")
        return rec

    def fail(self, name: str, exc: BaseException, t: float) -> None:
        rec = self.result["phases"][name]
        rec.update(status="failed", error=f"{type(exc).__name__}: {exc}"[:2000],
                   seconds=round(time.perf_counter() - t, 1))
        log(f"phase {name}: failed: {rec['error']}")

    def run(self) -> dict:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.save()
        for name, fn in (("check", self.check), ("train", self.train), ("enhance", self.enhance)):
            t = time.perf_counter()
            try:
                fn()
            except Exception as exc:  # a broken phase is recorded; the next one still runs
                self.fail(name, exc, t)
            self.save()
        self.result["complete"] = True
        self.result["finished"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        self.save()
        return self.result

    # ---------------------------------------------------------------------------- the phases

    def check(self) -> None:
        a = self.args
        out = self.workdir / "check.json"
        out.unlink(missing_ok=True)
        cmd = [sys.executable, str(Path(__file__).resolve()), "check", "--config", str(a.config), "--json", str(out),
               "--budget-s", str(max(1.0, a.check_s - a.check_margin_s)), "--dtype", a.dtype,
               *[x for o in self.overrides for x in ("--set", o)]]
        self.phase("check", cmd, a.check_s)
        if not out.exists():
            return
        r = json.loads(out.read_text())
        self.result["device"], self.result["environment"] = r.get("device"), r.get("environment")
        self.result["check"] = {k: r.get(k) for k in ("forward", "train", "dtype", "dtype_why", "skipped", "errors",
                                                      "device_peak_gib", "wall_s", "complete")}

    def plan_training(self) -> tuple[list[str], float]:
        """The training's overrides (the check's dtype, the validation interval from its step rate) and its
        ``max_seconds``."""
        a, chk = self.args, self.result.get("check") or {}
        max_seconds = max(1.0, a.train_s - a.train_margin_s)
        plan = {"max_seconds": max_seconds}
        extra = [f"training.max_seconds={max_seconds}", f"training.export_dir={self.workdir / 'prior'}"]
        if chk.get("dtype"):
            plan["dtype"] = chk["dtype"]
            extra.append(f"model.dtype={chk['dtype']}")
        rate = (chk.get("train") or {}).get("steps_per_s")
        if rate:
            loop = max(0.0, max_seconds - float(chk["train"].get("compile_s") or 0.0))
            plan["projected_steps"] = projected = int(rate * loop)
            if a.eval_every is None:
                a.eval_every = max(int(self.config.training.log_every), 25 * round(projected / VALIDATIONS / 25))
        if a.eval_every is not None:
            extra.append(f"training.eval_every={a.eval_every}")
        plan["eval_every"] = a.eval_every or int(self.config.training.eval_every)
        self.result["train"] = {"plan": plan}
        return merge_overrides(self.data_overrides, extra, a.overrides), max_seconds

    def train(self) -> None:
        a = self.args
        overrides, _ = self.plan_training()
        self.config = load_config(a.config, overrides)
        self.result["config"].update(overrides=overrides, values=config_json(self.config))
        cmd = [sys.executable, str(REPO / "train.py"), "--config", str(a.config),
               "--workdir", str(self.workdir / "train"), *[f"--config.{o}" for o in overrides]]
        self.phase("train", cmd, a.train_s)
        self.result["train"].update(training_summary(self.workdir / "train", self.workdir / "prior"))

    def enhance(self) -> None:
        a = self.args
        t_end = time.perf_counter() + a.enhance_s
        data = a.data.absolute()
        mix = self.workdir / "valid_mix"
        cmd = [sys.executable, "-m", "jaxse.mix", "--clean", str(data / "valid"),
               "--noise", str(data / "noise" / "train"), "-o", str(mix), "--snr", "-5", "0", "5", "--seed", "0",
               "--max-files", str(a.mix_files)]
        t = time.perf_counter()
        rec = self.result["phases"]["enhance"]
        try:
            mixed = self.phase("enhance", cmd, a.enhance_s, part="mix")
            if mixed["status"] != "ok":
                rec.update(status=mixed["status"], error=mixed.get("error"))
                return
            prior = self.workdir / "prior"
            checkpoints = [SHIPPED_PRIOR] + ([prior] if prior.is_dir() else [])
            if prior.is_dir() is False:
                rec["note"] = "no export of the new prior: the shipped prior alone was scored"
            out = self.workdir / "enhance.json"
            out.unlink(missing_ok=True)
            cmd = [sys.executable, str(REPO / "benchmarks" / "tune_valid.py"), str(mix), a.setting, "--json", str(out),
                   *[x for c in checkpoints for x in ("--checkpoint", str(c))]]
            scored = self.phase("enhance", cmd, t_end - time.perf_counter(), part="score")
            rec.update(status=scored["status"], error=scored.get("error"))
            if out.exists():  # rewritten after each prior: a run cut short keeps the shipped prior's scores
                self.result["enhance"] = enhancement_summary(json.loads(out.read_text()), SHIPPED_PRIOR, prior,
                                                             a.setting)
        finally:
            rec["seconds"] = round(time.perf_counter() - t, 1)
            if rec.get("error") is None:
                rec.pop("error", None)


# ------------------------------------------------------------------------------------ summaries


def training_summary(workdir: Path, export: Path) -> dict:
    """Steps done, steps/s, the train and validation losses (from ``metrics.jsonl``) and the export."""
    records = []
    path = workdir / "metrics.jsonl"
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    train = [r for r in records if "train/loss" in r]
    valid = [r for r in records if "valid/loss" in r]
    out = {"steps_done": max((int(r["step"]) for r in records), default=0),
           "train_loss": [[int(r["step"]), round(r["train/loss"], 4)] for r in train],
           "valid_loss": [[int(r["step"]), round(r["valid/loss"], 4)] for r in valid],
           "export": str(export), "export_exists": export.is_dir() and any(export.iterdir())}
    if valid:
        best = min(valid, key=lambda r: r["valid/loss"])
        out["best"] = {"step": int(best["step"]), "valid_loss": round(best["valid/loss"], 4)}
    rates = [r["train/steps_per_sec"] for r in train[1:] if "train/steps_per_sec" in r]  # the first has the compile
    if rates:
        out["steps_per_s_median"] = round(sorted(rates)[len(rates) // 2], 3)
    if len(train) >= 2 and train[-1]["time"] > train[0]["time"]:
        out["steps_per_s_after_first_log"] = round((train[-1]["step"] - train[0]["step"])
                                                   / (train[-1]["time"] - train[0]["time"]), 3)
    if out["export_exists"]:
        out["export_files_mb"] = round(sum(f.stat().st_size for f in export.rglob("*") if f.is_file()) / 1e6, 1)
    return out


def _sem(values: list[float]) -> float:
    n = len(values)
    if n < 2:
        return float("nan")
    mean = sum(values) / n
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n)


def enhancement_summary(report: dict, shipped: Path, new: Path, setting: str) -> dict:
    """Both priors' scores from ``tune_valid.py``'s JSON, and the paired SI-SDR difference (new - shipped)."""
    rows = {}
    keep = ("si_sdr", "si_sdr_gain", "si_sdr_gain_sem", "gain_by_snr", "estoi", "estoi_gain", "estoi_gain_sem",
            "nfe", "compile_s", "rtf", "per_file")
    for r in report.get("results", []):
        which = "shipped" if Path(r["checkpoint"]).resolve() == shipped.resolve() else "new"
        rows[which] = {"checkpoint": r["checkpoint"], **{k: r.get(k) for k in keep}}
    out = {"setting": setting, "mixtures": report.get("num_mixtures"), "audio_s": report.get("audio_seconds"),
           "input_si_sdr": report.get("input_si_sdr"), "input_estoi": report.get("input_estoi"),
           "shipped": rows.get("shipped"), "new": rows.get("new")}
    if rows.get("shipped") and rows.get("new"):
        diff = [n - s for n, s in zip(rows["new"]["per_file"], rows["shipped"]["per_file"])]
        out["paired_si_sdr_diff"] = {"mean": round(sum(diff) / len(diff), 3), "sem": round(_sem(diff), 3),
                                     "n": len(diff)}
        out["new_beats_shipped"] = bool(out["paired_si_sdr_diff"]["mean"] > 0
                                        and rows["new"]["estoi_gain"] >= rows["shipped"]["estoi_gain"])
    return out


# ------------------------------------------------------------------------------------ main


def _positive(text: str) -> float:
    v = float(text)
    if not math.isfinite(v) or v <= 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}")
    return v


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["check"]:
        return check_main(argv[1:])
    ap = argparse.ArgumentParser(prog="benchmarks/short_lease.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("JAXSE_DATA", REPO.parent / "shared" / "data")),
                    help="data root with train/ (train_extra/), valid/, noise/train/ (default $JAXSE_DATA or "
                         "../shared/data)")
    ap.add_argument("--workdir", type=Path, default=REPO / "runs" / "short_lease")
    ap.add_argument("--json", type=Path, default=Path("short_lease.json"))
    ap.add_argument("--config", type=Path, default=REPO / "configs" / "short_lease.py")
    ap.add_argument("--set", action="append", default=[], dest="overrides", metavar="GROUP.FIELD=VALUE",
                    help="config override for the check and the training (repeatable)")
    ap.add_argument("--dtype", choices=("auto", "float32", "bfloat16"), default="auto",
                    help="compute dtype of the training (auto: the faster forward of the check)")
    ap.add_argument("--check-s", type=_positive, default=120.0, help="budget of the check phase (default 120)")
    ap.add_argument("--check-margin-s", type=float, default=35.0,
                    help="no check item starts in the last S seconds of its budget (default 35)")
    ap.add_argument("--train-s", type=_positive, default=400.0, help="budget of the training phase (default 400)")
    ap.add_argument("--train-margin-s", type=float, default=55.0,
                    help="training.max_seconds = --train-s less this (setup, last checkpoint; default 55)")
    ap.add_argument("--enhance-s", type=_positive, default=140.0, help="budget of the enhancement phase (default 140)")
    ap.add_argument("--eval-every", type=int, default=None,
                    help="validation interval (default: from the check's step rate, ~8 validations)")
    ap.add_argument("--mix-files", type=int, default=12, help="validation mixtures (default 12: valid12)")
    ap.add_argument("--setting", default=DEFAULT_SETTING, help="tune_valid.py setting of both priors")
    ap.add_argument("--setup-s", type=float, default=None, help="seconds spent before this script (wheels)")
    args = ap.parse_args(argv)
    problems = []
    for sub in ("train", "valid", "noise/train"):
        if not (args.data / sub).is_dir():
            problems.append(f"--data {args.data}: no {sub}/ folder")
    if not args.config.is_file():
        problems.append(f"--config {args.config}: no such file")
    if args.eval_every is not None and args.eval_every < 1:
        problems.append(f"--eval-every must be >= 1, got {args.eval_every}")
    if args.mix_files < 1:
        problems.append(f"--mix-files must be >= 1, got {args.mix_files}")
    if args.train_margin_s < 0 or args.train_margin_s >= args.train_s:
        problems.append(f"--train-margin-s must be in [0, --train-s), got {args.train_margin_s}")
    if not problems:
        try:
            for o in args.overrides:
                parse_override(o)
            load_config(args.config, args.overrides)
        except Exception as exc:  # a bad override or config file: one line
            problems.append(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    if problems:
        print(f"short_lease.py: error: {problems[0]}", file=sys.stderr)
        return 2
    result = Recipe(args).run()
    ph = result["phases"]
    log("; ".join(f"{k} {v['status']} ({v.get('seconds', 0):.0f} s)" for k, v in ph.items())
        + f"; {result['wall_s']:.0f} s in all; JSON: {args.json}")
    enh = result.get("enhance") or {}
    for which in ("shipped", "new"):
        r = enh.get(which)
        if r:
            log(f"{which:>7} prior: SI-SDR gain {r['si_sdr_gain']:+.2f} ± {r['si_sdr_gain_sem']:.2f} dB, "
                f"ESTOI gain {r['estoi_gain']:+.3f}, RTF {r['rtf']}")
    if "paired_si_sdr_diff" in enh:
        d = enh["paired_si_sdr_diff"]
        log(f"new - shipped, paired SI-SDR: {d['mean']:+.2f} ± {d['sem']:.2f} dB over {d['n']} mixtures")
    return 0 if all(v["status"] == "ok" for v in ph.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
