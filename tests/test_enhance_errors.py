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


# ------------------------------------------------------------------- issue 28: locks, full disks, leftovers


def test_no_audio_files_is_a_usage_error_writing_nothing(run, workdir):
    (workdir / "notes").mkdir()
    (workdir / "notes" / "readme.txt").write_text("no audio here\n")
    before = _tree(workdir)
    _usage_error(*run(workdir / "notes", "-o", workdir / "out"), f"no audio files under {workdir / 'notes'}",
                 "(extensions: .wav, .flac")
    assert _tree(workdir) == before  # no output folder, no log
    with pytest.raises(ValueError, match="no audio files"):
        E.enhance_files(workdir / "notes", workdir / "out", GainEnhancer())
    assert _tree(workdir) == before


def test_non_finite_settings_are_refused_up_front(workdir):
    # (a subprocess: the --config.FIELD flags exist only for the FIELDs on the command line enhance.py starts with)
    _usage_error(*_real_cli(workdir / "in", "-o", workdir / "out", "--config.lmbd=nan"),
                 "lmbd must be finite and >= 0, got nan")
    assert not (workdir / "out").exists()
    from jaxse.errors import SettingsError

    for method, field, value in (("udiffse", "lmbd", "inf"), ("udiffse+", "snr", "-inf"), ("udiffse", "nmf_delta", "nan"),
                                 ("rvae-ldem", "ld_lr", "nan"), ("rvae-mhem", "mh_eta", "inf"),
                                 ("sgmse+", "snr", "nan")):
        with pytest.raises(SettingsError, match=f"{field} must be finite"):
            E.make_config(method, **{field: float(value)})


def test_a_second_run_on_the_same_output_is_refused(run, workdir):
    out = workdir / "out"
    with E.OutputLock(out):  # a run in progress
        before = _tree(workdir)
        _usage_error(*run(workdir / "in", "-o", out), f"output directory {out} is in use by another enhance run",
                     ".enhance.lock")
        assert _tree(workdir) == before  # nothing written (and no model loaded: the fixture checks)
        with pytest.raises(E.OutputLocked):
            E.enhance_files(workdir / "in", out, GainEnhancer())
    assert list(out.iterdir()) == []  # the lock file goes with the lock
    summary, rows, _ = _enhance(workdir / "in", out)  # free again
    assert summary.done == 1 and sorted(p.name for p in out.iterdir()) == ["a.wav", "enhance_log.csv"]


def test_lock_shares_of_a_multi_process_run(tmp_path):
    from jaxse.multihost import Share

    out = tmp_path / "out"
    p0 = E.OutputLock(out, Share(0, 2)).acquire()
    p1 = E.OutputLock(out, Share(1, 2)).acquire()  # the processes of one split share the folder
    names = sorted(p.name for p in out.iterdir())
    assert names == [".enhance.lock", ".enhance.lock.process-0-of-2", ".enhance.lock.process-1-of-2"]
    assert E.list_inputs(out)[1] == []  # lock files are no inputs
    with pytest.raises(E.OutputLocked, match="process-1-of-2"):
        E.OutputLock(out, Share(1, 2)).acquire()  # the same share twice
    with pytest.raises(E.OutputLocked, match=r"holds its lock \.enhance\.lock;"):
        E.OutputLock(out).acquire()  # a one-process run beside the split
    p0.release()
    p1.release()
    assert list(out.iterdir()) == []  # the last one out removes the lock files
    with E.OutputLock(out):
        with pytest.raises(E.OutputLocked):
            E.OutputLock(out, Share(0, 2)).acquire()


def test_a_lock_dies_with_its_process(tmp_path):
    out = tmp_path / "out"
    code = ("import sys, time; from jaxse.engine.outdir import OutputLock; OutputLock(sys.argv[1]).acquire(); "
            "print('locked', flush=True); time.sleep(60)")
    p = subprocess.Popen([sys.executable, "-c", code, str(out)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "locked"
        with pytest.raises(E.OutputLocked):
            E.OutputLock(out).acquire()
    finally:
        p.kill()  # kill -9: no cleanup runs
        p.wait()
    assert (out / ".enhance.lock").exists()  # the file stays, its lock does not
    with E.OutputLock(out):
        pass
    assert not (out / ".enhance.lock").exists()


def test_full_disk_fails_each_file_in_one_line_and_goes_on(tmp_path, monkeypatch):
    import errno

    from jaxse import audio

    (tmp_path / "in").mkdir()
    for name in ("a", "b", "c"):
        sf.write(tmp_path / "in" / f"{name}.wav", 0.1 * np.ones(4000, np.float32), SR)
    real = audio.write_bytes_atomic

    def full_for_b(path, data):
        if Path(path).name != "b.wav":
            return real(path, data)

        def half_then_full(fh):  # part of the file gets written, then the disk is full
            fh.write(data[: len(data) // 2])
            fh.flush()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        return audio.write_atomic(path, half_then_full)

    monkeypatch.setattr(audio, "write_bytes_atomic", full_for_b)
    summary, rows, printed = _enhance(tmp_path / "in", tmp_path / "out")
    assert summary.done == 2 and summary.failed == 1 and summary.exit_code == 1
    assert rows["b.wav"]["message"] == "could not write b.wav: No space left on device"
    assert printed.splitlines() == ["FAILED b.wav: could not write b.wav: No space left on device"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.wav", "c.wav", "enhance_log.csv"]


def test_full_disk_at_start_stops_before_the_model(run, workdir, monkeypatch):
    import errno

    from jaxse.engine import files

    def full(directory, nbytes=0):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(files, "probe_space", full)
    before = _tree(workdir)
    _usage_error(*run(workdir / "in", "-o", workdir / "out"), "cannot be created in", "No space left on device")
    assert _tree(workdir) == before


def test_log_rows_that_cannot_be_written_leave_no_partial_row_or_empty_log(tmp_path, monkeypatch):
    import errno

    from jaxse.engine.log import CsvLog

    def full(fd, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as m:
        m.setattr(os, "write", full)
        with pytest.raises(OSError):
            CsvLog(tmp_path / "new.csv")
    assert not (tmp_path / "new.csv").exists()  # no 0-byte log
    log = CsvLog(tmp_path / "log.csv")
    log.row("a.wav", 1.0, 0.5, "ok")
    real = os.write
    with monkeypatch.context() as m:
        m.setattr(os, "write", lambda fd, data: real(fd, bytes(data)[:5]) and full(fd, data))  # 5 bytes, then full
        with pytest.raises(OSError):
            log.row("b.wav", 1.0, 0.5, "ok")
    log.row("c.wav", 1.0, 0.5, "ok")
    log.close()
    assert [r["file"] for r in E.read_log(tmp_path / "log.csv")] == ["a.wav", "c.wav"]


def test_stale_temporary_files_are_removed_and_counted(tmp_path):
    from jaxse.engine.outdir import remove_stale_parts

    (tmp_path / "in" / "sub").mkdir(parents=True)
    for rel in ("a.wav", "sub/b.wav"):
        sf.write(tmp_path / "in" / rel, 0.1 * np.ones(4000, np.float32), SR)
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    stale = [out / ".a.wav.0123456789ab.part", out / "sub" / ".b.wav.a1b2c3d4e5f6.part"]
    kept = [out / ".a.wav.xyz.part", out / ".a.wav.0123456789ab.part.bak", out / ".z.wav.0123456789ab.part",
            out / "a.wav.0123456789ab.part"]
    for p in stale + kept:
        p.write_bytes(b"RIFF")
    assert remove_stale_parts(out, ["nosuch.wav"]) == 0
    summary, rows, printed = _enhance(tmp_path / "in", out)
    assert summary.done == 2 and not any(p.exists() for p in stale) and all(p.exists() for p in kept)
    assert "note: removed 2 stale temporary file(s)" in printed


def test_ctrl_c_keeps_what_is_done_and_says_how_much(tmp_path):
    (tmp_path / "in").mkdir()
    for name in ("a", "b", "c"):
        sf.write(tmp_path / "in" / f"{name}.wav", 0.1 * np.ones(4000, np.float32), SR)

    class Interrupted(GainEnhancer):
        def submit(self, uid, wave, payload=None):
            if uid == "b.wav":
                raise KeyboardInterrupt
            return super().submit(uid, wave, payload)

    with pytest.raises(KeyboardInterrupt) as err:
        E.enhance_files(tmp_path / "in", tmp_path / "out", Interrupted(), stream=io.StringIO(), progress=False)
    assert err.value.summary.done == 1
    assert not (tmp_path / "out" / ".enhance.lock").exists()
    summary, rows, _ = _enhance(tmp_path / "in", tmp_path / "out")  # the rerun finishes
    assert summary.skipped == 1 and summary.done == 2


def test_float_outputs_are_byte_identical(tmp_path):
    import time

    from jaxse.audio import write_audio

    x = np.sin(np.linspace(0, 100, 8000)).astype(np.float32) * 0.3
    write_audio(tmp_path / "a.wav", x, SR, subtype="FLOAT")
    time.sleep(1.1)  # libsndfile's PEAK chunk holds the time in seconds
    write_audio(tmp_path / "b.wav", x, SR, subtype="FLOAT")
    a, b = (tmp_path / "a.wav").read_bytes(), (tmp_path / "b.wav").read_bytes()
    assert a == b and b"PEAK" not in a
    assert subprocess.run(["cmp", tmp_path / "a.wav", tmp_path / "b.wav"]).returncode == 0
    y, sr = sf.read(tmp_path / "a.wav", dtype="float32")
    assert sr == SR and np.array_equal(y, x) and sf.info(tmp_path / "a.wav").subtype == "FLOAT"


FAST = ("--method", "rvae-ldem", "--config.num_em=2", "--progress=false")


@pytest.mark.slow
def test_real_full_disk_on_a_tiny_tmpfs(tmp_path):
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(mnt)],
                      capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs is not permitted here")
    try:
        (tmp_path / "in").mkdir()
        for name in "abcd":  # 4 x 117 KiB of 16-bit output: two fit
            sf.write(tmp_path / "in" / f"{name}.wav", 0.1 * np.sin(np.arange(60000) / 9.0), SR, subtype="PCM_16")
        code, err = _real_cli(tmp_path / "in", "-o", mnt / "out", *FAST)
        assert code == 1, err
        assert "Traceback" not in err and "Exception ignored" not in err
        failed = [line for line in err.splitlines() if line.startswith("FAILED")]
        assert failed and all(line.endswith("No space left on device") for line in failed)
        names = sorted(p.name for p in (mnt / "out").iterdir())
        assert not any(n.endswith(".part") for n in names) and "enhance_log.csv" in names
        for n in names:
            if n.endswith(".wav"):
                assert sf.info(mnt / "out" / n).frames == 60000  # what is there is complete
        try:  # the disk now full to the last byte
            with open(mnt / "fill", "wb", buffering=0) as fh:
                while True:
                    fh.write(b"\0" * 4096)
        except OSError:
            pass
        code, err = _real_cli(tmp_path / "in", "-o", mnt / "out2", *FAST)
        _usage_error(code, err, "No space left on device")
        assert not (mnt / "out2").exists()
    finally:
        subprocess.run(["umount", str(mnt)])


@pytest.mark.slow
def test_ctrl_c_is_one_line_and_exit_130_then_the_rerun_finishes(tmp_path):
    import signal
    import time

    (tmp_path / "in").mkdir()
    names = "abcdefghijkl"
    for name in names:
        sf.write(tmp_path / "in" / f"{name}.wav", 0.1 * np.sin(np.arange(32000) / 7.0), SR)
    out = tmp_path / "out"
    args = [sys.executable, str(REPO / "enhance.py"), str(tmp_path / "in"), "-o", str(out), "--method", "rvae-ldem",
            "--config.num_em=40", "--batch-size", "1", "--progress=false"]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    p = subprocess.Popen(args, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list(out.glob("*.wav")):  # the first output (in any order) is written
        time.sleep(0.1)
    p.send_signal(signal.SIGINT)
    err = p.communicate(timeout=120)[1]
    assert p.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    last = err.strip().splitlines()[-1]
    assert re.fullmatch(r"enhance\.py: stopped; \d+ files done, rerun the same command to finish", last), err
    done = int(last.split("; ")[1].split()[0])
    assert done >= 1 and not list(out.glob(".*.part")) and not (out / ".enhance.lock").exists()
    rerun = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"skipped {done} (output exists)" in rerun.stderr
    assert len(list(out.glob("*.wav"))) == len(names)
