"""Bad inputs and interruptions through the public entry points, one line per case with its verdict.

    python benchmarks/reliability.py [--only WORD] [--keep DIR]

Each case runs a command (``enhance.py``, ``train.py``, ``python -m jaxse.evaluate``, or ``jaxse.enhance`` in a
``python -c``) in a fresh temporary folder and checks what the README's "Reliability" section promises: the exit
code, a one-line ``error`` on stderr with no traceback, and nothing written where nothing should be. Settings are
tiny (``--method rvae-ldem --config.num_em=2``: seconds on a CPU). Prints ``PASS`` / ``FAIL`` per case (expected
vs got) and exits 1 if any case failed. ``--only WORD`` runs the cases whose name holds WORD.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
FAST = ["--method", "rvae-ldem", "--config.num_em=2", "--progress=false"]
TRAIN_CONFIG = "configs/cpu_small.py"


@dataclass
class Got:
    code: int
    err: str
    tree: list[str] = field(default_factory=list)


def _tree(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def _run(args, cwd: Path, env=None, timeout=600) -> Got:
    env = {**os.environ, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu"), **(env or {})}
    p = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    return Got(p.returncode, p.stderr, _tree(cwd))


def _setup(tmp: Path) -> None:
    """in/ (two short wavs), empty/, clean/ + enh/ for the evaluation (enh lacks one), afile."""
    rng = np.random.default_rng(0)
    for d in ("in", "empty", "clean", "enh"):
        (tmp / d).mkdir()
    for name in ("a", "b"):
        x = (0.1 * np.sin(np.arange(24000) / 7.0) + 0.01 * rng.standard_normal(24000)).astype(np.float32)
        sf.write(tmp / "in" / f"{name}.wav", x, 16000)
        sf.write(tmp / "clean" / f"{name}.wav", x, 16000)
    sf.write(tmp / "enh" / "a.wav", sf.read(tmp / "clean" / "a.wav")[0], 16000)
    (tmp / "afile").write_text("a regular file\n")


def _one_line_error(g: Got, code: int, prefix: str) -> str | None:
    lines = g.err.strip().splitlines()
    if g.code != code:
        return f"exit {g.code}"
    if "Traceback" in g.err:
        return "a traceback"
    errors = [ln for ln in lines if ln.startswith(prefix)]
    if len(errors) != 1:
        return f"{len(errors)} '{prefix}' lines"
    return None


def usage(prefix: str, *, code: int = 2, words: tuple = (), unchanged: bool = True):
    """The check of a usage error: exit ``code``, one ``prefix`` line holding ``words``, the folder unchanged."""

    def check(g: Got, before: list[str]) -> str | None:
        why = _one_line_error(g, code, prefix)
        if why:
            return why
        line = next(ln for ln in g.err.splitlines() if ln.startswith(prefix))
        missing = [w for w in words if w not in line]
        if missing:
            return f"line lacks {missing}: {line[:120]}"
        if unchanged and g.tree != before:
            return f"wrote {sorted(set(g.tree) - set(before))[:4]}"
        return None

    return check


def _enh(tmp, *args):
    return [PY, "enhance.py", *map(str, args)]


def _train(tmp, *args, config=TRAIN_CONFIG):
    return [PY, "train.py", *([f"--config={config}"] if config else []), *map(str, args)]


def _api(code: str):
    return [PY, "-c", "import warnings, numpy as np, jaxse\n" + code]


def _lock_then(tmp: Path) -> Got:
    """A second enhance.py on an -o that a first run holds (the lock taken by a helper process)."""
    holder = subprocess.Popen([PY, "-c", "import sys, time; from jaxse.engine.outdir import OutputLock; "
                               "OutputLock(sys.argv[1]).acquire(); print('ok', flush=True); time.sleep(300)",
                               str(tmp / "out")], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        holder.stdout.readline()
        before = _tree(tmp)
        g = _run(_enh(tmp, tmp / "in", "-o", tmp / "out", *FAST), tmp)
        # unchanged by the second run: reported as the folder before the holder made out/ (what the check compares)
        g.tree = [x for x in before if x != "out" and not x.startswith("out/")] if _tree(tmp) == before else _tree(tmp)
        return g
    finally:
        holder.kill()
        holder.wait()


def _stale_part(tmp: Path) -> Got:
    (tmp / "out").mkdir()
    (tmp / "out" / ".a.wav.0123456789ab.part").write_bytes(b"RIFF")
    g = _run(_enh(tmp, tmp / "in", "-o", tmp / "out", *FAST), tmp)
    if (tmp / "out" / ".a.wav.0123456789ab.part").exists():
        g.err += "\n(the stale part is still there)"
        g.code = -1
    return g


def _ctrl_c(tmp: Path) -> Got:
    """SIGINT once the first output exists, then the same command again."""
    for i in range(6):
        shutil.copy(tmp / "in" / "a.wav", tmp / "in" / f"c{i}.wav")
    args = _enh(tmp, tmp / "in", "-o", tmp / "out", "--method", "rvae-ldem", "--config.num_em=40", "--batch-size",
                "1", "--progress=false")
    p = subprocess.Popen(args, cwd=REPO, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "JAX_PLATFORMS": "cpu"})
    deadline = time.time() + 300
    while time.time() < deadline and not (tmp / "out" / "a.wav").exists() and p.poll() is None:
        time.sleep(0.2)
    p.send_signal(signal.SIGINT)
    err = p.communicate(timeout=300)[1]
    first = Got(p.returncode, err, _tree(tmp))
    rerun = _run(args, tmp)
    last = err.strip().splitlines()[-1] if err.strip() else ""
    ok = (first.code == 130 and "Traceback" not in err and last.startswith("enhance.py: stopped; ")
          and last.endswith("files done, rerun the same command to finish") and rerun.code == 0
          and len(list((tmp / "out").glob("*.wav"))) == 8)
    return Got(0 if ok else first.code, f"{last}\n(rerun: exit {rerun.code})")


def _full_disk(tmp: Path) -> Got:
    mnt = tmp / "tmpfs"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=150k", "tmpfs", str(mnt)], capture_output=True).returncode:
        return Got(-2, "skipped: mounting a tmpfs is not permitted here")
    for i in range(4):  # 6 x 47 KiB of output for 150 KiB
        shutil.copy(tmp / "in" / "a.wav", tmp / "in" / f"c{i}.wav")
    try:
        g = _run(_enh(tmp, tmp / "in", "-o", mnt / "out", *FAST), tmp)
        names = [p.name for p in (mnt / "out").iterdir()]
        if any(n.endswith(".part") for n in names):
            g.err += "\n(a .part file was left)"
            g.code = -1
        return g
    finally:
        subprocess.run(["umount", str(mnt)])


def _full_disk_check(g: Got, before) -> str | None:
    if g.code == -2:
        return "SKIP"
    failed = [ln for ln in g.err.splitlines() if ln.startswith("FAILED")]
    if g.code != 1 or "Traceback" in g.err or "Exception ignored" in g.err or not failed:
        return f"exit {g.code}, {len(failed)} FAILED lines, traceback: {'Traceback' in g.err}"
    if not all(ln.endswith("No space left on device") for ln in failed):
        return failed[0]
    return None


def _float_identical(tmp: Path) -> Got:
    sf.write(tmp / "in" / "a.wav", sf.read(tmp / "in" / "a.wav")[0], 16000, subtype="FLOAT")
    (tmp / "in" / "b.wav").unlink()
    a = _run(_enh(tmp, tmp / "in", "-o", tmp / "o1", *FAST), tmp)
    time.sleep(1.1)
    b = _run(_enh(tmp, tmp / "in", "-o", tmp / "o2", *FAST), tmp)
    same = (tmp / "o1" / "a.wav").read_bytes() == (tmp / "o2" / "a.wav").read_bytes() if not (a.code or b.code) else 0
    return Got(0 if same else 1, "byte-identical" if same else "the two outputs differ")


def _passes(g: Got, before) -> str | None:
    return None if g.code == 0 else f"exit {g.code}: {g.err.strip().splitlines()[-1:]}"


E_PFX, T_PFX = "enhance.py: error: ", "train.py: error: "
# (name, what is expected, the command or a function of the folder, the check)
CASES: list[tuple[str, str, Callable, Callable]] = [
    ("enhance: folder without audio", "exit 2, one line, nothing written",
     lambda t: _enh(t, t / "empty", "-o", t / "out", *FAST), usage(E_PFX, words=("no audio files under",))),
    ("enhance: --config.lmbd=nan", "exit 2, one line", lambda t: _enh(t, t / "in", "-o", t / "out", "--config.lmbd=nan"),
     usage(E_PFX, words=("lmbd must be finite",))),
    ("enhance: --config.lmbd=inf", "exit 2, one line", lambda t: _enh(t, t / "in", "-o", t / "out", "--config.lmbd=inf"),
     usage(E_PFX, words=("lmbd must be finite",))),
    ("enhance: --config.ld_lr=-1 (rvae)", "exit 2, one line",
     lambda t: _enh(t, t / "in", "-o", t / "out", "--method", "rvae-ldem", "--config.ld_lr=-1"),
     usage(E_PFX, words=("ld_lr must be > 0",))),
    ("enhance: -o is a file", "exit 2, one line", lambda t: _enh(t, t / "in", "-o", t / "afile", *FAST),
     usage(E_PFX, words=("not a directory",))),
    ("enhance: missing INPUT", "exit 2, one line", lambda t: _enh(t, t / "nosuch", "-o", t / "out", *FAST),
     usage(E_PFX, words=("no such file",))),
    ("enhance: JAXSE_PROCESS_ID=abc", "exit 2, one line",
     lambda t: ("env", {"JAXSE_PROCESS_ID": "abc", "JAXSE_NUM_PROCESSES": "2"},
                _enh(t, t / "in", "-o", t / "out", *FAST)), usage(E_PFX, words=("JAXSE_PROCESS_ID",))),
    ("enhance: --process_id -1", "exit 2, names the range",
     lambda t: _enh(t, t / "in", "-o", t / "out", "--num_processes=2", "--process_id=-1", *FAST),
     usage(E_PFX, words=("process_id",))),
    ("enhance: -o locked by a running run", "exit 2, one line, nothing written", _lock_then,
     usage(E_PFX, words=("in use by another enhance run",))),
    ("enhance: stale .part from a kill -9", "exit 0, part removed and counted", _stale_part, _passes),
    ("enhance: full disk (150 KiB tmpfs)", "exit 1, one FAILED line per file, no traceback", _full_disk,
     _full_disk_check),
    ("enhance: Ctrl-C, then rerun", "exit 130, one 'stopped' line; rerun exit 0, all files", _ctrl_c, _passes),
    ("enhance: float WAV twice", "byte-identical outputs", _float_identical, _passes),
    ("train: batch_size=abc", "exit 2, one line, no workdir",
     lambda t: _train(t, f"--workdir={t / 'w'}", "--config.training.batch_size=abc"), usage(T_PFX)),
    ("train: batch_size=0", "exit 2, one line, no workdir",
     lambda t: _train(t, f"--workdir={t / 'w'}", "--config.training.batch_size=0"), usage(T_PFX, words=("batch_size",))),
    ("train: lr=-1", "exit 2, one line, no workdir",
     lambda t: _train(t, f"--workdir={t / 'w'}", "--config.training.lr=-1"), usage(T_PFX, words=("lr",))),
    ("train: unknown field", "exit 2, one line, no workdir",
     lambda t: _train(t, f"--workdir={t / 'w'}", "--config.training.nosuch=1"), usage(T_PFX, words=("nosuch",))),
    ("train: missing --config file", "exit 2, one line",
     lambda t: _train(t, f"--workdir={t / 'w'}", config="configs/nosuch.py"), usage(T_PFX, words=("nosuch",))),
    ("train: no --workdir", "exit 2, one line", lambda t: _train(t), usage(T_PFX, words=("workdir",))),
    ("train: --workdir is a file", "exit 2, one line", lambda t: _train(t, f"--workdir={t / 'afile'}"),
     usage(T_PFX, words=("afile",))),
    ("train: JAXSE_PROCESS_ID=abc", "exit 2, one line",
     lambda t: ("env", {"JAXSE_PROCESS_ID": "abc", "JAXSE_NUM_PROCESSES": "2"}, _train(t, f"--workdir={t / 'w'}")),
     usage(T_PFX, words=("JAXSE_PROCESS_ID",))),
    ("api: int16 array", "scaled by 1/32768, output at float scale",
     lambda t: _api("x = (np.sin(np.arange(24000) / 7.0) * 3000).astype(np.int16)\n"
                    "y = jaxse.enhance(x, 16000, method='rvae-ldem', config={'num_em': 2})\n"
                    "assert np.max(np.abs(y)) < 1, np.max(np.abs(y))"), _passes),
    ("api: sample_rate=16", "JaxseError (ValueError) saying the range",
     lambda t: _api("try:\n    jaxse.enhance(np.zeros(8000, np.float32), 16, method='rvae-ldem')\n"
                    "except jaxse.JaxseError as e:\n    assert isinstance(e, ValueError) and '4000' in str(e), e\n"
                    "else:\n    raise SystemExit('accepted')"), _passes),
    ("api: (2, n) array", "JaxseError saying to transpose",
     lambda t: _api("try:\n    jaxse.enhance(np.zeros((2, 16000), np.float32), 16000, method='rvae-ldem')\n"
                    "except jaxse.JaxseError as e:\n    assert '.T' in str(e), e\n"
                    "else:\n    raise SystemExit('accepted')"), _passes),
    ("api: unknown config field", "JaxseError and TypeError",
     lambda t: _api("try:\n    jaxse.enhance(np.zeros(16000, np.float32), 16000, method='rvae-ldem', config={'x': 1})\n"
                    "except jaxse.JaxseError as e:\n    assert isinstance(e, TypeError)\n"
                    "else:\n    raise SystemExit('accepted')"), _passes),
    ("api: shipped prior, no absl warning", "no 'read only' line on stderr",
     lambda t: _api("from jaxse.core.checkpoint import read_checkpoint_metadata\n"
                    "read_checkpoint_metadata('jaxse/assets/prior')"),
     lambda g, b: _passes(g, b) or ("warned: " + g.err.strip()[:80] if "read only" in g.err else None)),
    ("evaluate: enhanced lacks a clean file", "exit 2, one line naming it, no report",
     lambda t: [PY, "-m", "jaxse.evaluate", "--enhanced", str(t / "enh"), "--clean", str(t / "clean"), "-o",
                str(t / "rep"), "--metrics", "si_sdr", "--figures", "0", "--no-progress"],
     usage("error: ", words=("b",))),
    ("evaluate: --allow-missing", "exit 0, the missing file listed",
     lambda t: [PY, "-m", "jaxse.evaluate", "--enhanced", str(t / "enh"), "--clean", str(t / "clean"), "-o",
                str(t / "rep"), "--metrics", "si_sdr", "--figures", "0", "--no-progress", "--allow-missing"],
     lambda g, b: _passes(g, b) or (None if "left out 1 file(s) with no enhanced output: b" in g.err
                                    else "the missing file is not listed")),
]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="", help="run the cases whose name holds this")
    ap.add_argument("--keep", default=None, help="keep the case folders under this folder")
    args = ap.parse_args(argv)
    failed = 0
    base = Path(args.keep or tempfile.mkdtemp(prefix="jaxse-reliability-"))
    base.mkdir(parents=True, exist_ok=True)
    width = max(len(c[0]) for c in CASES)
    for i, (name, expected, make, check) in enumerate(CASES):
        if args.only not in name:
            continue
        tmp = base / f"case{i:02d}"
        tmp.mkdir()
        _setup(tmp)
        before = _tree(tmp)
        t0 = time.perf_counter()
        try:
            spec = make(tmp)
            if isinstance(spec, Got):
                g = spec
            elif isinstance(spec, tuple):  # ("env", extra environment, command)
                g = _run(spec[2], tmp, env=spec[1])
            else:
                g = _run(spec, tmp)
            why = check(g, before)
        except Exception as exc:  # a case that cannot run is a failed case
            g, why = Got(-1, ""), f"{type(exc).__name__}: {exc}"
        verdict = "SKIP" if why == "SKIP" else "PASS" if why is None else "FAIL"
        failed += verdict == "FAIL"
        first = next((ln for ln in g.err.strip().splitlines() if "error" in ln or "stopped" in ln), "")
        print(f"{verdict}  {name:<{width}}  expected: {expected}; got: exit {g.code}"
              + (f", {first[:110]!r}" if first else "") + (f" -- {why}" if why not in (None, "SKIP") else "")
              + f"  ({time.perf_counter() - t0:.1f} s)", flush=True)
    if not args.keep:
        shutil.rmtree(base, ignore_errors=True)
    print(f"{'all cases pass' if not failed else f'{failed} case(s) failed'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
