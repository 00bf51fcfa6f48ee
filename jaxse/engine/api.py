"""One call from Python: :func:`enhance_audio` (also ``jaxse.enhance(...)``) enhances one recording, with an
engine per settings kept between calls (its compiled programs reused)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from jaxse import registry
from jaxse.audio import read_audio, resample
from jaxse.engine.batch import Enhancer
from jaxse.engine.files import fit_length, peak_warning
from jaxse.errors import InputError
from jaxse.engine.methods import checkpoint_settings, load_backend, make_config

_ENGINES: dict[tuple, Enhancer] = {}


def _engine(method: str, checkpoint, seed: int, config: dict | None, batch_size: int, chunk_frames: int,
            dtype: str | None) -> Enhancer:
    """The :class:`Enhancer` of these settings, built on first use and kept (with its compiled programs)."""
    fields = dict(config or {})
    key = (method, None if checkpoint is None else str(Path(checkpoint).resolve()), int(seed),
           tuple(sorted((k, repr(v)) for k, v in fields.items())), int(batch_size), int(chunk_frames), dtype)
    if key not in _ENGINES:
        cfg = make_config(method, **{**checkpoint_settings(method, checkpoint), **fields})
        backend = load_backend(method, checkpoint, cfg, dtype)
        _ENGINES[key] = Enhancer(backend, batch_size=batch_size, chunk_frames=chunk_frames, seed=seed)
    return _ENGINES[key]


MIN_SAMPLE_RATE = 4000
MAX_SAMPLE_RATE = 768000
MAX_CHANNELS = 8  # an array (c, n) with c <= MAX_CHANNELS < n is taken for channels-first and refused


def _as_float(audio) -> np.ndarray:
    """Samples as float32 in [-1, 1]: floating point as given; integer PCM divided by its type's full scale, as
    soundfile reads it (int8 / 2^7, int16 / 2^15, int32 / 2^31, int64 / 2^63), unsigned centred first (uint8:
    (x - 128) / 128, as 8-bit WAV); anything else (bool, complex, objects) refused."""
    a = np.asarray(audio)
    if np.issubdtype(a.dtype, np.floating):
        return a.astype(np.float32, copy=False)
    if np.issubdtype(a.dtype, np.integer):
        info = np.iinfo(a.dtype)
        half = 2.0 ** (info.bits - 1)
        centre = half if info.min == 0 else 0.0
        return ((a.astype(np.float64) - centre) / half).astype(np.float32)
    raise InputError(f"expected real samples (float, or integer PCM), got an array of dtype {a.dtype}")


def _read_input(audio, sample_rate: int | None) -> tuple[np.ndarray, int, str]:
    """``(wave, sample rate, uid)`` of a path or an array (channels averaged); :class:`InputError` (a
    ``ValueError``) for a bad one."""
    if isinstance(audio, (str, Path)) or hasattr(audio, "__fspath__"):
        a = read_audio(audio)
        if sample_rate is not None and int(sample_rate) != a.sample_rate:
            raise InputError(f"{audio}: the file is at {a.sample_rate} Hz, not sample_rate={sample_rate}")
        return a.samples, a.sample_rate, Path(audio).name
    if sample_rate is None:
        raise InputError("an array needs its sample_rate")
    if not isinstance(sample_rate, (int, np.integer, float, np.floating)) or isinstance(sample_rate, bool) \
            or not float(sample_rate).is_integer():
        raise InputError(f"sample_rate must be a whole number of Hz, got {sample_rate!r}")
    sr = int(sample_rate)
    if not MIN_SAMPLE_RATE <= sr <= MAX_SAMPLE_RATE:
        raise InputError(f"sample_rate={sample_rate} is outside {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz (it is in "
                         "Hz: 16 kHz is sample_rate=16000)")
    wave = _as_float(audio)
    if wave.ndim == 2 and wave.shape[0] <= MAX_CHANNELS < wave.shape[1]:
        raise InputError(f"an array of shape {wave.shape} looks like (channels, n): pass (n,) or (n, channels), "
                         "e.g. audio.T")
    if wave.ndim == 2:
        wave = wave.mean(axis=1, dtype=np.float64).astype(np.float32)
    if wave.ndim != 1 or wave.size == 0:
        raise InputError(f"expected a non-empty (n,) or (n, channels) array, got shape {np.shape(audio)}")
    if not np.isfinite(wave).all():
        raise InputError("the array holds NaN or Inf samples")
    return wave, sr, "audio"


def enhance_audio(audio, sample_rate: int | None = None, method: str = "udiffse+", checkpoint=None, seed: int = 0, *,
                  config: dict | None = None, batch_size: int = 1, chunk_frames: int = 1024,
                  dtype: str | None = None, visual=None) -> np.ndarray:
    """Enhance one recording and return it: float32, at its own sample rate and length (mono).

    Also callable as ``jaxse.enhance(...)`` (the module is callable). ``audio``: a path (any format libsndfile
    reads; ``sample_rate`` must then be ``None`` or the file's rate) or an array, ``(n,)`` or ``(n, channels)``
    (channels are averaged), with its ``sample_rate`` in Hz (4000 to 768000). Float arrays are samples in
    [-1, 1]; integer arrays are PCM, divided by their type's full scale as soundfile reads files (int16 / 32768,
    int32 / 2^31, uint8 as (x - 128) / 128); an array ``(channels, n)`` (at most 8 rows, more columns) is
    refused with a hint to transpose it. ``method``: one of :data:`jaxse.registry.METHODS`;
    ``checkpoint``: ``None`` for the shipped model of the method; ``config``: fields of the method's settings (on
    top of the checkpoint's ``sampler_settings.json``, as ``enhance.py --config.FIELD``). The engine (model,
    settings and compiled programs) is kept between calls with the same settings, so only the first call of a
    shape bucket compiles. ``dtype="bfloat16"``: the network's compute dtype (for accelerators, where the
    method's network has the option). The result for a file equals ``enhance.py FILE`` with the same ``--seed``
    (the noise key comes from the seed and the file name; arrays use the name ``"audio"``). ``visual``: the
    conditioning input of a method that takes one (the audio-visual ``av-udiffse``, ``av-udiffse+``: visual
    features, an array ``(frames, dim)`` at 25 fps or a ``.npy`` path, read by the backend's
    :meth:`~jaxse.core.backend.MethodBackend.load_conditioning`).

    An output whose peak is implausibly far above the input's (:func:`jaxse.engine.files.peak_warning`, as the
    CLI flags; usually a diverged sampler, e.g. too few ``num_steps``) is clipped to [-1, 1] and reported with a
    ``RuntimeWarning`` (:func:`warnings.warn`), as ``enhance.py`` clips and warns.

    Errors, all :class:`jaxse.JaxseError` (catch that to catch them all): :class:`jaxse.errors.InputError` (a
    ``ValueError``: a bad array, rate or ``visual``), :class:`jaxse.errors.SettingsError` (a ``ValueError``: a bad
    settings value), :class:`jaxse.errors.UnknownFieldError` (a ``TypeError``: a field the method's settings do
    not have), :class:`jaxse.registry.RegistryError` (a ``ValueError``: an unknown method),
    :class:`jaxse.audio.AudioError` (an unreadable file), :class:`jaxse.core.backend.CheckpointError` (an
    unusable checkpoint).
    """
    wave, sr, uid = _read_input(audio, sample_rate)
    audio_visual = registry.method(method).conditioning is not None
    if audio_visual != (visual is not None):
        raise InputError(f"{method} needs visual= (the features of the recording)" if audio_visual
                         else f"visual= is for the audio-visual methods, not {method}")
    engine = _engine(method, checkpoint, seed, config, batch_size, chunk_frames, dtype)
    rate = int(engine.spec.sample_rate)
    x = wave if sr == rate else resample(wave, sr, rate)
    conds = None
    if audio_visual:
        if isinstance(visual, (str, Path)):
            conds = [engine.backend.load_conditioning(Path(visual).parent, Path(visual).name)]
        else:
            conds = [np.asarray(visual, np.float32)]
    y = engine.enhance([x], uids=[uid], conds=conds)[0]
    if sr != rate:
        y = resample(y, rate, sr)
    y = fit_length(y, wave.shape[0])
    peak = float(np.max(np.abs(y))) if y.size else 0.0
    warning = peak_warning(peak, float(np.max(np.abs(wave))), clipped=peak > 1.0)
    if warning:  # a diverged sampler: clipped and reported, as enhance.py does
        warnings.warn(f"jaxse.enhance: {warning}", RuntimeWarning, stacklevel=2)
        y = np.clip(y, -1.0, 1.0)
    return y
