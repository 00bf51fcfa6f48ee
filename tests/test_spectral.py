"""STFT / compressed-spectrogram transform: parity with the reference (golden/spec_transform.npz)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxse import spectral as sp
from jaxse.data import peak_normalize_np
from tests.conftest import cplx, load_golden, rel_err

JIT = pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])


@pytest.fixture(scope="module")
def g():
    return load_golden("spec_transform.npz")


def _maybe_jit(fn, jit):
    return jax.jit(fn) if jit else fn


def test_window_matches_reference(g):
    np.testing.assert_allclose(sp.hann_window(510), g["window"], atol=1e-6)


@JIT
def test_stft(g, jit):
    out = _maybe_jit(sp.stft, jit)(g["wave"])
    assert out.shape == (256, 126) == (sp.DEFAULT_SPEC.num_bins, sp.DEFAULT_SPEC.num_frames(16000))
    assert rel_err(out, cplx(g, "stft")) < 1e-5


@JIT
def test_compress_and_inverse(g, jit):
    fwd = _maybe_jit(sp.compress, jit)(jnp.asarray(cplx(g, "stft"), jnp.complex64))
    assert rel_err(fwd, cplx(g, "fwd")) < 1e-5
    back = _maybe_jit(sp.decompress, jit)(fwd)
    assert rel_err(back, cplx(g, "back")) < 1e-5
    assert rel_err(back, cplx(g, "stft")) < 1e-5  # exact inverse


@JIT
def test_istft(g, jit):
    out = _maybe_jit(lambda s: sp.istft(s, 16000), jit)(jnp.asarray(cplx(g, "stft"), jnp.complex64))
    np.testing.assert_allclose(out, g["istft_plain"], atol=1e-5)
    np.testing.assert_allclose(out, g["wave"], atol=1e-5)


@JIT
def test_inference_normalisation(g, jit):
    xn, nf = _maybe_jit(sp.normalize_for_inference, jit)(g["wave"])
    assert xn.shape == (256, 128)  # 126 frames padded to a multiple of 64
    assert rel_err(xn, cplx(g, "padded_norm")) < 1e-5
    np.testing.assert_allclose(nf, g["NF"], rtol=1e-5)
    assert float(jnp.max(jnp.abs(xn))) == pytest.approx(1.0, abs=1e-6)


@JIT
def test_reference_tail_quirk_reproduced_and_fixed(g, jit):
    spec = jnp.asarray(cplx(g, "padded_norm"), jnp.complex64) * g["NF"]
    quirk = _maybe_jit(lambda s: sp.spec_to_wave(s, 16000, reference_tail_quirk=True), jit)(spec)
    np.testing.assert_allclose(quirk, g["to_audio"], atol=1e-5)
    # The reference attenuates the tail (up to 0.112 here); the default path does not.
    assert np.max(np.abs(g["to_audio"][-119:] - g["wave"][-119:])) > 0.05
    fixed = _maybe_jit(lambda s: sp.spec_to_wave(s, 16000), jit)(spec)
    np.testing.assert_allclose(fixed, g["wave"], atol=2e-5)


def test_float64_parity(g):
    with jax.enable_x64(True):
        out = sp.stft(jnp.asarray(g["wave"], jnp.float64))
        assert out.dtype == jnp.complex128
        assert rel_err(out, cplx(g, "stft_f64")) < 1e-12
        fwd = sp.compress(out)
        assert rel_err(fwd, cplx(g, "fwd_f64")) < 1e-12
        xn, _ = sp.normalize_for_inference(jnp.asarray(g["wave"], jnp.float64))
        assert rel_err(xn, cplx(g, "padded_norm_f64")) < 1e-12


def test_batched_equals_single():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 2, 4000)).astype(np.float32)
    batched = sp.wave_to_spec(x)
    assert batched.shape == (3, 2, 256, 32)
    for i in range(3):
        for j in range(2):
            np.testing.assert_allclose(batched[i, j], sp.wave_to_spec(x[i, j]), atol=1e-5)
    back = sp.spec_to_wave(batched, 4000)
    np.testing.assert_allclose(back, x, atol=1e-4)


def test_silence_gives_zeros_not_nan():
    xn, nf = sp.normalize_for_inference(np.zeros(8000, np.float32))
    assert np.all(np.isfinite(xn)) and np.all(xn == 0) and float(nf) > 0
    assert np.all(np.isfinite(sp.spec_to_wave(xn * nf, 8000)))


def test_training_peak_normalisation():
    x = np.array([[0.0, -2.0, 1.0], [0.0, 0.0, 0.0]], np.float32)
    y = peak_normalize_np(x)
    np.testing.assert_allclose(y[0], [0.0, -1.0, 0.5])
    np.testing.assert_array_equal(y[1], 0.0)


def test_frame_bookkeeping():
    cfg = sp.SpecConfig()
    assert cfg.num_frames(16000) == 126 and cfg.padded_frames(16000) == 128
    assert cfg.crop_length(256) == 32640 and cfg.num_frames(32640) == 256
    with pytest.raises(ValueError, match="too short"):
        sp.stft(np.zeros(100, np.float32))
    with pytest.raises(ValueError, match="transform"):
        sp.SpecConfig(transform="log")
