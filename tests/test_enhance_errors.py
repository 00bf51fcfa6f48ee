"""enhance.py's error exits: usage errors are one ``enhance.py: error:`` line on stderr with exit code 2, before any
model loads, and leave nothing behind; a 0-byte input is logged as an empty file; the summary never says
"RTF nan"; an output peak far above the input's is written but flagged.

The CLI mostly runs in-process (its own flag parser, then its ``main``) with the model loading replaced by a
failure, so a case costs milliseconds; two cases run ``python enhance.py`` for real (the ``app.run`` path).
``enhance_files`` runs with a stand-in enhancer (a fixed gain, no model, nothing compiled).
"""

from __future__ import annotations

import importlib.util
import io
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from absl import flags
from absl import logging as absl_logging

from jaxse import enhance as E
from jaxse.audio import AudioError, read_audio

REPO = Path(__file__).resolve().parents[1]
SR = 16000


# ------------------------------------------------------------------------------------------------ the CLI


@pytest.fixture(scope="module")
def cli():
    """enhance.py imported as a module (its flags join absl's global FLAGS; removed again afterwards)."""
    name = "_enhance_cli_under_test"
    before, was_parsed = set(flags.FLAGS), flags.FLAGS.is_parsed()
    verbosity = absl_logging.get_verbosity()
    spec = importlib.util.spec_from_file_location(name, REPO / "enhance.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(name, None)
        for flag in set(flags.FLAGS) - before:
            try:
                delattr(flags.FLAGS, flag)
            except AttributeError:  # its other name (-o / --output) went first
                pass
        if not was_parsed:
            flags.FLAGS.unparse_flags()
        absl_logging.set_verbosity(verbosity)


@pytest.fixture
def run(cli, monkeypatch, capsys):
    """``run(*args) -> (exit code, stderr)`` of ``enhance.py ARGS``; loading a model fails the test."""

    def no_model(*a, **k):
        raise AssertionError("a model was loaded before the usage error")

    monkeypatch.setattr(E, "load_backend", no_model)

    def run_cli(*args):
        argv = ["enhance.py", *map(str, args)]
        monkeypatch.setattr(sys, "argv", argv)
        flags.FLAGS.unparse_flags()
        capsys.readouterr()
        try:
            code = cli.main(cli._parse_flags(argv))
        except SystemExit as exc:
            code = exc.code
        finally:
            flags.FLAGS.unparse_flags()
        return code, capsys.readouterr().err

    return run_cli


def _tree(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def _usage_error(code, err, *words):
    assert code == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("enhance.py: error: "), err
    for w in words:
        assert w in lines[0], (w, lines[0])


@pytest.fixture
def workdir(tmp_path):
    """An input folder with one wav and a regular file ``afile`` beside it."""
    (tmp_path / "in").mkdir()
    sf.write(tmp_path / "in" / "a.wav", 0.1 * np.ones(4000, np.float32), SR)
    (tmp_path / "afile").write_text("not a folder\n")
    return tmp_path


def test_output_under_a_regular_file(run, workdir):
    before = _tree(workdir)
    _usage_error(*run(workdir / "in", "-o", workdir / "afile" / "out"), "afile", "is not a directory")
    assert _tree(workdir) == before


def test_output_is_a_regular_file(run, workdir):
    before = _tree(workdir)
    _usage_error(*run(workdir / "in", "-o", workdir / "afile"), "is not a directory")
    assert _tree(workdir) == before


def _read_only(monkeypatch, directory: Path) -> None:
    """Make ``directory`` read-only; as root (who may write anyway) ``os.access`` is made to say so."""
    directory.chmod(0o555)
    if os.access(directory, os.W_OK):
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, *a, **k: (
            False if Path(p).resolve() == directory.resolve() and mode & os.W_OK else real(p, mode, *a, **k)))


def test_read_only_output_or_log_location(run, workdir, monkeypatch):
    ro = workdir / "ro"
    ro.mkdir()
    _read_only(monkeypatch, ro)
    try:
        before = _tree(workdir)
        _usage_error(*run(workdir / "in", "-o", ro / "out"), "cannot be created", "read-only")
        _usage_error(*run(workdir / "in", "-o", ro), "output directory", "not writable")
        _usage_error(*run(workdir / "in", "-o", workdir / "out", "--log", ro / "log.csv"), "log file", "read-only")
        _usage_error(*run(workdir / "in", "-o", workdir / "out", "--log", workdir / "afile" / "x.csv"), "log file",
                     "is not a directory")
        _usage_error(*run(workdir / "in", "-o", workdir / "out", "--log", workdir / "in"), "log file",
                     "is a directory")
        assert _tree(workdir) == before
    finally:
        ro.chmod(0o755)


def test_unknown_method_names_the_methods(run, workdir):
    code, err = run(workdir / "in", "-o", workdir / "out", "--method", "nosuch")
    _usage_error(code, err, "--method=nosuch", *E.METHODS)
    assert not (workdir / "out").exists()


def _real_cli(*args):
    """``python enhance.py ARGS`` in a subprocess: ``(exit code, stderr)``."""
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    p = subprocess.run([sys.executable, str(REPO / "enhance.py"), *map(str, args)], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=120)
    return p.returncode, p.stderr


def test_malformed_config_value(workdir):
    # (a subprocess: the --config.FIELD flags exist only for the FIELDs on the command line enhance.py starts with)
    _usage_error(*_real_cli(workdir / "in", "-o", workdir / "out", "--config.lmbd=abc"), "--config.lmbd=abc", "'abc'")
    assert not (workdir / "out").exists()


@pytest.mark.parametrize("args, words", [
    (("--batch-size", "0"), ("--batch-size=0", "positive")),
    (("--batch-size", "-1"), ("--batch-size=-1", "positive")),
    (("--batch-size", "two"), ("--batch-size=two",)),
    (("--chunk-frames", "-64"), ("--chunk-frames=-64", ">= 64")),
    (("--chunk-frames", "0"), ("--chunk-frames=0", ">= 64")),
    (("--chunk-frames", "100"), ("--chunk-frames=100", "multiple of 64")),
    (("--no-such-flag",), ("no-such-flag",)),
])
def test_bad_integer_flags(run, workdir, args, words):
    _usage_error(*run(workdir / "in", "-o", workdir / "out", *args), *words)
    assert not (workdir / "out").exists()


def test_output_would_overwrite_the_input(run, workdir):
    before = _tree(workdir)
    _usage_error(*run(workdir / "in", "-o", workdir / "in"), "is the input folder", "overwrite")
    _usage_error(*run(workdir / "in", "-o", workdir), "contains the input folder")  # in/a.wav -> a.wav beside in/
    _usage_error(*run(workdir / "in" / "a.wav", "-o", workdir / "in"), "would overwrite")
    assert _tree(workdir) == before


def test_missing_arguments_are_one_line(run, workdir):
    _usage_error(*run(workdir / "in"), "-o OUTDIR is required")
    _usage_error(*run("-o", workdir / "out"), "exactly one INPUT")
    _usage_error(*run(workdir / "missing", "-o", workdir / "out"), "no such file or directory")
    assert not (workdir / "out").exists()


def test_output_inside_the_input_is_fine(tmp_path):
    (tmp_path / "in").mkdir()
    E.check_output_paths(tmp_path / "in", tmp_path / "in" / "enhanced")  # left out of the inputs: no error
    E.check_output_paths(tmp_path / "in", tmp_path / "new" / "deeper", tmp_path / "logs" / "log.csv")
    assert _tree(tmp_path) == ["in"]


def test_real_command_line(workdir):
    """The same errors through ``python enhance.py`` (absl's app.run): exit code 2, one line, nothing created."""
    before = _tree(workdir)
    _usage_error(*_real_cli(workdir / "in", "-o", workdir / "out", "--method", "nosuch"), "udiffse+")
    _usage_error(*_real_cli(workdir / "in", "-o", workdir / "afile" / "out"), "not a directory")
    assert _tree(workdir) == before


# ------------------------------------------------------------------------------------- files, log, summary


class GainEnhancer:
    """What enhance_files uses of an Enhancer; "enhances" by a fixed gain, at once (no model)."""

    def __init__(self, gain: float = 1.0):
        self.gain = gain
        self.spec = types.SimpleNamespace(sample_rate=SR)

    def rows_for(self, length: int) -> int:
        return 1

    def fit_batch_size(self, total_rows: int) -> int:
        return 1

    def submit(self, uid, wave, payload=None):
        return [types.SimpleNamespace(uid=uid, wave=self.gain * np.asarray(wave), seconds=0.01, payload=payload,
                                      error=None)]

    def flush(self):
        return []

    def stats(self) -> dict:
        return {"compile_count": 0, "compile_seconds": {}, "batch_size": 1, "devices": 1}


def _enhance(input_path, out, gain=1.0):
    stream = io.StringIO()
    summary = E.enhance_files(input_path, out, GainEnhancer(gain), stream=stream, progress=False)
    return summary, {r["file"]: r for r in E.read_log(out / E.LOG_NAME)}, stream.getvalue()


def test_empty_file_is_logged_as_empty(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "empty.wav").write_bytes(b"")
    with pytest.raises(AudioError, match="empty file"):
        read_audio(tmp_path / "in" / "empty.wav")
    summary, rows, printed = _enhance(tmp_path / "in", tmp_path / "out")
    assert rows["empty.wav"]["status"] == "error" and rows["empty.wav"]["message"].startswith("empty file")
    assert "Format not recognised" not in rows["empty.wav"]["message"]
    assert "FAILED empty.wav: empty file" in printed
    line = summary.line(tmp_path / "out" / E.LOG_NAME)
    assert "RTF n/a" in line and "nan" not in line and summary.exit_code == 1


def test_summary_never_says_rtf_nan(tmp_path):
    assert "RTF n/a" in E.RunSummary().line("log.csv") and "nan" not in E.RunSummary().line("log.csv")
    (tmp_path / "in").mkdir()
    sf.write(tmp_path / "in" / "a.wav", 0.1 * np.ones(8000, np.float32), SR)
    summary, rows, _ = _enhance(tmp_path / "in", tmp_path / "out")
    line = summary.line("log.csv")
    assert rows["a.wav"]["status"] == "ok" and re.search(r"RTF \d+\.\d{3}\)", line) and "nan" not in line, line
    summary, rows, _ = _enhance(tmp_path / "in", tmp_path / "out")  # all skipped: no audio enhanced
    line = summary.line("log.csv")
    assert summary.skipped == 1 and "RTF n/a" in line and "nan" not in line, line


def test_peak_warning_threshold():
    assert E.PEAK_RATIO_LIMIT == 4.0 and E.PEAK_FLOOR == 1e-3
    assert E.peak_warning(0.9, 0.45) is None
    assert E.peak_warning(4.0 * 0.45, 0.45) is None  # at the limit: plausible
    message = E.peak_warning(23.1, 0.45)
    assert message == ("output peak 23.1 is 51x the input peak 0.45: clipped; the sampler settings may be too "
                       "coarse"), message
    assert "written unclipped" in E.peak_warning(9103.0, 0.45, clipped=False)
    assert E.peak_warning(0.003, 1e-5) is None  # a near-silent input: judged against the floor (1e-3)
    assert "400x" in E.peak_warning(0.004001, 1e-5)
    assert E.peak_warning(0.0, 0.0) is None


def test_implausible_output_peak_is_written_clipped_and_flagged(tmp_path):
    (tmp_path / "in").mkdir()
    t = np.arange(8000) / SR
    x = (0.45 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    sf.write(tmp_path / "in" / "a.wav", x, SR, subtype="PCM_16")
    sf.write(tmp_path / "in" / "f.wav", x, SR, subtype="FLOAT")
    summary, rows, printed = _enhance(tmp_path / "in", tmp_path / "out", gain=50.0)
    for name, what in (("a.wav", "clipped"), ("f.wav", "written unclipped")):
        row = rows[name]
        assert row["status"] == "ok" and row["message"].startswith("warning: output peak 22.5 is 50x the input "
                                                                   f"peak 0.45: {what};"), row
        assert f"WARNING {name}: output peak 22.5" in printed
    assert printed.count("\n") == 2
    assert np.abs(sf.read(tmp_path / "out" / "a.wav")[0]).max() <= 1.0  # written, clipped as before
    assert np.abs(sf.read(tmp_path / "out" / "f.wav")[0]).max() == pytest.approx(22.5, rel=1e-3)
    assert summary.done == 2 and summary.warned == 2 and summary.failed == 0 and summary.exit_code == 0
    assert "enhanced 2/2 files (2 with a warning, see the log)" in summary.line("log.csv")

    summary, rows, printed = _enhance(tmp_path / "in", tmp_path / "out2", gain=1.0)  # a plausible output
    assert [r["message"] for r in rows.values()] == ["", ""] and printed == "" and summary.warned == 0
    assert "warning" not in summary.line("log.csv")
