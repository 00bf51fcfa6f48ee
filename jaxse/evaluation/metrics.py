"""Objective speech-enhancement metrics (numpy; no jax).

Every intrusive metric takes ``(est, ref)`` in that order (``ref`` = clean speech) and cuts the signals
to the shorter length first, as the reference evaluation code does. :func:`compute_metrics` runs a set of
them on one utterance and turns a failing metric into NaN with the reason recorded.

Metric names (the keys of :func:`compute_metrics`' result; all "higher is better"):

=============== ===========================================================================================
``si_sdr``      scale-invariant SDR (dB), exactly the reference formula (see :func:`si_sdr`)
``si_sir``      scale-invariant SIR (dB) of the estimate against the noise ``n = noisy - clean``
``si_sar``      scale-invariant SAR (dB), same decomposition (both need the noisy mixture)
``pesq_nb_raw`` raw ITU-T P.862 narrow-band score, as ``pypesq.pesq(ref, est, 16000)`` in the papers
``pesq_nb``     P.862.1 MOS-LQO of the narrow-band score (``pesq.pesq(fs, ref, est, 'nb')``)
``pesq_wb``     P.862.2 MOS-LQO, wide-band (``pesq.pesq(fs, ref, est, 'wb')``)
``estoi``       extended STOI (``pystoi.stoi(ref, est, fs, extended=True)``)
``dnsmos_sig``  DNSMOS P.835 speech quality (non-intrusive; optional extra ``eval``)
``dnsmos_bak``  DNSMOS P.835 background-noise quality
``dnsmos_ovrl`` DNSMOS P.835 overall quality
=============== ===========================================================================================

PESQ variants (what the ``pesq`` package returns, found by reading its C source and by experiment):
``pesq.pesq(fs, ref, deg, 'nb')`` returns the P.862.1 mapping of the raw score,
``MOS-LQO = 0.999 + 4 / (1 + exp(-1.4945 raw + 4.6607))`` (clean against itself gives 4.549, the image of
the maximal raw score 4.5), and ``'wb'`` returns the P.862.2 MOS-LQO
``0.999 + 4 / (1 + exp(-1.3669 raw_wb + 3.8224))`` (clean against itself: 4.644). The package has no option
returning the raw score, so :func:`pesq_nb_raw` inverts the P.862.1 mapping. It also reproduces pypesq's
input handling (joint scaling only if the peak exceeds 1, then ``(x * 32767).astype(int16)``, i.e.
truncation): with it, the raw score equals pypesq 1.2.4's to within 1e-6 on 96 speech+noise pairs at
various SNRs and levels; without it the two differ by up to 0.04 on quiet signals (int16 quantisation
noise). ``pesq_nb`` and ``pesq_wb`` are the ``pesq`` package's outputs on the float signals as they are.

Optional packages are imported when first needed; a missing one raises :class:`MissingDependencyError`
with one line naming the extra to install.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import os
import warnings
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

EPS = float(np.finfo(np.float64).eps)
SAMPLE_RATE = 16000
"""Rate every metric of :func:`compute_metrics` is computed at (inputs at other rates are resampled)."""

INTRUSIVE = ("si_sdr", "pesq_nb_raw", "pesq_nb", "pesq_wb", "estoi")
NEEDS_NOISY = ("si_sir", "si_sar")
DNSMOS = ("dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl")
ALL = ("pesq_nb_raw", "pesq_nb", "pesq_wb", "estoi", "si_sdr", "si_sir", "si_sar") + DNSMOS
"""Every metric name, in the order reports list them."""
GROUPS = {"pesq": ("pesq_nb_raw", "pesq_nb", "pesq_wb"), "dnsmos": DNSMOS, "all": ALL}
"""Shorthands accepted by :func:`resolve_metrics`."""

EVAL_EXTRA_HINT = 'pip install -e ".[eval]"'


class MetricError(ValueError):
    """A metric cannot be computed for this input (too short, silent, no speech found, ...)."""


class MissingDependencyError(ImportError):
    """An optional package a metric needs is not installed; the message says how to install it."""


class MetricScores(dict):
    """``{metric name: float}`` as returned by :func:`compute_metrics`, plus ``errors``: for every metric
    that failed (value NaN), ``{name: one-line reason}``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.errors: dict[str, str] = {}


# --------------------------------------------------------------------------------------------------
# Input handling


def _as_signal(x, what: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim > 1:
        a = np.squeeze(a)
    if a.ndim != 1:
        raise ValueError(f"{what}: expected a 1-D signal, got shape {np.shape(x)}")
    if a.size == 0:
        raise ValueError(f"{what}: empty signal")
    if not np.issubdtype(a.dtype, np.number) or np.iscomplexobj(a):
        raise ValueError(f"{what}: expected real numbers, got dtype {a.dtype}")
    a = a.astype(np.float64, copy=False)
    if not np.isfinite(a).all():
        raise ValueError(f"{what}: {int(a.size - np.count_nonzero(np.isfinite(a)))} non-finite samples")
    return a


def _align(*signals):
    """The signals as float64 vectors cut to the shortest length."""
    arrs = [np.asarray(s, np.float64).ravel() for s in signals]
    n = min(a.size for a in arrs)
    return tuple(a[:n] for a in arrs)


def _import(module: str, purpose: str, extra: str | None):
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        how = EVAL_EXTRA_HINT if extra == "eval" else f'pip install {module} (or reinstall jaxse: pip install -e .)'
        raise MissingDependencyError(f"{purpose} needs the package {module!r}, which is not installed: {how}") from exc


# --------------------------------------------------------------------------------------------------
# Scale-invariant energy ratios


def si_sdr(est, ref) -> float:
    """Scale-invariant signal-to-distortion ratio (dB) of ``est`` against the clean ``ref``.

    Follows the reference evaluation code exactly: α = (⟨ŝ, s⟩ + ε)/(‖s‖² + ε),
    SI-SDR = 10·log10((‖αs‖² + ε)/(‖αs − ŝ‖² + ε)), ε = float64 eps, no mean removal,
    both signals cut to the shorter length.
    """
    est, ref = _align(est, ref)
    alpha = (np.dot(est, ref) + EPS) / (np.dot(ref, ref) + EPS)
    target = alpha * ref
    return float(10.0 * np.log10((np.dot(target, target) + EPS) / (np.sum((target - est) ** 2) + EPS)))


SI_METHODS = ("reference", "span")


def si_decomposition(est, ref, noisy, method: str = "reference") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split ``est`` into ``(e_target, e_interf, e_artif)`` (they sum to ``est``) using the clean ``ref`` = s
    and the noise n = ``noisy`` − s; all three signals are first cut to the shortest length.

    ``method="reference"`` (default) is fast_UdiffSE's ``si_sdr_components``: e_target = (⟨ŝ,s⟩/‖s‖²)·s,
    e_interf = (⟨ŝ,n⟩/‖n‖²)·n, two separate orthogonal projections, e_artif = ŝ − e_target − e_interf.

    ``method="span"`` is the BSS-eval style split: e_target as above, e_interf = (projection of ŝ onto
    span{s, n}) − e_target, e_artif = ŝ − (that projection), so e_artif ⟂ s, n. The two agree when s ⟂ n and
    differ by the correlation of s and n otherwise (small for real speech and noise).

    The projection denominators are guarded with ε (float64 eps): a silent n gives e_interf = 0.
    """
    if method not in SI_METHODS:
        raise ValueError(f"unknown SI-SIR/SAR method {method!r}; choose one of {SI_METHODS}")
    est, ref, noisy = _align(est, ref, noisy)
    noise = noisy - ref
    target = np.dot(est, ref) / (np.dot(ref, ref) + EPS) * ref
    if method == "reference":
        interf = np.dot(est, noise) / (np.dot(noise, noise) + EPS) * noise
        return target, interf, est - target - interf
    basis = np.stack([ref, noise], axis=1)
    coef, *_ = np.linalg.lstsq(basis, est, rcond=None)  # rank-deficient (n = 0 or n ∥ s) handled
    proj = basis @ coef
    return target, proj - target, est - proj


def _db_ratio(num: np.ndarray, den: np.ndarray) -> float:
    return float(10.0 * np.log10((np.dot(num, num) + EPS) / (np.dot(den, den) + EPS)))


def si_sir(est, ref, noisy, method: str = "reference") -> float:
    """Scale-invariant signal-to-interference ratio (dB): 10·log10(‖e_target‖²/‖e_interf‖²) with the
    decomposition of :func:`si_decomposition` (ε added to both energies)."""
    target, interf, _ = si_decomposition(est, ref, noisy, method)
    return _db_ratio(target, interf)


def si_sar(est, ref, noisy, method: str = "reference") -> float:
    """Scale-invariant signal-to-artefact ratio (dB), ε added to both energies.

    ``method="reference"`` (fast_UdiffSE): 10·log10(‖e_target‖²/‖e_artif‖²).
    ``method="span"`` (BSS-eval style): 10·log10(‖e_target + e_interf‖²/‖e_artif‖²).
    """
    target, interf, artif = si_decomposition(est, ref, noisy, method)
    return _db_ratio(target if method == "reference" else target + interf, artif)


# --------------------------------------------------------------------------------------------------
# PESQ

P862_1 = (1.4945, 4.6607)
"""P.862.1 mapping: MOS-LQO = 0.999 + 4 / (1 + exp(-a·raw + b)) with (a, b) = P862_1."""
P862_2 = (1.3669, 3.8224)
"""P.862.2 (wide-band) mapping, same form."""


def mos_lqo_from_raw(raw, mapping=P862_1):
    """P.862.1 (default) or P.862.2 MOS-LQO of a raw PESQ score."""
    a, b = mapping
    return 0.999 + 4.0 / (1.0 + np.exp(-a * np.asarray(raw, np.float64) + b))


def raw_from_mos_lqo(mos, mapping=P862_1):
    """Inverse of :func:`mos_lqo_from_raw`: raw = (b − ln(4/(MOS − 0.999) − 1))/a, for 0.999 < MOS < 4.999."""
    a, b = mapping
    m = np.asarray(mos, np.float64)
    if np.any((m <= 0.999) | (m >= 4.999)):
        raise ValueError(f"MOS-LQO {mos} is outside the range (0.999, 4.999) of the mapping")
    return (b - np.log(4.0 / (m - 0.999) - 1.0)) / a


def _pesq_call(fs: int, ref: np.ndarray, est: np.ndarray, mode: str) -> float:
    pesq = _import("pesq", "PESQ", extra=None)
    if fs not in (8000, 16000) or (mode == "wb" and fs != 16000):
        raise MetricError(f"PESQ {mode} needs 16 kHz{' or 8 kHz' if mode == 'nb' else ''} audio, got {fs} Hz")
    if not np.any(ref) or not np.any(est):
        raise MetricError(f"PESQ: the {'reference' if not np.any(ref) else 'degraded'} signal is silent (all zeros)")
    try:
        return float(pesq.pesq(fs, ref, est, mode))
    except pesq.PesqError as exc:  # no utterances detected, buffer too short, ...
        raise MetricError(f"PESQ {mode}: {_reason(exc)}") from exc


def _reason(exc: BaseException) -> str:
    text = exc.args[0] if exc.args else ""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    text = " ".join(str(text).split())
    return text or type(exc).__name__


def pesq_wb(est, ref, fs: int = SAMPLE_RATE) -> float:
    """Wide-band PESQ, ITU-T P.862.2 MOS-LQO (range about 1.04 to 4.64): ``pesq.pesq(fs, ref, est, 'wb')``
    on the float signals (the package scales both by their joint peak). 16 kHz only.
    Raises :class:`MetricError` if PESQ fails (e.g. "No utterances detected", shorter than 1/4 s)."""
    est, ref = _align(est, ref)
    return _pesq_call(int(fs), ref, est, "wb")


def pesq_nb(est, ref, fs: int = SAMPLE_RATE) -> float:
    """Narrow-band PESQ, ITU-T P.862.1 MOS-LQO (range about 1.02 to 4.55): ``pesq.pesq(fs, ref, est, 'nb')``
    on the float signals. 8 or 16 kHz. Raises :class:`MetricError` if PESQ fails."""
    est, ref = _align(est, ref)
    return _pesq_call(int(fs), ref, est, "nb")


def _pypesq_int16(ref: np.ndarray, est: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """pypesq's input handling: divide both by their joint peak only if it exceeds 1, then ×32767 and
    truncate to int16 (returned as float64 holding the integer values)."""
    peak = max(float(np.max(np.abs(ref))), float(np.max(np.abs(est))))
    if peak > 1.0:
        ref, est = ref * (1.0 / peak), est * (1.0 / peak)
    return (ref * 32767).astype(np.int16).astype(np.float64), (est * 32767).astype(np.int16).astype(np.float64)


def pesq_nb_raw(est, ref, fs: int = SAMPLE_RATE) -> float:
    """Raw ITU-T P.862 narrow-band PESQ (range −0.5 to 4.5), the score the UDiffSE papers report as "PESQ"
    (they call ``pypesq.pesq(ref, est, 16000)``).

    The ``pesq`` package only returns the P.862.1 MOS-LQO, so this quantises the signals as pypesq does
    (joint scaling if the peak exceeds 1, ``(x * 32767).astype(int16)``), runs ``pesq.pesq(fs, ref, est,
    'nb')`` and inverts the P.862.1 mapping (:func:`raw_from_mos_lqo`). Both packages wrap the same ITU
    P.862 (2005) C code; the result matches pypesq 1.2.4 to within 1e-6 (float32 rounding of the mapping).
    Raises :class:`MetricError` if PESQ fails or a signal quantises to all zeros.
    """
    est, ref = _align(est, ref)
    ref_q, est_q = _pypesq_int16(ref, est)
    return float(raw_from_mos_lqo(_pesq_call(int(fs), ref_q, est_q, "nb")))


# --------------------------------------------------------------------------------------------------
# ESTOI


def estoi(est, ref, fs: int = SAMPLE_RATE) -> float:
    """Extended STOI in [0, 1] (about): ``pystoi.stoi(ref, est, fs, extended=True)``.

    pystoi returns 1e-5 with a warning when fewer than 30 frames (≈ 0.39 s) of speech remain after its
    silent-frame removal; here that case raises :class:`MetricError` instead (NaN in :func:`compute_metrics`),
    so that it does not pull means down.
    """
    pystoi = _import("pystoi", "ESTOI", extra=None)
    est, ref = _align(est, ref)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = float(pystoi.stoi(ref, est, int(fs), extended=True))
    for w in caught:
        if "Not enough STFT frames" in str(w.message):
            raise MetricError("ESTOI: not enough speech frames (fewer than 30 after silence removal)")
    if not math.isfinite(value):
        raise MetricError("ESTOI: not finite (silent signal?)")
    return value


# --------------------------------------------------------------------------------------------------
# DNSMOS P.835

DNSMOS_MIN_SECONDS = 2.0
"""Clips shorter than this are not scored (the reference returns 0 for them)."""
DNSMOS_WINDOW_SECONDS = 9
DNSMOS_COEFS = {
    "sig": (0.9651228012789436761, 0.6592637550310214145, 0.07572372955623894730),
    "bak": (-3.733460011101781717, 2.700114234092929166, -0.1721332907340922813),
    "ovrl": (0.8924546794696789354, 0.6609981731940616223, 0.07600269530243179694),
}
"""Quadratic maps of the raw network outputs, ascending order: MOS = c0 + c1·r + c2·r² (the reference
calls ``numpy.polynomial.polynomial.polyval``, whose coefficients go from the constant term up; note that
``numpy.polyval`` would read them the other way round)."""
DNSMOS_MODEL_FILES = ("sig.onnx", "bak_ovr.onnx")
SHORT_CLIP_MODES = ("nan", "reference")
_DNSMOS_BATCH = 16  # 9 s windows per onnxruntime call (bounds memory on long files)


class ShortClipError(MetricError):
    """The clip is shorter than :data:`DNSMOS_MIN_SECONDS`."""


def dnsmos_model_dir() -> Path:
    """Folder holding ``sig.onnx`` and ``bak_ovr.onnx``: ``$JAXSE_DNSMOS_DIR`` if set, else the
    ``dnsmos_models`` folder of the installed ``speechmos`` package (located without importing it: its
    ``dnsmos`` module needs librosa, which we do not)."""
    env = os.environ.get("JAXSE_DNSMOS_DIR")
    if env:
        d = Path(env)
    else:
        spec = importlib.util.find_spec("speechmos")
        if spec is None or not spec.submodule_search_locations:
            raise MissingDependencyError(
                f"DNSMOS needs the ONNX models of the package 'speechmos', which is not installed: {EVAL_EXTRA_HINT}")
        d = Path(list(spec.submodule_search_locations)[0]) / "dnsmos_models"
    missing = [f for f in DNSMOS_MODEL_FILES if not (d / f).is_file()]
    if missing:
        raise MissingDependencyError(f"DNSMOS model files {', '.join(missing)} not found in {d}")
    return d


_SESSIONS: dict = {}


def _dnsmos_sessions():
    """``(sig, bak_ovr)`` onnxruntime sessions, created once per process (1 intra-op and 1 inter-op thread:
    parallelism comes from running files in separate processes)."""
    key = os.getpid()
    if key not in _SESSIONS:
        ort = _import("onnxruntime", "DNSMOS", extra="eval")
        d = dnsmos_model_dir()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        _SESSIONS.clear()
        _SESSIONS[key] = tuple(
            ort.InferenceSession(str(d / f), sess_options=opts, providers=["CPUExecutionProvider"])
            for f in DNSMOS_MODEL_FILES)
    return _SESSIONS[key]


_METERS: dict = {}


def dnsmos_normalize(x, fs: int = SAMPLE_RATE) -> np.ndarray:
    """The reference preprocessing: remove the mean, scale the peak to 0.7 (÷ (peak + 1e-9)), then
    loudness-normalise to −30 LUFS with pyloudnorm (ITU-R BS.1770 meter at ``fs``)."""
    pyln = _import("pyloudnorm", "DNSMOS", extra="eval")
    x = np.asarray(x, np.float64)
    x = x - np.mean(x)
    peak = float(np.max(np.abs(x)))
    if peak == 0.0:
        raise MetricError("DNSMOS: silent signal")
    x = x / (peak + 1e-9) * 0.7
    meter = _METERS.get(fs)
    if meter is None:
        meter = _METERS[fs] = pyln.Meter(fs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pyloudnorm warns about possible clipping; the reference ignores it
        loudness = meter.integrated_loudness(x)
        if not math.isfinite(loudness):
            raise MetricError("DNSMOS: loudness cannot be measured (signal too quiet or too short)")
        return pyln.normalize.loudness(x, loudness, -30.0)


def dnsmos_features(segment: np.ndarray) -> np.ndarray:
    """log10 STFT power of one 9 s window, ``(901, 161)`` float32, computed like librosa 0.9.1's
    ``stft(y, n_fft=320, hop_length=160)`` (the reference's version): periodic Hann window of 320, centred
    frames with 160 zeros of padding at both ends (librosa ≥ 0.9 pads with zeros, ``pad_mode='constant'``),
    power floored at 1e-12 before the log."""
    n_fft, hop = 320, 160
    padded = np.pad(np.asarray(segment, np.float64), n_fft // 2)
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop]
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n_fft) / n_fft)
    power = np.abs(np.fft.rfft(frames * window, axis=-1)) ** 2
    return np.log10(np.maximum(power, 1e-12)).astype(np.float32)


def _dnsmos_scores(x, fs: int) -> dict[str, float]:
    if int(fs) != SAMPLE_RATE:
        raise MetricError(f"DNSMOS needs {SAMPLE_RATE} Hz audio, got {fs} Hz")
    x = np.asarray(x, np.float64).ravel()
    if x.size < DNSMOS_MIN_SECONDS * fs:
        raise ShortClipError(f"DNSMOS: clip of {x.size / fs:.2f} s is shorter than {DNSMOS_MIN_SECONDS:g} s")
    sig_sess, bak_ovr_sess = _dnsmos_sessions()
    audio = dnsmos_normalize(x, fs)
    win = DNSMOS_WINDOW_SECONDS * fs
    while audio.size < win:  # the reference doubles the clip until it covers one window
        audio = np.concatenate([audio, audio])
    num_windows = int(np.floor(audio.size / fs) - DNSMOS_WINDOW_SECONDS) + 1
    raw_sig, raw_bak, raw_ovr = [], [], []
    for start in range(0, num_windows, _DNSMOS_BATCH):
        idx = range(start, min(start + _DNSMOS_BATCH, num_windows))
        feats = np.stack([dnsmos_features(audio[i * fs: i * fs + win]) for i in idx])
        sig = sig_sess.run(None, {sig_sess.get_inputs()[0].name: feats})[0]
        bak_ovr = bak_ovr_sess.run(None, {bak_ovr_sess.get_inputs()[0].name: feats})[0]
        raw_sig.append(sig[:, 0])
        raw_bak.append(bak_ovr[:, 1])
        raw_ovr.append(bak_ovr[:, 2])
    out = {}
    for name, raw in (("sig", raw_sig), ("bak", raw_bak), ("ovrl", raw_ovr)):
        mos = np.polynomial.polynomial.polyval(np.concatenate(raw).astype(np.float64), DNSMOS_COEFS[name])
        out[name] = float(np.mean(mos))
    return out


def dnsmos(x, fs: int = SAMPLE_RATE, short_clip: str = "nan") -> dict[str, float]:
    """DNSMOS P.835 scores ``{"sig", "bak", "ovrl"}`` (about 1 to 5) of a 16 kHz clip, non-intrusive.

    Model variant: the first P.835 release, ``sig.onnx`` + ``bak_ovr.onnx`` from the ``speechmos`` package
    (its ``dnsmos_models`` folder), which take log-power spectrogram features of 9 s windows, shape
    ``(N, 901, 161)``. These are the models and the polynomial fits (:data:`DNSMOS_COEFS`) of the UDiffSE
    reference evaluation, so the scores are comparable with the papers. speechmos' own ``dnsmos.run`` uses
    the later ``sig_bak_ovr.onnx`` (raw audio windows of 9.01 s, other polynomial fits, needs librosa) and
    gives different numbers; it is not used.

    Processing, as the reference: :func:`dnsmos_normalize` (mean removal, peak 0.7, −30 LUFS); a clip
    shorter than 9 s is repeated (doubled until it is at least 9 s long); 9 s windows every 1 s
    (``floor(len/fs) − 9 + 1`` of them); features :func:`dnsmos_features`; SIG from ``sig.onnx``, BAK and
    OVRL from outputs 1 and 2 of ``bak_ovr.onnx``; each mapped by its quadratic and averaged over windows.

    Clips shorter than 2 s: ``short_clip="nan"`` (default) gives NaN for all three (excluded from means and
    counted by the evaluation report); ``short_clip="reference"`` gives 0.0 like the reference code (whose
    caller then crashes, spec (j).16). Raises :class:`MetricError` for a silent clip and
    :class:`MissingDependencyError` without the ``eval`` extra.
    """
    if short_clip not in SHORT_CLIP_MODES:
        raise ValueError(f"short_clip must be one of {SHORT_CLIP_MODES}, got {short_clip!r}")
    try:
        return _dnsmos_scores(x, fs)
    except ShortClipError:
        value = math.nan if short_clip == "nan" else 0.0
        return {"sig": value, "bak": value, "ovrl": value}


# --------------------------------------------------------------------------------------------------
# All at once


def resolve_metrics(names: str | Iterable[str] | None) -> tuple[str, ...]:
    """Metric names (in :data:`ALL` order, duplicates removed) from names or :data:`GROUPS` shorthands,
    given as an iterable or one comma/space separated string; ``None`` means :data:`ALL`."""
    if names is None:
        return ALL
    if isinstance(names, str):
        names = names.replace(",", " ").split()
    chosen: set[str] = set()
    for n in names:
        key = n.strip().lower().replace("-", "_")
        if key in GROUPS:
            chosen.update(GROUPS[key])
        elif key in ALL:
            chosen.add(key)
        else:
            raise ValueError(f"unknown metric {n!r}; choose from {', '.join(ALL)} or {', '.join(GROUPS)}")
    if not chosen:
        raise ValueError("no metric chosen")
    return tuple(m for m in ALL if m in chosen)


def check_dependencies(metrics: Sequence[str]) -> None:
    """Raise :class:`MissingDependencyError` now if a package one of ``metrics`` needs is missing."""
    metrics = set(metrics)
    if metrics & {"pesq_nb_raw", "pesq_nb", "pesq_wb"}:
        _import("pesq", "PESQ", extra=None)
    if "estoi" in metrics:
        _import("pystoi", "ESTOI", extra=None)
    if metrics & set(DNSMOS):
        _import("onnxruntime", "DNSMOS", extra="eval")
        _import("pyloudnorm", "DNSMOS", extra="eval")
        dnsmos_model_dir()


def compute_metrics(est, clean=None, noisy=None, sample_rate: int = SAMPLE_RATE, metrics=None,
                    short_clip: str = "nan", si_method: str = "reference") -> MetricScores:
    """Score one enhanced utterance ``est`` against the ``clean`` reference (and the ``noisy`` mixture).

    * ``metrics``: names or groups (see :func:`resolve_metrics`); ``None`` means every metric the inputs
      allow: all of :data:`ALL`, less SI-SIR/SI-SAR without ``noisy`` and the intrusive ones without
      ``clean``. Asking explicitly for a metric whose input is missing raises ``ValueError``.
    * Inputs at another ``sample_rate`` are resampled to 16 kHz first (:func:`jaxse.audio.resample`), then
      cut to the shortest length.
    * Empty, multi-channel or non-finite input raises ``ValueError`` (a usage error). A metric that cannot
      be computed for this input (PESQ finds no utterance, DNSMOS clip < 2 s, ...) gives NaN and its reason
      in ``result.errors``. A missing optional package raises :class:`MissingDependencyError`.

    Returns a :class:`MetricScores` (a ``dict[str, float]`` in :data:`ALL` order with ``.errors``).
    """
    explicit = metrics is not None
    names = resolve_metrics(metrics)
    if not explicit:
        names = tuple(m for m in names if (clean is not None or m in DNSMOS)
                      and (noisy is not None or m not in NEEDS_NOISY))
    missing_in = [m for m in names if (m in INTRUSIVE + NEEDS_NOISY and clean is None)
                  or (m in NEEDS_NOISY and noisy is None)]
    if missing_in:
        raise ValueError(f"{', '.join(missing_in)} need{'s' if len(missing_in) == 1 else ''} the "
                         f"{'noisy mixture' if clean is not None else 'clean reference'}")
    sample_rate = int(sample_rate)
    if sample_rate <= 0:
        raise ValueError(f"invalid sample rate {sample_rate}")
    sigs = {"estimate": _as_signal(est, "estimate")}
    if clean is not None:
        sigs["clean"] = _as_signal(clean, "clean")
    if noisy is not None:
        sigs["noisy"] = _as_signal(noisy, "noisy")
    if sample_rate != SAMPLE_RATE:
        from jaxse.audio import resample

        sigs = {k: resample(v, sample_rate, SAMPLE_RATE).astype(np.float64) for k, v in sigs.items()}
    n = min(v.size for v in sigs.values())
    if n == 0:
        raise ValueError("signals are empty after resampling")
    sigs = {k: v[:n] for k, v in sigs.items()}
    e, s, x, fs = sigs["estimate"], sigs.get("clean"), sigs.get("noisy"), SAMPLE_RATE

    out = MetricScores()

    def run(name, fn):
        try:
            out[name] = float(fn())
        except MetricError as exc:
            out[name] = math.nan
            out.errors[name] = str(exc)

    for name in names:
        if name in DNSMOS:
            continue
        if name == "si_sdr":
            run(name, lambda: si_sdr(e, s))
        elif name == "si_sir":
            run(name, lambda: si_sir(e, s, x, si_method))
        elif name == "si_sar":
            run(name, lambda: si_sar(e, s, x, si_method))
        elif name == "pesq_nb_raw":
            run(name, lambda: pesq_nb_raw(e, s, fs))
        elif name == "pesq_nb":
            run(name, lambda: pesq_nb(e, s, fs))
        elif name == "pesq_wb":
            run(name, lambda: pesq_wb(e, s, fs))
        elif name == "estoi":
            run(name, lambda: estoi(e, s, fs))
    wanted = [m for m in names if m in DNSMOS]
    if wanted:
        if short_clip not in SHORT_CLIP_MODES:
            raise ValueError(f"short_clip must be one of {SHORT_CLIP_MODES}, got {short_clip!r}")
        try:
            scores = _dnsmos_scores(e, fs)
        except ShortClipError as exc:
            value = math.nan if short_clip == "nan" else 0.0
            scores = {"sig": value, "bak": value, "ovrl": value}
            if short_clip == "nan":
                out.errors.update({m: str(exc) for m in wanted})
        except MetricError as exc:
            scores = {"sig": math.nan, "bak": math.nan, "ovrl": math.nan}
            out.errors.update({m: str(exc) for m in wanted})
        for m in wanted:
            out[m] = scores[m[len("dnsmos_"):]]
    ordered = MetricScores((m, out[m]) for m in names)
    ordered.errors = {m: out.errors[m] for m in names if m in out.errors}
    return ordered
