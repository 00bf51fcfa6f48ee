"""``jaxse.enhance(...)``: one call from Python, the engine kept between calls, the same result as the CLI."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

import jaxse
from tests.conftest import REPO

EXAMPLE = REPO / "examples" / "noisy.wav"
SETTINGS = {"num_em": 3}  # RVAE-LDEM, short: the call's mechanics, not quality


def test_one_call_on_a_file_and_on_arrays():
    y = jaxse.enhance(EXAMPLE, method="rvae-ldem", config=SETTINGS)
    x, sr = sf.read(EXAMPLE, dtype="float32")
    assert y.dtype == np.float32 and y.shape == x.shape and np.all(np.isfinite(y))
    assert np.array_equal(y, jaxse.enhance(str(EXAMPLE), method="rvae-ldem", config=SETTINGS))  # deterministic
    engines = len(jaxse.enhance._ENGINES)
    # An array at another rate (and as (n, 2) channels): processed at 16 kHz, returned at its own rate and length.
    x8 = x[::2].copy()
    y8 = jaxse.enhance(np.stack([x8, x8], axis=1), 8000, method="rvae-ldem", config=SETTINGS)
    assert y8.shape == x8.shape and np.all(np.isfinite(y8))
    assert len(jaxse.enhance._ENGINES) == engines  # same settings: the same engine, its programs reused
    jaxse.enhance(x, sr, method="rvae-ldem", config=SETTINGS, seed=1)
    assert len(jaxse.enhance._ENGINES) == engines + 1


def test_bad_calls_are_clear_errors():
    x, sr = sf.read(EXAMPLE, dtype="float32")
    for call, match in ((lambda: jaxse.enhance(x), "sample_rate"),
                        (lambda: jaxse.enhance(EXAMPLE, 8000), "not sample_rate=8000"),
                        (lambda: jaxse.enhance(np.zeros((2, 3, 4)), 16000), "shape"),
                        (lambda: jaxse.enhance(np.full(100, np.nan), 16000), "NaN"),
                        (lambda: jaxse.enhance(x, sr, method="nosuch"), "nosuch"),
                        (lambda: jaxse.enhance(x, sr, method="rvae-ldem", config={"bogus": 1}), "bogus")):
        with pytest.raises((ValueError, TypeError), match=match):
            call()


def test_same_result_as_the_command_line(tmp_path):
    p = subprocess.run([sys.executable, "enhance.py", str(EXAMPLE), "-o", str(tmp_path), "--method", "rvae-ldem",
                        "--config.num_em=3", "--progress=false"], cwd=REPO, capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stderr
    cli, _ = sf.read(tmp_path / EXAMPLE.name, dtype="float32")
    api = jaxse.enhance(EXAMPLE, method="rvae-ldem", config=SETTINGS)
    assert np.max(np.abs(cli - api)) <= 1.5 / 32768  # the CLI writes 16-bit PCM, like its input


def test_compute_dtype_option():
    from jaxse import enhance

    backend = enhance.load_backend("udiffse+", dtype="bfloat16")
    assert backend.model.net.dtype == "bfloat16"
    assert enhance.load_backend("udiffse+").model.net.dtype == "float32"
    with pytest.raises(ValueError, match="float32 only") as err:
        enhance.load_backend("rvae-ldem", dtype="bfloat16")
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="dtype"):
        enhance.load_backend("udiffse+", dtype="float16")


class _FakeEngine:
    """Stands in for an Enhancer: returns its input times ``gain`` (no model, no compile)."""

    class spec:
        sample_rate = 16000

    def __init__(self, gain):
        self.gain = gain
        self.seen = []

    def enhance(self, waves, uids=None, conds=None):
        self.seen.append(np.asarray(waves[0]))
        return [np.asarray(w) * self.gain for w in waves]


@pytest.fixture
def fake_engine(monkeypatch):
    from jaxse.engine import api

    engine = _FakeEngine(1.0)
    monkeypatch.setattr(api, "_engine", lambda *a, **k: engine)
    return engine


def test_integer_arrays_are_scaled_by_their_full_scale(fake_engine):
    ramp = np.linspace(-0.5, 0.5, 8000)
    for dtype, x in ((np.int16, np.round(ramp * 32768)), (np.int32, np.round(ramp * 2.0**31)),
                     (np.uint8, np.round(ramp * 128 + 128)), (np.int8, np.round(ramp * 128))):
        y = jaxse.enhance(x.astype(dtype), 16000)
        assert y.dtype == np.float32 and np.max(np.abs(y - ramp)) < 1 / 127, dtype
    with pytest.raises(jaxse.JaxseError, match="dtype bool"):
        jaxse.enhance(np.zeros(8000, bool), 16000)


def test_implausible_output_peaks_are_clipped_with_a_warning(fake_engine):
    x = np.sin(np.linspace(0, 300, 16000)).astype(np.float32) * 0.4
    with pytest.warns(RuntimeWarning, match=r"output peak 160 is 400x the input peak 0.4: clipped"):
        fake_engine.gain = 400.0
        y = jaxse.enhance(x, 16000)
    assert np.max(np.abs(y)) == 1.0
    fake_engine.gain = 1.5  # within the limit: returned as computed, no warning
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.allclose(jaxse.enhance(x, 16000), 1.5 * x)


def test_bad_rates_and_channels_first_arrays_are_refused_in_one_line(fake_engine):
    x = np.zeros(8000, np.float32)
    for call, match in ((lambda: jaxse.enhance(x, 16), r"sample_rate=16 is outside 4000\.\.768000 Hz"),
                        (lambda: jaxse.enhance(x, 1_000_000), "outside"),
                        (lambda: jaxse.enhance(x, 16000.5), "whole number"),
                        (lambda: jaxse.enhance(np.zeros((2, 8000)), 16000), r"looks like \(channels, n\).*\.T")):
        with pytest.raises(ValueError, match=match) as err:
            call()
        assert isinstance(err.value, jaxse.JaxseError) and "\n" not in str(err.value)
    assert not fake_engine.seen  # refused before the engine
    jaxse.enhance(np.zeros((8000, 2)), 16000)  # (n, channels) is fine


def test_one_error_base_for_every_user_error():
    from jaxse import errors, registry
    from jaxse.audio import AudioError
    from jaxse.core.backend import CheckpointError
    from jaxse.evaluation.evaluate import EvalError

    for cls in (AudioError, CheckpointError, EvalError, registry.RegistryError, errors.SettingsError,
                errors.UnknownFieldError, errors.InputError):
        assert issubclass(cls, jaxse.JaxseError), cls
    assert issubclass(registry.RegistryError, ValueError) and issubclass(errors.SettingsError, ValueError)
    assert issubclass(errors.UnknownFieldError, TypeError)
    x = np.zeros(8000, np.float32)
    for call in (lambda: jaxse.enhance(x, 16000, method="nosuch"),
                 lambda: jaxse.enhance(x, 16000, method="rvae-ldem", config={"bogus": 1}),
                 lambda: jaxse.enhance(x, 16000, method="rvae-ldem", config={"ld_lr": float("nan")}),
                 lambda: jaxse.enhance(REPO / "nosuch.wav"),
                 lambda: jaxse.enhance(x, 16000, method="rvae-ldem", checkpoint=REPO / "nosuch")):
        with pytest.raises(jaxse.JaxseError):
            call()


def test_jaxse_error_is_importable_without_jax():
    code = "import sys, jaxse; jaxse.JaxseError; assert 'jax' not in sys.modules, 'jax imported'"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=60)


def test_read_only_restore_of_a_shipped_model_logs_no_warning(capfd):
    import logging

    from jaxse.core.checkpoint import read_checkpoint_metadata

    absl_logger = logging.getLogger("absl")
    records = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append
    absl_logger.addHandler(handler)
    try:
        read_checkpoint_metadata(REPO / "jaxse" / "assets" / "prior")
        absl_logger.warning("Given directory is read only=%s", "x")  # the record orbax logs: filtered
        absl_logger.warning("another warning")  # any other record still passes
    finally:
        absl_logger.removeHandler(handler)
    assert [r.getMessage() for r in records if r.levelno >= logging.WARNING] == ["another warning"]
    assert "read only" not in capfd.readouterr().err
