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
