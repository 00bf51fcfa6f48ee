"""The short-lease recipe (``benchmarks/short_lease.py``) and the training loop's wall-clock budget
(``training.max_seconds``): the helpers in-process, and the whole recipe on the CPU with a tiny network and tiny
budgets (slow)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jaxse import training
from jaxse.logging_utils import read_metrics

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_training import synth_data, tiny_config  # noqa: E402,F401  (synth_data is a fixture)

REPO = Path(__file__).resolve().parents[1]


def _recipe():
    spec = importlib.util.spec_from_file_location("short_lease_under_test", REPO / "benchmarks" / "short_lease.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_max_seconds_is_checked_with_the_other_values():
    config = _recipe().load_config(REPO / "configs" / "short_lease.py", [])
    training.check_config_values(config)
    for ok in (0, 0.5, 12):
        config.training.max_seconds = ok
        training.check_config_values(config)
    for bad, shown in ((-1.0, "-1.0"), (float("nan"), "nan"), (float("inf"), "inf")):
        config.training.max_seconds = bad
        with pytest.raises(ValueError, match=rf"^training.max_seconds must be a finite number >= 0 \(0: no limit\), "
                                             rf"got {shown}$"):
            training.check_config_values(config)


@pytest.mark.slow  # ~12 s (issue 27)
def test_the_clock_stops_the_loop_after_a_step_validated_exported_and_saved(synth_data, tmp_path, fast_compile):
    # max_seconds tiny: the first step (its compilation alone) passes it; no interval is due at step 1
    config = tiny_config(synth_data, num_steps=50, log_every=10, eval_every=10, checkpoint_every=10,
                         max_seconds=1e-6, export_dir=str(tmp_path / "best"))
    state = training.train_and_evaluate(config, tmp_path / "run")
    assert int(state.step) == 1
    records = read_metrics(tmp_path / "run")
    assert [r["step"] for r in records if "train/loss" in r] == [1]  # logged,
    assert [r["step"] for r in records if "valid/loss" in r] == [1]  # validated,
    assert (tmp_path / "best" / "checkpoints").is_dir()  # its new best exported,
    with training.checkpoint_manager(tmp_path / "run") as mngr:  # and checkpointed: a rerun resumes there
        assert mngr.latest_step() == 1


def test_overrides_are_parsed_and_a_later_list_wins():
    r = _recipe()
    assert r.parse_override("model.nf=64") == ("model", "nf", "64")
    for bad in ("nf=64", "model.nf", "model.=3", ".nf=3", "a.b.c=1"):
        with pytest.raises(ValueError, match="expected GROUP.FIELD=VALUE"):
            r.parse_override(bad)
    merged = r.merge_overrides(["data.train_dir=/a", "data.valid_dir=/v"], ["model.dtype=float32"],
                               ["data.train_dir=/b", "model.nf=8"])
    assert merged == ["data.valid_dir=/v", "model.dtype=float32", "data.train_dir=/b", "model.nf=8"]
    config = r.load_config(REPO / "configs" / "short_lease.py", ["model.nf=8", "model.ch_mult=(1, 2)",
                                                                 "training.max_seconds=20"])
    assert config.model.nf == 8 and tuple(config.model.ch_mult) == (1, 2) and config.training.max_seconds == 20
    with pytest.raises(ValueError, match="the config has no field model.nosuch"):
        r.load_config(REPO / "configs" / "short_lease.py", ["model.nosuch=1"])


def test_dtype_choice_follows_the_forward_timings():
    r = _recipe()
    fwd = lambda f32, b16: [{"dtype": "float32", "steady_s": f32}, {"dtype": "bfloat16", "steady_s": b16}]  # noqa: E731
    assert r.choose_dtype(fwd(1.0, 0.5), "bfloat16")[0] == "bfloat16"
    assert r.choose_dtype(fwd(1.0, 0.8), "bfloat16")[0] == "bfloat16"
    assert r.choose_dtype(fwd(1.0, 0.9), "bfloat16")[0] == "float32"  # on a CPU bfloat16 is emulated: slower
    dtype, why = r.choose_dtype(fwd(1.0, None), "bfloat16")
    assert dtype == "bfloat16" and "no forward timing" in why


def test_enhancement_summary_pairs_the_two_priors(tmp_path):
    r = _recipe()
    new = tmp_path / "prior"
    row = dict(si_sdr_gain_sem=0.1, gain_by_snr={}, estoi=0.6, estoi_gain_sem=0.01, nfe=30, compile_s=1.0, rtf=0.1)
    report = {"num_mixtures": 3, "audio_seconds": 12.0, "input_si_sdr": 0.0, "input_estoi": 0.5, "results": [
        {"checkpoint": str(r.SHIPPED_PRIOR), "si_sdr": 1.0, "si_sdr_gain": 1.0, "estoi_gain": 0.01,
         "per_file": [1.0, 2.0, 0.0], **row},
        {"checkpoint": str(new), "si_sdr": 2.0, "si_sdr_gain": 2.0, "estoi_gain": 0.02, "per_file": [2.0, 2.5, 1.5],
         **row}]}
    s = r.enhancement_summary(report, r.SHIPPED_PRIOR, new, "method=udiffse+")
    assert s["shipped"]["si_sdr_gain"] == 1.0 and s["new"]["si_sdr_gain"] == 2.0 and s["mixtures"] == 3
    assert s["paired_si_sdr_diff"]["n"] == 3 and s["paired_si_sdr_diff"]["mean"] == pytest.approx(1.0)
    assert s["new_beats_shipped"] is True
    only = r.enhancement_summary({**report, "results": report["results"][:1]}, r.SHIPPED_PRIOR, new, "x")
    assert only["new"] is None and "paired_si_sdr_diff" not in only


def test_bad_arguments_are_one_line_and_write_nothing(tmp_path, capsys):
    r = _recipe()
    out, work = tmp_path / "o.json", tmp_path / "w"
    assert r.main(["--data", str(tmp_path / "none"), "--json", str(out), "--workdir", str(work)]) == 2
    assert capsys.readouterr().err.strip().endswith("no train/ folder")
    for sub in ("train", "valid", "noise/train"):
        (tmp_path / "d" / sub).mkdir(parents=True)
    assert r.main(["--data", str(tmp_path / "d"), "--json", str(out), "--workdir", str(work),
                   "--set", "model.nosuch=1"]) == 2
    assert capsys.readouterr().err.strip() == ("short_lease.py: error: --set 'model.nosuch=1': the config has no "
                                               "field model.nosuch")
    assert r.main(["--data", str(tmp_path / "d"), "--json", str(out), "--workdir", str(work), "--train-s", "30"]) == 2
    assert "--train-margin-s must be in [0, --train-s), got 55.0" in capsys.readouterr().err
    assert not out.exists() and not work.exists()


def test_a_phase_that_fails_or_runs_out_of_time_is_recorded_and_the_next_runs(tmp_path):
    r = _recipe()
    for sub in ("train", "valid", "noise/train"):
        (tmp_path / "d" / sub).mkdir(parents=True)
    args = argparse.Namespace(data=tmp_path / "d", workdir=tmp_path / "w", json=tmp_path / "o.json",
                              config=REPO / "configs" / "short_lease.py", overrides=[], dtype="auto", check_s=5.0,
                              check_margin_s=1.0, train_s=5.0, train_margin_s=1.0, enhance_s=5.0, eval_every=None,
                              mix_files=2, setting="method=udiffse+", setup_s=None)
    recipe = r.Recipe(args)
    recipe.workdir.mkdir()
    ph = recipe.phase("check", [sys.executable, "-c", "print('boom'); raise SystemExit(3)"], 30)
    assert ph["status"] == "failed" and ph["rc"] == 3 and "boom" in ph["error"]
    ph = recipe.phase("train", [sys.executable, "-c", "import time; print('slow', flush=True); time.sleep(60)"], 2)
    assert ph["status"] == "timeout" and ph["seconds"] < 20 and "slow" in ph["error"]
    assert "slow" in Path(ph["log"]).read_text()

    ran = []

    def broken():
        raise RuntimeError("no device")

    recipe.check, recipe.train, recipe.enhance = broken, lambda: ran.append("train"), lambda: ran.append("enhance")
    result = recipe.run()
    assert ran == ["train", "enhance"] and result["complete"]
    assert result["phases"]["check"]["status"] == "failed"
    assert result["phases"]["check"]["error"] == "RuntimeError: no device"
    assert json.loads(args.json.read_text())["phases"]["check"]["error"] == "RuntimeError: no device"


def _tiny_data(data_dir: Path, root: Path) -> Path:
    """A small tree with the layout the recipe reads (links to the shared data): train/, valid/, noise/train/."""
    for sub, n in (("train", 8), ("valid", 4), ("noise/train", 2)):
        (root / sub).mkdir(parents=True)
        for f in sorted((data_dir / sub).glob("*.*"))[:n]:
            (root / sub / f.name).symlink_to(f.resolve())
    return root


@pytest.mark.slow
def test_the_recipe_runs_every_phase_within_tiny_budgets(tmp_path, data_dir):
    data = _tiny_data(data_dir, tmp_path / "data")
    out, work = tmp_path / "lease.json", tmp_path / "work"
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_DISABLE_MOST_OPTIMIZATIONS="1")
    env.pop("XLA_FLAGS", None)
    tiny = ["model.nf=8", "data.crop_frames=32", "training.batch_size=2", "training.eval_batch_size=2",
            "training.num_valid=4", "training.log_every=2"]
    cmd = [sys.executable, str(REPO / "benchmarks" / "short_lease.py"), "--data", str(data), "--workdir", str(work),
           "--json", str(out), "--config", str(REPO / "configs" / "cpu_small.py"),
           *[x for o in tiny for x in ("--set", o)], "--check-s", "120", "--check-margin-s", "20",
           "--train-s", "100", "--train-margin-s", "70", "--enhance-s", "150", "--eval-every", "4",
           "--mix-files", "2", "--setting", "method=udiffse+,num_samples=1,num_steps=2,chunk_frames=64"]
    p = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["schema"] == "jaxse.short_lease/1" and r["complete"]
    assert {k: v["status"] for k, v in r["phases"].items()} == {"check": "ok", "train": "ok", "enhance": "ok"}
    for name, ph in r["phases"].items():
        assert 0 < ph["seconds"] <= ph["budget_s"] + 20, (name, ph)
    assert r["device"]["platform"] == "cpu" and r["environment"]["jax"]
    # the check: the config's forward in both dtypes at the training batch and crop, then its step rate
    assert {(f["dtype"], f["rows"], f["frames"]) for f in r["check"]["forward"]} == {
        ("float32", 2, 32), ("bfloat16", 2, 32)}
    assert r["check"]["dtype"] in ("float32", "bfloat16") and r["check"]["train"]["steps_per_s"] > 0
    assert r["check"]["train"]["dtype"] == r["check"]["dtype"]
    # the training: stopped by the clock (training.max_seconds = 100 - 70), validated and exported at the stop
    cfg = r["config"]["values"]
    assert cfg["training"]["max_seconds"] == 30 and cfg["model"]["nf"] == 8 and cfg["training"]["eval_every"] == 4
    assert cfg["model"]["dtype"] == r["check"]["dtype"] and cfg["training"]["export_dir"] == str(work / "prior")
    t = r["train"]
    assert 4 <= t["steps_done"] < cfg["training"]["num_steps"]
    assert t["valid_loss"][-1][0] == t["steps_done"] and t["train_loss"][-1][0] == t["steps_done"]
    assert t["export_exists"] and (work / "prior" / "checkpoints").is_dir() and t["best"]["valid_loss"] > 0
    assert t["steps_per_s_median"] > 0
    assert (work / "train" / "checkpoints" / str(t["steps_done"])).is_dir()  # saved at the stop
    train_log = Path(r["phases"]["train"]["log"]).read_text()
    assert f"stopped at step {t['steps_done']}: training.max_seconds=30 spent" in train_log
    # the enhancement: both priors on the same 2 mixtures, paired
    e = r["enhance"]
    assert e["mixtures"] == 2 and e["shipped"]["nfe"] == 4 and e["new"]["nfe"] == 4
    assert e["paired_si_sdr_diff"]["n"] == 2 and isinstance(e["new_beats_shipped"], bool)
    assert r["phases"]["enhance"]["mix"]["status"] == r["phases"]["enhance"]["score"]["status"] == "ok"
    assert r["wall_s"] <= sum(r["budgets_s"].values()) + 30
