"""train.py's usage errors (one line, exit code 2, nothing written), the one validation of training configs
(:func:`jaxse.training.check_config_values`, :func:`jaxse.training.check_workdir`), the ``JAXSE_*``
environment variables and the coordinator wait (:func:`jaxse.parallel.initialize_distributed`)."""

from __future__ import annotations

import glob
import importlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # for `configs`

from configs import cpu_small, rvae, sgmse_cpu  # noqa: E402
from jaxse import multihost, parallel, training  # noqa: E402

CONFIG_MODULES = sorted(Path(p).stem for p in glob.glob(str(REPO / "configs" / "*.py")) if not p.endswith("__init__.py"))


# ------------------------------------------------------------------------------ config validation (fast)


@pytest.mark.parametrize("name", CONFIG_MODULES)
def test_every_shipped_config_passes_the_validation(name):
    training.check_config_values(importlib.import_module(f"configs.{name}").get_config())


@pytest.mark.parametrize("field, value, message", [
    ("training.batch_size", 0, "training.batch_size must be an integer >= 1, got 0"),
    ("training.batch_size", -4, "training.batch_size must be an integer >= 1, got -4"),
    ("training.eval_batch_size", 0, "training.eval_batch_size must be an integer >= 1, got 0"),
    ("training.lr", -1.0, "training.lr must be a finite number > 0, got -1.0"),
    ("training.lr", 0.0, "training.lr must be a finite number > 0, got 0.0"),
    ("training.lr", float("nan"), "training.lr must be a finite number > 0, got nan"),
    ("training.lr", float("inf"), "training.lr must be a finite number > 0, got inf"),
    ("training.b1", 1.0, "training.b1 must be a finite number in [0, 1), got 1.0"),
    ("training.b2", -0.1, "training.b2 must be a finite number in [0, 1), got -0.1"),
    ("training.eps", 0.0, "training.eps must be a finite number > 0, got 0.0"),
    ("training.ema_decay", 1.5, "training.ema_decay must be a finite number in [0, 1], got 1.5"),
    ("training.num_steps", -1, "training.num_steps must be an integer >= 1 (or 0 with training.num_epochs >= 1"),
    ("training.num_steps", 0, "training.num_steps must be an integer >= 1 (or 0 with training.num_epochs >= 1"),
    ("training.log_every", 0, "training.log_every must be an integer >= 1, got 0"),
    ("training.eval_every", 0, "training.eval_every must be an integer >= 1, got 0"),
    ("training.checkpoint_every", -5, "training.checkpoint_every must be an integer >= 1, got -5"),
    ("training.keep_checkpoints", 0, "training.keep_checkpoints must be an integer >= 1, got 0"),
    ("training.sample_every", -1, "training.sample_every must be an integer >= 0 (0: no samples), got -1"),
    ("training.num_valid", -1, "training.num_valid must be an integer >= 0, got -1"),
    ("training.warmup_steps", -1, "training.warmup_steps must be an integer >= 0 (0: none), got -1"),
    ("training.max_seconds", -1.0, "training.max_seconds must be a finite number >= 0 (0: no limit), got -1.0"),
    ("training.max_seconds", float("inf"), "training.max_seconds must be a finite number >= 0 (0: no limit), got inf"),
    ("data.crop_frames", 0, "data.crop_frames must be an integer >= 1, got 0"),
    ("data.valid_frames", -8, "data.valid_frames must be an integer >= 0 (0: data.crop_frames), got -8"),
    ("data.sample_rate", 0, "data.sample_rate must be an integer > 0, got 0"),
])
def test_values_that_cannot_train_are_one_line_naming_the_field(field, value, message):
    group, name = field.split(".")
    for module in (cpu_small, sgmse_cpu):  # the same rules for every family
        config = module.get_config()
        config[group][name] = value
        with pytest.raises(ValueError) as info:
            training.check_config_values(config)
        assert str(info.value).startswith(message) and "\n" not in str(info.value), str(info.value)


def test_run_length_in_epochs_and_its_own_rules():
    config = rvae.get_config()  # num_steps 0: the run length is num_epochs
    training.check_config_values(config)
    config.training.num_epochs = 0
    with pytest.raises(ValueError, match=r"training.num_steps must be an integer >= 1 \(or 0 with training.num_ep"):
        training.check_config_values(config)
    config = rvae.get_config()
    config.training.early_stop_patience_epochs = -1
    with pytest.raises(ValueError, match=r"training.early_stop_patience_epochs must be an integer >= 0 \(0: off\)"):
        training.check_config_values(config)
    config = rvae.get_config()
    config.training.ema_decay = 0.0  # no EMA: 0 is allowed
    training.check_config_values(config)


def test_bad_values_are_a_setup_error_before_the_workdir_is_made(tmp_path):
    config = cpu_small.get_config()
    config.training.batch_size = 0  # was a ZeroDivisionError after the workdir was created
    workdir = tmp_path / "run"
    with pytest.raises(training.SetupError, match="training.batch_size must be an integer >= 1, got 0"):
        training.train_and_evaluate(config, workdir)
    assert not workdir.exists()


def test_workdir_must_be_a_directory_or_creatable(tmp_path):
    training.check_workdir(tmp_path)  # exists
    training.check_workdir(tmp_path / "new" / "deeper")  # can be made
    assert not (tmp_path / "new").exists()  # and nothing is made
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(ValueError, match=r"--workdir .*afile: not a directory \(a file is there\)"):
        training.check_workdir(afile)
    with pytest.raises(ValueError, match=r"cannot be created under .*afile \(a file, not a directory\)"):
        training.check_workdir(afile / "sub")
    with pytest.raises(training.SetupError, match="not a directory"):
        training.train_and_evaluate(cpu_small.get_config(), afile)


# ------------------------------------------------------------------------ JAXSE_* variables, process ids


@pytest.mark.parametrize("env, message", [
    ({"JAXSE_PROCESS_ID": "abc"}, "JAXSE_PROCESS_ID must be an integer >= 0, got 'abc'"),
    ({"JAXSE_PROCESS_ID": "-1"}, "JAXSE_PROCESS_ID must be an integer >= 0, got '-1'"),
    ({"JAXSE_NUM_PROCESSES": "two"}, "JAXSE_NUM_PROCESSES must be an integer >= 1, got 'two'"),
    ({"JAXSE_NUM_PROCESSES": "0"}, "JAXSE_NUM_PROCESSES must be an integer >= 1, got '0'"),
    ({"JAXSE_COORDINATOR_TIMEOUT": "soon"}, "JAXSE_COORDINATOR_TIMEOUT must be a finite number of seconds > 0"),
    ({"JAXSE_COORDINATOR_TIMEOUT": "0"}, "JAXSE_COORDINATOR_TIMEOUT must be a finite number of seconds > 0"),
])
def test_bad_environment_variables_are_named(env, message):
    with pytest.raises(ValueError) as info:
        parallel.distributed_settings(environ=env)
    assert str(info.value).startswith(message)


def test_flags_win_over_the_environment_and_the_timeout_has_a_default():
    env = {"JAXSE_COORDINATOR_ADDRESS": "hostA:1234", "JAXSE_NUM_PROCESSES": "2", "JAXSE_PROCESS_ID": "abc",
           "JAXSE_COORDINATOR_TIMEOUT": "12.5"}
    got = parallel.distributed_settings(process_id=1, environ=env)  # the bad variable is not needed: no error
    assert got == {"coordinator_address": "hostA:1234", "num_processes": 2, "process_id": 1,
                   "coordinator_timeout": 12.5}
    assert parallel.distributed_settings(environ={}) == {
        "coordinator_address": None, "num_processes": None, "process_id": None,
        "coordinator_timeout": parallel.DEFAULT_COORDINATOR_TIMEOUT}
    assert parallel.distributed_settings(environ={"JAXSE_NUM_PROCESSES": ""})["num_processes"] is None
    with pytest.raises(ValueError, match=r"--coordinator_timeout must be a finite number of seconds > 0, got -1.0"):
        parallel.distributed_settings(coordinator_timeout=-1.0, environ={})


@pytest.mark.parametrize("kwargs, message", [
    (dict(process_id=-1), r"--process_id must be in \[0, 1\) \(no --num_processes: a single process\), got -1"),
    (dict(num_processes=2, process_id=-1), r"--process_id must be in \[0, 2\) \(--num_processes 2\), got -1"),
    (dict(num_processes=0), r"--num_processes must be >= 1, got 0"),
    (dict(num_processes=2), r"--num_processes > 1 needs a --coordinator_address"),
    (dict(coordinator_address="hostA", num_processes=2, process_id=0), r"--coordinator_address must be HOST:PORT"),
    (dict(coordinator_address="hostA:99999", num_processes=2, process_id=0), r"the port in 1..65535"),
    (dict(coordinator_address="hostA:1234", num_processes=2), r"needs --num_processes and --process_id"),
    (dict(coordinator_address="hostA:1234", num_processes=2, process_id=2), r"--process_id must be in \[0, 2\)"),
    (dict(coordinator_address="hostA:1234", num_processes=2, process_id=1, coordinator_timeout=0.0),
     r"--coordinator_timeout must be a finite number of seconds > 0"),
])
def test_initialize_distributed_refuses_bad_values_before_joining(kwargs, message):
    with pytest.raises(ValueError, match=message):
        parallel.initialize_distributed(**kwargs)


def test_single_process_needs_no_joining():
    assert parallel.initialize_distributed() is False
    assert parallel.initialize_distributed(num_processes=1, process_id=0) is False
    assert parallel.initialize_distributed("hostA:1234", num_processes=1, process_id=0) is False
    assert multihost.resolve_share(process_id=0) == multihost.Share(0, 1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_timeout_line_says_whether_anything_answers(monkeypatch, capsys):
    exits = []
    monkeypatch.setattr(os, "_exit", exits.append)
    port = _free_port()  # nothing listens there
    parallel._coordinator_timed_out(f"127.0.0.1:{port}", 2, 3.0, "train.py")
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(
        "train.py: error: no multi-process run formed within 3 s (--coordinator_timeout): nothing answers at "
        f"127.0.0.1:{port}"), err
    with socket.socket() as listener:  # something answers: the other processes did not all join
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        address = f"127.0.0.1:{listener.getsockname()[1]}"
        parallel._coordinator_timed_out(address, 2, 3.0, "enhance.py")
    err = capsys.readouterr().err
    assert f"the coordinator at {address} answers, but not all 2 processes joined" in err and err.count("\n") == 1
    assert exits == [2, 2]


# -------------------------------------------------------------------------------- train.py (subprocesses)


def _train_py(args, cwd, env=None, timeout=120):
    full_env = dict(os.environ, JAX_PLATFORMS="cpu", **(env or {}))
    for var in parallel.DISTRIBUTED_ENV.values():
        if var not in (env or {}):
            full_env.pop(var, None)
    return subprocess.run([sys.executable, str(REPO / "train.py"), *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def _assert_usage_error(proc, *words):
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("train.py: error: "), proc.stderr[-3000:]
    for w in words:
        assert w in lines[0], lines[0]


CONFIG = str(REPO / "configs" / "cpu_small.py")


@pytest.mark.slow  # ~15 subprocesses, 0.2-3 s each
@pytest.mark.parametrize("args, env, words", [
    (["--config.training.batch_size=abc"], None, ["--config.training.batch_size=abc", "invalid literal for int()"]),
    (["--config.training.batch_size=0"], None, ["training.batch_size must be an integer >= 1, got 0"]),
    (["--config.training.lr=-1"], None, ["training.lr must be a finite number > 0, got -1.0"]),
    (["--config.training.lr=nan"], None, ["training.lr must be a finite number > 0, got nan"]),
    (["--config.training.eval_every=0"], None, ["training.eval_every must be an integer >= 1, got 0"]),
    (["--config.data.crop_frames=0"], None, ["data.crop_frames must be an integer >= 1, got 0"]),
    (["--config.training.nosuch=1"], None, ["unknown --config.training.nosuch: training has no field 'nosuch'",
                                            "batch_size"]),
    (["--config.nosuch.x=1"], None, ["unknown --config.nosuch.x: the config has no field 'nosuch'"]),
    (["--nosuchflag"], None, ["nosuchflag"]),
    (["extra"], None, ["unexpected arguments: extra"]),
    (["--process_id=-1"], None, ["--process_id must be in [0, 1)"]),
    ([], {"JAXSE_PROCESS_ID": "abc"}, ["JAXSE_PROCESS_ID must be an integer >= 0, got 'abc'"]),
    ([], {"JAXSE_NUM_PROCESSES": "x"}, ["JAXSE_NUM_PROCESSES must be an integer >= 1, got 'x'"]),
    ([], {"JAXSE_COORDINATOR_ADDRESS": "127.0.0.1:1"}, ["needs --num_processes and --process_id"]),
])
def test_train_py_usage_errors_are_one_line_exit_2_nothing_written(tmp_path, args, env, words):
    workdir = tmp_path / "run"
    proc = _train_py(["--config", CONFIG, "--workdir", str(workdir), *args], cwd=tmp_path, env=env)
    _assert_usage_error(proc, *words)
    assert not workdir.exists() and [p.name for p in tmp_path.iterdir()] == []


@pytest.mark.slow
def test_train_py_missing_config_and_workdir(tmp_path):
    workdir = tmp_path / "run"
    _assert_usage_error(_train_py(["--config", "configs/nosuch.py", "--workdir", str(workdir)], cwd=tmp_path),
                        "--config configs/nosuch.py: no such file")
    broken = tmp_path / "broken.py"
    broken.write_text("def get_config(:\n")
    _assert_usage_error(_train_py(["--config", str(broken), "--workdir", str(workdir)], cwd=tmp_path),
                        "cannot load it (SyntaxError")
    _assert_usage_error(_train_py(["--config", CONFIG], cwd=tmp_path), "--workdir DIR is required")
    _assert_usage_error(_train_py(["--workdir", str(workdir)], cwd=tmp_path), "--config FILE is required")
    afile = tmp_path / "afile"
    afile.write_text("x")
    _assert_usage_error(_train_py(["--config", CONFIG, "--workdir", str(afile)], cwd=tmp_path),
                        "afile: not a directory")
    _assert_usage_error(_train_py(["--config", CONFIG, "--workdir", str(afile / "run")], cwd=tmp_path),
                        "a file, not a directory")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "broken.py"]


@pytest.mark.slow  # two processes that each wait 2 s for a run that never forms
def test_a_missing_coordinator_is_announced_and_times_out(tmp_path):
    port = _free_port()
    for proc_id, env in ((1, None), (0, {"JAXSE_COORDINATOR_TIMEOUT": "2"})):
        args = ["--config", CONFIG, "--workdir", str(tmp_path / "run"), f"--coordinator_address=127.0.0.1:{port}",
                "--num_processes=2", f"--process_id={proc_id}"] + (["--coordinator_timeout=2"] if env is None else [])
        t0 = time.monotonic()
        proc = _train_py(args, cwd=tmp_path, env=env, timeout=60)
        assert time.monotonic() - t0 < 40
        lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("train.py:")]
        assert proc.returncode == 2, proc.stderr[-3000:]
        assert lines[0] == (f"train.py: waiting for the coordinator at 127.0.0.1:{port} (process {proc_id} of 2; "
                            "up to 2 s, --coordinator_timeout)"), proc.stderr
        assert lines[1].startswith("train.py: error: no multi-process run formed within 2 s (--coordinator_timeout)")
        assert ("nothing answers" in lines[1]) == (proc_id == 1), lines[1]  # process 0 hosts the coordinator
        assert "Traceback" not in proc.stderr and "Check failure" not in proc.stderr
        assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_enhance_py_environment_and_coordinator_errors(tmp_path):
    import numpy as np
    import soundfile as sf

    (tmp_path / "in").mkdir()
    sf.write(tmp_path / "in" / "a.wav", np.zeros(4000, np.float32), 16000)
    base = [sys.executable, str(REPO / "enhance.py"), "in", "-o", "out"]

    def run(extra, env):
        full_env = {k: v for k, v in os.environ.items() if k not in parallel.DISTRIBUTED_ENV.values()}
        return subprocess.run(base + extra, cwd=tmp_path, env=dict(full_env, JAX_PLATFORMS="cpu", **env),
                              capture_output=True, text=True, timeout=120)

    for env, words in (({"JAXSE_PROCESS_ID": "abc"}, "JAXSE_PROCESS_ID must be an integer >= 0, got 'abc'"),
                       ({"JAXSE_NUM_PROCESSES": "2.5"}, "JAXSE_NUM_PROCESSES must be an integer >= 1, got '2.5'"),
                       ({"JAXSE_COORDINATOR_TIMEOUT": "x"},
                        "JAXSE_COORDINATOR_TIMEOUT must be a finite number of seconds > 0, got 'x'")):
        proc = run([], env)
        assert proc.returncode == 2 and proc.stderr.splitlines() == [f"enhance.py: error: {words}"], proc.stderr
    proc = run(["--process_id", "-1"], {})
    assert proc.returncode == 2 and proc.stderr.splitlines() == [
        "enhance.py: error: --process_id must be in [0, 1) (no --num_processes: a single process), got -1"]
    port = _free_port()
    proc = run([f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", "--process_id=1",
                "--coordinator_timeout=2"], {})
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("enhance.py:")]
    assert proc.returncode == 2 and lines[0].startswith("enhance.py: waiting for the coordinator at "), proc.stderr
    assert lines[1].startswith("enhance.py: error: no multi-process run formed within 2 s"), proc.stderr
    assert not (tmp_path / "out").exists()
