"""The side-by-side speed harness (benchmarks/against_reference.py): its shape parsing and the reference
invocation it builds (the timing itself is a benchmark, run by hand)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def harness():
    spec = importlib.util.spec_from_file_location("against_reference", REPO / "benchmarks" / "against_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_configs_parse_and_bad_ones_are_refused(harness):
    assert harness.parse_configs("28m:1x256, 28m:4x256,65m:1x512") == [("28m", 1, 256), ("28m", 4, 256),
                                                                         ("65m", 1, 512)]
    for bad in ("12m:1x256", "28m:256", "28m"):
        with pytest.raises(ValueError, match="bad config"):
            harness.parse_configs(bad)


def test_reference_is_asked_for_each_network_and_its_shapes(harness, monkeypatch, tmp_path):
    seen = {}

    def fake_run(cmd, check, stdout):
        seen["cmd"] = cmd
        out = Path(cmd[cmd.index("--out") + 1])
        out.write_text('{"nfe": [{"backbone": "ncsnpp28M", "torch": "2.x", "configs": [{"b": 1, "T": 256, '
                       '"median": 6.0}, {"b": 4, "T": 256, "median": 30.0}]}, {"backbone": "ncsnpp", '
                       '"configs": [{"b": 1, "T": 256, "median": 5.0}]}]}')

    monkeypatch.setattr(harness.subprocess, "run", fake_run)
    args = SimpleNamespace(reference_python=sys.executable, harness=tmp_path / "time_reference.py",
                           udiffse=tmp_path / "u", fast=tmp_path / "f", threads=2, reps=3)
    ref = harness.time_reference(args, harness.parse_configs("28m:1x256,28m:4x256,65m:1x256"))
    cmd = seen["cmd"]
    assert cmd[cmd.index("--what") + 1] == "nfe28,nfe65"
    assert cmd[cmd.index("--nfe28-configs") + 1] == "1x256,4x256" and cmd[cmd.index("--nfe65-configs") + 1] == "1x256"
    assert ref["times"] == {("28m", 1, 256): 6.0, ("28m", 4, 256): 30.0, ("65m", 1, 256): 5.0}
    assert ref["torch"] == "2.x"
