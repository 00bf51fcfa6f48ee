"""Objective metrics (numpy). SI-SDR follows the reference evaluation code exactly:
α = (⟨ŝ, s⟩ + ε)/(‖s‖² + ε), SI-SDR = 10·log10((‖αs‖² + ε)/(‖αs − ŝ‖² + ε)), ε = float64 eps, no mean
removal, both signals cut to the shorter length."""

from __future__ import annotations

import numpy as np

EPS = float(np.finfo(np.float64).eps)


def _align(est, ref):
    est = np.asarray(est, np.float64).ravel()
    ref = np.asarray(ref, np.float64).ravel()
    n = min(est.size, ref.size)
    return est[:n], ref[:n]


def si_sdr(est, ref) -> float:
    """Scale-invariant signal-to-distortion ratio (dB) of ``est`` against the clean ``ref``."""
    est, ref = _align(est, ref)
    alpha = (np.dot(est, ref) + EPS) / (np.dot(ref, ref) + EPS)
    target = alpha * ref
    return float(10.0 * np.log10((np.dot(target, target) + EPS) / (np.sum((target - est) ** 2) + EPS)))
