"""The accelerator check cannot rot: its ``--quick`` form (toy sizes) runs here on the CPU, through the script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quick_accelerator_check_measures_every_item(tmp_path):
    out = tmp_path / "check.json"
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_DISABLE_MOST_OPTIMIZATIONS="1", PYTHON=sys.executable)
    env.pop("XLA_FLAGS", None)
    p = subprocess.run(["bash", str(REPO / "benchmarks" / "accelerator_check.sh"), "--quick", "--json", str(out)],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["complete"] and r["quick"] and not r["errors"] and not r["skipped"]
    assert r["device"]["platform"] == "cpu" and r["device"]["memory_gib"] > 0
    got = {(f["network"], f["dtype"], f["rows"], f["frames"]) for f in r["forward"]}
    assert got == {(n, d, rows, 64) for n in ("28m-nf8", "65m-nf8") for d in ("float32", "bfloat16") for rows in (1, 2)}
    for f in r["forward"]:
        assert f["compile_s"] > 0 and f["steady_s"] > 0 and f["memory_gib"] > 0
    assert {(x["method"], x["network"]) for x in r["rtf"]} == {("udiffse+", "28m-nf8"), ("udiffse", "28m-nf8")}
    for x in r["rtf"]:
        assert x["rtf"] > 0 and x["nfe"] == 4 and x["rtf"] == pytest.approx(x["steady_s"] / x["audio_s"])
    assert r["train"]["steps_per_s"] > 0 and r["train"]["batch"] == 4
    assert "forward   28m-nf8  float32 1x64" in p.stdout.replace("forward  28m", "forward   28m")
    assert r["goals"] == []  # the goals name the full-size networks only


def test_budget_skips_what_would_start_after_it(tmp_path, capsys):
    from jaxse.evaluation import accelerator

    check = accelerator.Check(accelerator.make_plan(quick=True), str(tmp_path / "c.json"), budget_s=0.0,
                              log=print)
    check.t0 -= 1.0  # the budget is already spent
    result = check.run()
    assert result["complete"] and not result["forward"] and not result["rtf"] and result["train"] is None
    assert len(result["skipped"]) == 8 + 2 + 1
    assert json.loads((tmp_path / "c.json").read_text())["skipped"] == result["skipped"]
