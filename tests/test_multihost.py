"""Several processes enhancing one data set: the shares, the merged log, and 2 localhost processes end to end
(jax.distributed, and a static split with one process killed and rerun) against a one-process run."""

from __future__ import annotations

import csv
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_enhance_cli import tiny_checkpoint  # noqa: E402,F401  (a module-scoped fixture)

from jaxse import multihost  # noqa: E402
from jaxse.enhance import LOG_FIELDS, read_log  # noqa: E402


# ------------------------------------------------------------------------------------------ shares


def test_shares_are_disjoint_complete_balanced_and_deterministic():
    rng = np.random.default_rng(0)
    durations = {f"d{i % 7}/f{i:03d}.wav": float(d) for i, d in enumerate(rng.uniform(1, 20, 200))}
    for count in (1, 2, 3, 8):
        owner = multihost.assign_shares(durations, count)
        assert set(owner) == set(durations) and set(owner.values()) <= set(range(count))
        loads = np.zeros(count)
        for k, i in owner.items():
            loads[i] += durations[k]
        # longest-first greedy: every load is within the longest file of the mean
        assert loads.max() - loads.min() <= max(durations.values()), loads
        shuffled = dict(sorted(durations.items(), key=lambda kv: rng.random()))
        assert multihost.assign_shares(shuffled, count) == owner  # independent of listing order
    # ties and unreadable files (duration 0) are placed deterministically too
    same = {f"f{i}": 0.0 for i in range(5)}
    assert multihost.assign_shares(same, 2) == {"f0": 0, "f1": 1, "f2": 0, "f3": 1, "f4": 0}


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_processes=2), r"--num_processes 2 needs a --process_id in \[0, 2\)"),
    (dict(num_processes=2, process_id=2), r"--process_id must be in \[0, 2\) \(--num_processes 2\), got 2"),
    (dict(num_processes=1, process_id=1), r"--process_id must be in \[0, 1\) \(--num_processes 1\), got 1"),
    (dict(process_id=3), r"--process_id must be in \[0, 1\) \(no --num_processes: a single process\), got 3"),
    (dict(process_id=-1), r"--process_id must be in \[0, 1\) \(no --num_processes: a single process\), got -1"),
    (dict(num_processes=0, process_id=0), r"--num_processes must be >= 1, got 0"),
])
def test_bad_process_flags_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        multihost.resolve_share(**kwargs)


def test_static_share_needs_no_coordination():
    assert multihost.resolve_share() == multihost.Share(0, 1)
    assert multihost.resolve_share(num_processes=3, process_id=2) == multihost.Share(2, 3)
    assert str(multihost.Share(1, 2)) == "process 1 of 2"


def _write_part(log: Path, share, rows):
    path = multihost.part_path(log, share)
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists()
    with open(path, "a", newline="") as fh:
        w = csv.writer(fh)
        if new:
            w.writerow(LOG_FIELDS)
        w.writerows(rows)


def test_merge_appends_each_part_row_once_and_keeps_earlier_rows(tmp_path):
    log = tmp_path / "enhance_log.csv"
    log.write_text(",".join(LOG_FIELDS) + "\nold.wav,1.000,2.000,2.0000,ok,\n")  # an earlier one-process run
    s0, s1 = multihost.Share(0, 2), multihost.Share(1, 2)
    _write_part(log, s0, [["a.wav", "1", "1", "1", "ok", ""]])
    _write_part(log, s1, [["b.wav", "1", "1", "1", "ok", ""], ["c.wav", "", "", "", "error", "empty file"]])
    assert multihost.merge_logs(log) == 3
    assert multihost.merge_logs(log) == 0  # nothing new
    _write_part(log, s0, [["a.wav", "", "", "", "skipped", "output exists"]])  # a rerun of process 0
    assert multihost.main([str(tmp_path)]) == 0
    rows = read_log(log)
    assert [(r["file"], r["status"]) for r in rows] == [
        ("old.wav", "ok"), ("a.wav", "ok"), ("b.wav", "ok"), ("c.wav", "error"), ("a.wav", "skipped")]


def test_concurrent_merges_lose_and_repeat_nothing(tmp_path):
    log = tmp_path / "enhance_log.csv"
    for i in range(4):
        _write_part(log, multihost.Share(i, 4), [[f"p{i}_{j}.wav", "1", "1", "1", "ok", ""] for j in range(50)])
    counts = []
    threads = [threading.Thread(target=lambda: counts.append(multihost.merge_logs(log))) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(counts) == 200
    files = [r["file"] for r in read_log(log)]
    assert len(files) == 200 and len(set(files)) == 200


def test_merge_of_a_folder_without_parts_is_one_line(tmp_path, capsys):
    assert multihost.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no log parts" in err


# ------------------------------------------------------------------------------ 2 processes, end to end


FAST = ["--batch-size", "2", "--chunk-frames", "64", "--config.num_steps=6", "--config.num_samples=1",
        "--config.corrector=none", "--noprogress", "--seed", "3"]


def _env():
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_DISABLE_MOST_OPTIMIZATIONS="1")
    env.pop("XLA_FLAGS", None)
    for k in ("JAXSE_COORDINATOR_ADDRESS", "JAXSE_NUM_PROCESSES", "JAXSE_PROCESS_ID", "JAXSE_COORDINATOR_TIMEOUT"):
        env.pop(k, None)
    return env


def _start(inputs, out, ckpt, *extra):
    return subprocess.Popen([sys.executable, str(REPO / "enhance.py"), str(inputs), "-o", str(out),
                             "--checkpoint", str(ckpt), *FAST, *extra], cwd=REPO, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc, timeout=600):
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _outputs(out: Path) -> dict[str, np.ndarray]:
    return {p.relative_to(out).as_posix(): sf.read(p, dtype="float32")[0] for p in sorted(out.rglob("*.wav"))}


@pytest.mark.slow
def test_two_processes_match_one_process_bit_for_bit_and_a_killed_one_reruns(tmp_path, tiny_checkpoint):
    rng = np.random.default_rng(1)
    inputs = tmp_path / "noisy"
    names = [f"{d}/u{i}.wav" for i, d in enumerate(["a", "a", "b", "b", "c", "c", "c", "d", "d", "d"])]
    for i, name in enumerate(names):
        n = int(16000 * (0.5 + 0.15 * i))  # 0.5 .. 1.85 s: several frame buckets and chunked rows
        t = np.arange(n) / 16000
        x = 0.3 * np.sin(2 * np.pi * (180 + 20 * i) * t) * (1 + np.sin(2 * np.pi * 3 * t)) + 0.05 * rng.standard_normal(n)
        (inputs / name).parent.mkdir(parents=True, exist_ok=True)
        sf.write(inputs / name, x.astype(np.float32), 16000, subtype="FLOAT")
    owner = multihost.assign_shares({k: sf.info(inputs / k).duration for k in names}, 2)

    one = tmp_path / "one"
    _finish(_start(inputs, one, tiny_checkpoint))
    reference = _outputs(one)
    assert sorted(reference) == sorted(names)

    # jax.distributed on localhost: 2 processes, one coordinator
    two = tmp_path / "two"
    port = _free_port()
    procs = [_start(inputs, two, tiny_checkpoint, f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
                    f"--process_id={i}") for i in range(2)]
    errs = [_finish(p) for p in procs]
    assert "process 1 of 2, its share of the files" in errs[1]
    got = _outputs(two)
    assert sorted(got) == sorted(names)
    for k in names:
        assert np.array_equal(got[k], reference[k]), k  # bit-identical
    rows = read_log(two / "enhance_log.csv")
    assert Counter(r["file"] for r in rows if r["status"] == "ok") == Counter(names)
    for i in range(2):  # each process logged exactly its share
        part = read_log(multihost.part_path(two / "enhance_log.csv", multihost.Share(i, 2)))
        assert sorted(r["file"] for r in part) == sorted(k for k in names if owner[k] == i)

    # a static split (no coordinator); process 1 is killed once it has written an output, then rerun
    split = tmp_path / "split"
    mine = sorted(k for k in names if owner[k] == 1)
    p1 = _start(inputs, split, tiny_checkpoint, "--num_processes=2", "--process_id=1", "--batch-size=1")
    deadline = time.monotonic() + 600
    while not any((split / k).exists() for k in mine) and p1.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    p1.send_signal(signal.SIGKILL)
    p1.communicate()
    left = [k for k in mine if not (split / k).exists()]
    assert left, "process 1 finished its whole share before it could be killed"
    _finish(_start(inputs, split, tiny_checkpoint, "--num_processes=2", "--process_id=0"))
    _finish(_start(inputs, split, tiny_checkpoint, "--num_processes=2", "--process_id=1", "--batch-size=1"))
    got = _outputs(split)
    assert sorted(got) == sorted(names)
    for k in names:
        assert np.array_equal(got[k], reference[k]), k
    part1 = read_log(multihost.part_path(split / "enhance_log.csv", multihost.Share(1, 2)))
    rerun_ok = [r["file"] for r in part1 if r["status"] == "ok"]
    assert set(left) <= set(rerun_ok) and len(rerun_ok) == len(set(rerun_ok))
    done_before = set(mine) - set(left)
    assert {r["file"] for r in part1 if r["status"] == "skipped"} == done_before  # the rerun did only the rest
    merged = read_log(split / "enhance_log.csv")
    assert len(merged) == len(read_log(multihost.part_path(split / "enhance_log.csv", multihost.Share(0, 2)))) + \
        len(part1)
