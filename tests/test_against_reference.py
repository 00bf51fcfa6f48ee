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


def test_reference_is_asked_for_each_network_and_its_shapes_under_the_isa_caps(harness, monkeypatch, tmp_path):
    seen = {}

    def fake_run(cmd, check=False, stdout=None, env=None, capture_output=False, text=False):
        if cmd[1] == "-c":  # the capability query
            seen["query_env"] = env
            return SimpleNamespace(returncode=0, stdout="AVX2\n")
        seen["cmd"], seen["env"] = cmd, env
        out = Path(cmd[cmd.index("--out") + 1])
        out.write_text('{"nfe": [{"backbone": "ncsnpp28M", "torch": "2.x", "configs": [{"b": 1, "T": 256, '
                       '"median": 6.0}, {"b": 4, "T": 256, "median": 30.0}]}, {"backbone": "ncsnpp", '
                       '"configs": [{"b": 1, "T": 256, "median": 5.0}]}]}')

    monkeypatch.setattr(harness.subprocess, "run", fake_run)
    args = SimpleNamespace(reference_python=sys.executable, harness=tmp_path / "time_reference.py",
                           udiffse=tmp_path / "u", fast=tmp_path / "f", threads=2, reps=3, isa="AVX2")
    ref = harness.time_reference(args, harness.parse_configs("28m:1x256,28m:4x256,65m:1x256"))
    cmd = seen["cmd"]
    assert cmd[cmd.index("--what") + 1] == "nfe28,nfe65"
    assert cmd[cmd.index("--nfe28-configs") + 1] == "1x256,4x256" and cmd[cmd.index("--nfe65-configs") + 1] == "1x256"
    assert ref["times"] == {("28m", 1, 256): 6.0, ("28m", 4, 256): 30.0, ("65m", 1, 256): 5.0}
    assert ref["torch"] == "2.x" and ref["isa"] == "AVX2"
    for env in (seen["env"], seen["query_env"]):  # the timing and the capability query both run capped
        assert env["ATEN_CPU_CAPABILITY"] == "avx2" and env["ONEDNN_MAX_CPU_ISA"] == "AVX2"
    assert "ATEN_CPU_CAPABILITY" not in harness.reference_env("native") or \
        harness.reference_env("native")["ATEN_CPU_CAPABILITY"] == harness.os.environ.get("ATEN_CPU_CAPABILITY")


@pytest.mark.slow  # two small enhancement runs with their compilations, ~30 s
def test_tail_batch_benchmark_runs_both_ways_and_agrees(tmp_path, capsys):
    import json

    import numpy as np
    import soundfile as sf

    from jaxse.diffusion.models import ScoreModel
    from jaxse.diffusion.ncsnpp import NCSNppConfig
    from tests.conftest import save_random_checkpoint

    model = ScoreModel(net=NCSNppConfig(nf=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(),
                                        output_scaling="none"), parameterization="noise")
    ckpt = save_random_checkpoint(model, tmp_path / "prior")
    rng = np.random.default_rng(0)
    (tmp_path / "noisy").mkdir()
    for i, seconds in enumerate((0.6,) * 5):  # one bucket, 5 files: a batch of 4 and one left over
        sf.write(tmp_path / "noisy" / f"f{i}.wav", 0.1 * rng.standard_normal(int(16000 * seconds)).astype(np.float32),
                 16000)
    spec = importlib.util.spec_from_file_location("tail_batches", REPO / "benchmarks" / "tail_batches.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main([str(tmp_path / "noisy"), "--checkpoint", str(ckpt), "--batch-size", "4",
                        "--config", "num_steps=2", "--config", "num_samples=1", "--json", str(tmp_path / "t.json")]) == 0
    out = json.loads((tmp_path / "t.json").read_text())
    padded, tail = out["runs"]
    assert padded["dummy_rows"] == 3 and tail["dummy_rows"] == 0 and padded["rows"] == tail["rows"] == 5
    assert padded["programs"] == 1 and tail["programs"] == 2
    assert out["max_abs_diff"] == 0.0
    assert "| own program (tail batches) | 2 |" in capsys.readouterr().out
