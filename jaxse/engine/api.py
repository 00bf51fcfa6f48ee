"""One call from Python: :func:`enhance_audio` (also ``jaxse.enhance(...)``) enhances one recording, with an
engine per settings kept between calls (its compiled programs reused)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jaxse import registry
from jaxse.audio import read_audio, resample
from jaxse.engine.batch import Enhancer
from jaxse.engine.files import fit_length
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


def _read_input(audio, sample_rate: int | None) -> tuple[np.ndarray, int, str]:
    """``(wave, sample rate, uid)`` of a path or an array (channels averaged); ``ValueError`` for a bad one."""
    if isinstance(audio, (str, Path)) or hasattr(audio, "__fspath__"):
        a = read_audio(audio)
        if sample_rate is not None and int(sample_rate) != a.sample_rate:
            raise ValueError(f"{audio}: the file is at {a.sample_rate} Hz, not sample_rate={sample_rate}")
        return a.samples, a.sample_rate, Path(audio).name
    if sample_rate is None:
        raise ValueError("an array needs its sample_rate")
    wave = np.asarray(audio, dtype=np.float32)
    if wave.ndim == 2:
        wave = wave.mean(axis=1, dtype=np.float64).astype(np.float32)
    if wave.ndim != 1 or wave.size == 0:
        raise ValueError(f"expected a non-empty (n,) or (n, channels) array, got shape {np.shape(audio)}")
    if not np.isfinite(wave).all():
        raise ValueError("the array holds NaN or Inf samples")
    sr = int(sample_rate)
    if sr <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    return wave, sr, "audio"


def enhance_audio(audio, sample_rate: int | None = None, method: str = "udiffse+", checkpoint=None, seed: int = 0, *,
                  config: dict | None = None, batch_size: int = 1, chunk_frames: int = 1024,
                  dtype: str | None = None, visual=None) -> np.ndarray:
    """Enhance one recording and return it: float32, at its own sample rate and length (mono).

    Also callable as ``jaxse.enhance(...)`` (the module is callable). ``audio``: a path (any format libsndfile
    reads; ``sample_rate`` must then be ``None`` or the file's rate) or an array, ``(n,)`` or ``(n, channels)``
    (channels are averaged), with its ``sample_rate``. ``method``: one of :data:`jaxse.registry.METHODS`;
    ``checkpoint``: ``None`` for the shipped model of the method; ``config``: fields of the method's settings (on
    top of the checkpoint's ``sampler_settings.json``, as ``enhance.py --config.FIELD``). The engine (model,
    settings and compiled programs) is kept between calls with the same settings, so only the first call of a
    shape bucket compiles. ``dtype="bfloat16"``: the network's compute dtype (for accelerators, where the
    method's network has the option). The result for a file equals ``enhance.py FILE`` with the same ``--seed``
    (the noise key comes from the seed and the file name; arrays use the name ``"audio"``). ``visual``: the
    conditioning input of a method that takes one (the audio-visual ``av-udiffse``, ``av-udiffse+``: visual
    features, an array ``(frames, dim)`` at 25 fps or a ``.npy`` path, read by the backend's
    :meth:`~jaxse.core.backend.MethodBackend.load_conditioning`). Errors: ``ValueError`` (bad input or settings,
    ``visual`` missing or given to another method), :class:`jaxse.audio.AudioError` (unreadable file),
    :class:`jaxse.core.backend.CheckpointError`.
    """
    wave, sr, uid = _read_input(audio, sample_rate)
    audio_visual = registry.method(method).conditioning is not None
    if audio_visual != (visual is not None):
        raise ValueError(f"{method} needs visual= (the features of the recording)" if audio_visual
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
    return fit_length(y, wave.shape[0])
