"""Metrics on cases with known answers."""

import numpy as np
import pytest

from jaxse.metrics import si_sdr


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
