"""Metrics on cases with known answers."""

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from jaxse.evaluation import metrics as M
from jaxse.evaluation.metrics import si_sdr

FS = 16000


def _orthogonal_noise(s, rng):
    n = rng.standard_normal(s.size)
    return n - np.dot(n, s) / np.dot(s, s) * s


def _at_snr(s, n, snr_db):
    """``n`` scaled so that 10 log10(|s|^2 / |g n|^2) = snr_db."""
    return n * np.sqrt(np.sum(s**2) / np.sum(n**2) / 10 ** (snr_db / 10))


def speechlike(seconds, seed=0, f0=140.0, fs=FS):
    """A voiced, syllable-modulated harmonic signal that PESQ and STOI accept as speech."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * fs)) / fs
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.1 * np.sin(2 * np.pi * 0.7 * t))) / fs
    x = sum(np.sin(k * phase + rng.uniform(0, 2 * np.pi)) / k for k in range(1, 25))
    env = np.clip(np.sin(2 * np.pi * 3 * t), 0, None) ** 0.5 * (t > 0.2) * (t < seconds - 0.2)
    return 0.1 * x * env / np.max(np.abs(x))


# ------------------------------------------------------------------------------------------------
# SI-SDR / SI-SIR / SI-SAR


def test_si_sdr_known_values():
    rng = np.random.default_rng(0)
    s = rng.standard_normal(16000)
    assert si_sdr(3.0 * s, s) > 100  # a scaled copy is perfect
    assert si_sdr(-0.5 * s, s) > 100
    n = rng.standard_normal(16000)
    n -= np.dot(n, s) / np.dot(s, s) * s  # orthogonal noise: SI-SDR equals the SNR exactly
    for snr in (-5.0, 0.0, 5.0, 20.0):
        scaled = n * np.sqrt(np.sum(s**2) / np.sum(n**2) / 10 ** (snr / 10))
        assert si_sdr(s + scaled, s) == pytest.approx(snr, abs=1e-6)
    assert si_sdr(s[:100], s) == pytest.approx(si_sdr(s[:100], s[:100]))  # cut to the shorter signal


def test_si_sdr_of_an_independent_noise_mixture_is_its_snr():
    rng = np.random.default_rng(1)
    s = rng.standard_normal(64000)
    n = rng.standard_normal(64000)  # independent, not exactly orthogonal
    assert si_sdr(s + _at_snr(s, n, 10.0), s) == pytest.approx(10.0, abs=0.1)


@pytest.mark.parametrize("method", M.SI_METHODS)
def test_si_sir_of_orthogonal_interference(method):
    rng = np.random.default_rng(2)
    s = rng.standard_normal(32000)
    n = _orthogonal_noise(s, rng)
    x = s + n  # the mixture: its noise is n
    for a in (0.1, 0.5, 2.0):
        est = s + a * n
        expected = 10 * np.log10(np.sum(s**2) / np.sum((a * n) ** 2))
        assert M.si_sir(est, s, x, method) == pytest.approx(expected, abs=1e-6)
        assert M.si_sar(est, s, x, method) > 100  # nothing outside span{s, n}
        assert M.si_sdr(est, s) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("method", M.SI_METHODS)
def test_si_sar_of_a_copy_plus_independent_white_noise(method):
    rng = np.random.default_rng(3)
    s = rng.standard_normal(64000)
    x = s + rng.standard_normal(64000)  # the mixture's noise
    w = _at_snr(s, rng.standard_normal(64000), 10.0)  # artefact, independent of s and of the noise
    assert M.si_sar(s + w, s, x, method) == pytest.approx(10.0, abs=0.15)
    assert M.si_sir(s + w, s, x, method) > 25  # barely any of it lies along the noise


def test_si_decomposition_sums_to_the_estimate_and_methods():
    rng = np.random.default_rng(4)
    s = rng.standard_normal(8000)
    n = 0.5 * s + rng.standard_normal(8000)  # noise correlated with the speech
    x = s + n
    est = s + 0.3 * n + 0.1 * rng.standard_normal(8000)
    for method in M.SI_METHODS:
        t, i, a = M.si_decomposition(est, s, x, method)
        np.testing.assert_allclose(t + i + a, est, atol=1e-12)
    t, i, a = M.si_decomposition(est, s, x, "span")
    assert abs(np.dot(a, s)) < 1e-8 * np.dot(s, s) and abs(np.dot(a, n)) < 1e-8 * np.dot(n, n)
    # reference: separate projections on s and on n, SAR against the target alone
    tr, ir, ar = M.si_decomposition(est, s, x, "reference")
    np.testing.assert_allclose(tr, np.dot(est, s) / np.dot(s, s) * s, rtol=1e-12)
    np.testing.assert_allclose(ir, np.dot(est, n) / np.dot(n, n) * n, rtol=1e-12)
    assert M.si_sar(est, s, x) == pytest.approx(10 * np.log10(np.sum(tr**2) / np.sum(ar**2)), abs=1e-9)
    assert M.si_sar(est, s, x, "span") == pytest.approx(10 * np.log10(np.sum((t + i) ** 2) / np.sum(a**2)), abs=1e-9)
    assert M.si_sir(est, s, x) != pytest.approx(M.si_sir(est, s, x, "span"), abs=0.1)  # they differ here
    with pytest.raises(ValueError, match="method"):
        M.si_sir(est, s, x, "bss")


def test_si_ratios_are_guarded_and_cut_to_the_shortest():
    rng = np.random.default_rng(5)
    s = rng.standard_normal(4000)
    v = M.si_sir(s + 0.1 * rng.standard_normal(4000), s, s)  # noisy == clean: no noise at all
    assert math.isfinite(v)
    x = s + rng.standard_normal(4000)
    est = s + 0.2 * (x - s)
    assert M.si_sir(est[:3000], s, x) == pytest.approx(M.si_sir(est[:3000], s[:3000], x[:3000]))
    assert math.isfinite(M.si_sar(np.zeros(4000), s, x))


# ------------------------------------------------------------------------------------------------
# PESQ


def test_pesq_variants_on_synthetic_speech():
    s = speechlike(2.3)
    assert M.pesq_nb_raw(s, s) == pytest.approx(4.5, abs=1e-5)  # the P.862 maximum
    assert M.pesq_nb(s, s) == pytest.approx(4.5486, abs=1e-3)  # its P.862.1 image
    assert M.pesq_wb(s, s) == pytest.approx(4.6439, abs=1e-3)  # P.862.2 maximum
    rng = np.random.default_rng(6)
    n = rng.standard_normal(s.size)
    scores = {k: [] for k in ("raw", "nb", "wb")}
    for snr in (30.0, 15.0, 5.0, -5.0):
        e = s + _at_snr(s, n, snr)
        raw, nb, wb = M.pesq_nb_raw(e, s), M.pesq_nb(e, s), M.pesq_wb(e, s)
        # nb is the P.862.1 image of the raw score (up to pypesq's int16 quantisation of the raw input)
        assert float(M.mos_lqo_from_raw(raw)) == pytest.approx(nb, abs=0.02)
        scores["raw"].append(raw), scores["nb"].append(nb), scores["wb"].append(wb)
    for k, v in scores.items():
        assert all(a > b for a, b in zip(v, v[1:])), (k, v)  # decreasing with the SNR


def test_p862_1_mapping_round_trip():
    raw = np.linspace(-0.5, 4.5, 11)
    mos = M.mos_lqo_from_raw(raw)
    assert mos[-1] == pytest.approx(4.5486, abs=1e-4) and mos[0] == pytest.approx(1.0168, abs=1e-4)
    np.testing.assert_allclose(M.raw_from_mos_lqo(mos), raw, atol=1e-9)
    with pytest.raises(ValueError):
        M.raw_from_mos_lqo(0.99)


def test_pesq_failures_become_nan_with_a_reason():
    s = speechlike(2.3)
    with pytest.raises(M.MetricError, match="1/4 of a second"):
        M.pesq_wb(s[4000:7000], s[4000:7000])
    out = M.compute_metrics(np.zeros_like(s), s, metrics="pesq")
    assert all(math.isnan(out[k]) for k in ("pesq_nb_raw", "pesq_nb", "pesq_wb"))
    assert "silent" in out.errors["pesq_wb"]
    with pytest.raises(M.MetricError, match="16 kHz"):
        M.pesq_wb(s, s, fs=8000)


def test_pesq_nb_raw_matches_pypesq(data_dir):
    """pypesq 1.2.4 (built separately) gave these raw scores for the same signals; the level matters
    (int16 quantisation), which pesq_nb_raw reproduces and pesq_nb (float input) does not."""
    s, _ = sf.read(data_dir / "test" / "so762_0563_005630017.flac")
    n, _ = sf.read(data_dir / "noise" / "test" / "rain.flac")
    n = n[16000:16000 + s.size]
    pypesq = {(0.0, 1.0): 1.1625040769577026, (0.0, 0.05): 1.1717840433120728,
              (10.0, 1.0): 1.8577771186828613, (10.0, 0.05): 1.8746161460876465}
    for (snr, scale), expected in pypesq.items():
        x = (s + _at_snr(s, n, snr)) * scale
        assert M.pesq_nb_raw(x, s * scale) == pytest.approx(expected, abs=2e-6)


# ------------------------------------------------------------------------------------------------
# ESTOI


def test_estoi_identical_noisy_and_too_short():
    s = speechlike(2.3)
    assert M.estoi(s, s) == pytest.approx(1.0, abs=1e-6)
    rng = np.random.default_rng(7)
    n = rng.standard_normal(s.size)
    vals = [M.estoi(s + _at_snr(s, n, snr), s) for snr in (20.0, 5.0, -5.0)]
    assert 1.0 > vals[0] > vals[1] > vals[2]
    with pytest.raises(M.MetricError, match="not enough"):
        M.estoi(s[3200:5000], s[3200:5000])


# ------------------------------------------------------------------------------------------------
# DNSMOS


def test_dnsmos_features_are_librosa_style_log_power():
    x = np.random.default_rng(8).standard_normal(9 * FS)
    f = M.dnsmos_features(x)
    assert f.shape == (901, 161) and f.dtype == np.float32
    # frame 10 by hand: samples 1440..1760 (centre padding of 160), periodic Hann
    w = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(320) / 320)
    ref = np.log10(np.maximum(np.abs(np.fft.rfft(x[10 * 160 - 160:10 * 160 + 160] * w)) ** 2, 1e-12))
    np.testing.assert_allclose(f[10], ref, rtol=1e-5)
    assert f[0, 0] == pytest.approx(np.log10(max(abs(np.sum(x[:160] * w[160:])) ** 2, 1e-12)), rel=1e-5)
    assert np.all(M.dnsmos_features(np.zeros(9 * FS)) == -12)


def test_dnsmos_polynomials_are_ascending():
    raw = 3.0
    c = M.DNSMOS_COEFS["sig"]
    assert c[0] + c[1] * raw + c[2] * raw**2 == pytest.approx(
        float(np.polynomial.polynomial.polyval(raw, c)))  # what _dnsmos_scores calls


def test_dnsmos_on_real_speech(data_dir):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("pyloudnorm")
    s, sr = sf.read(data_dir / "test" / "so762_0563_005630017.flac")
    s = s[: int(2.3 * sr)]  # 2.3 s is repeated to 9.2 s: one window per call keeps the test fast
    n, _ = sf.read(data_dir / "noise" / "test" / "running_tap.flac")
    clean = M.dnsmos(s, sr)
    noisy = M.dnsmos(s + _at_snr(s, n[: s.size], 0.0), sr)
    for d in (clean, noisy):
        assert set(d) == {"sig", "bak", "ovrl"}
        assert all(1.0 <= v <= 5.0 for v in d.values()), d
    assert clean["bak"] > noisy["bak"] + 0.5
    assert clean["ovrl"] > noisy["ovrl"]


def test_dnsmos_short_and_silent_clips():
    short = speechlike(1.5)
    assert all(math.isnan(v) for v in M.dnsmos(short).values())
    assert M.dnsmos(short, short_clip="reference") == {"sig": 0.0, "bak": 0.0, "ovrl": 0.0}
    out = M.compute_metrics(short, metrics="dnsmos")
    assert all(math.isnan(v) for v in out.values()) and "shorter than 2 s" in out.errors["dnsmos_ovrl"]
    out = M.compute_metrics(short, metrics="dnsmos", short_clip="reference")
    assert dict(out) == {"dnsmos_sig": 0.0, "dnsmos_bak": 0.0, "dnsmos_ovrl": 0.0} and not out.errors
    pytest.importorskip("pyloudnorm")
    with pytest.raises(M.MetricError, match="silent"):
        M.dnsmos(np.zeros(3 * FS))
    with pytest.raises(ValueError, match="short_clip"):
        M.dnsmos(short, short_clip="zero")


def test_dnsmos_missing_packages_name_the_extra(monkeypatch, tmp_path):
    real = M.importlib.import_module

    def fake(name, *a, **k):
        if name == "onnxruntime":
            raise ImportError("No module named 'onnxruntime'")
        return real(name, *a, **k)

    monkeypatch.setattr(M.importlib, "import_module", fake)
    monkeypatch.setattr(M, "_SESSIONS", {})
    with pytest.raises(M.MissingDependencyError, match=r'pip install -e "\.\[eval\]"'):
        M.dnsmos(speechlike(2.3))
    with pytest.raises(M.MissingDependencyError, match="eval"):
        M.check_dependencies(["dnsmos_bak"])
    monkeypatch.setenv("JAXSE_DNSMOS_DIR", str(tmp_path))
    with pytest.raises(M.MissingDependencyError, match="sig.onnx"):
        M.dnsmos_model_dir()


# ------------------------------------------------------------------------------------------------
# compute_metrics


def test_compute_metrics_selection_order_and_errors():
    s = speechlike(2.3)
    rng = np.random.default_rng(9)
    x = s + _at_snr(s, rng.standard_normal(s.size), 5.0)
    e = s + 0.3 * (x - s)
    out = M.compute_metrics(e, s, x, metrics="si_sar,si_sdr,pesq_wb")
    assert list(out) == ["pesq_wb", "si_sdr", "si_sar"] and out.errors == {}
    assert out["si_sdr"] == pytest.approx(M.si_sdr(e, s))
    # default: everything the inputs allow, in ALL order (a 1.5 s clip: DNSMOS is NaN, and fast)
    short_s, short_e = speechlike(1.5), speechlike(1.5) + 0.01 * rng.standard_normal(24000)
    out = M.compute_metrics(short_e, short_s)
    assert list(out) == [m for m in M.ALL if m not in M.NEEDS_NOISY]
    assert set(out.errors) == set(M.DNSMOS)
    assert list(M.compute_metrics(short_e, short_s, short_e + 0.1)) == list(M.ALL)
    # asking for SI-SIR without the mixture is a usage error
    with pytest.raises(ValueError, match="noisy"):
        M.compute_metrics(e, s, metrics=["si_sir"])
    with pytest.raises(ValueError, match="clean"):
        M.compute_metrics(e, metrics=["estoi"])
    with pytest.raises(ValueError, match="unknown metric"):
        M.compute_metrics(e, s, metrics="pesq,mosnet")
    assert M.resolve_metrics("dnsmos, si-sdr") == ("si_sdr",) + M.DNSMOS
    assert M.resolve_metrics(None) == M.ALL == M.resolve_metrics(["all"])


def test_compute_metrics_rejects_bad_input():
    s = speechlike(2.3)
    with pytest.raises(ValueError, match="empty"):
        M.compute_metrics(np.zeros(0), s, metrics="si_sdr")
    with pytest.raises(ValueError, match="1-D"):
        M.compute_metrics(np.zeros((2, s.size)), s, metrics="si_sdr")
    bad = s.copy()
    bad[5] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        M.compute_metrics(bad, s, metrics="si_sdr")
    with pytest.raises(ValueError, match="sample rate"):
        M.compute_metrics(s, s, metrics="si_sdr", sample_rate=0)


def test_compute_metrics_resamples_and_cuts():
    s16 = speechlike(2.3)
    rng = np.random.default_rng(10)
    e16 = s16 + _at_snr(s16, rng.standard_normal(s16.size), 10.0)
    s8, e8 = s16[::2], e16[::2]  # (aliasing is irrelevant for an SI-SDR check)
    out = M.compute_metrics(e8[:-40], s8, sample_rate=8000, metrics="si_sdr,pesq_wb")
    assert out["si_sdr"] == pytest.approx(10.0, abs=1.0)
    assert 1.0 < out["pesq_wb"] < 4.7


def test_no_jax_import():
    code = "import sys, jaxse.evaluation.metrics, jaxse.evaluation.evaluate; sys.exit(1 if 'jax' in sys.modules else 0)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr
