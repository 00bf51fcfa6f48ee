"""Audio file input/output, resampling and discovery (numpy / scipy / soundfile; no jax).

* :func:`read_audio` decodes anything libsndfile reads (WAV, FLAC, OGG, MP3, AIFF, ...), mixes
  multi-channel audio down to mono by averaging the channels, optionally resamples, and rejects
  files that are unreadable, empty or hold non-finite samples with a one-line :class:`AudioError`.
* :func:`resample` is polyphase resampling (``scipy.signal.resample_poly``) whose output length is
  exactly ``round(L * sr_out / sr_in)`` (see :func:`resampled_length`).
* :func:`write_audio` writes atomically: a hidden temporary file (:data:`PART_PATTERN`) in the target
  directory, fsync, then ``os.replace``; a failed write leaves nothing behind (and :func:`remove_stale_parts`
  removes what a killed process left). Float files get no time-stamped PEAK chunk: same samples, same bytes.
* :func:`find_audio_files` lists audio files under a directory, sorted.
* :func:`is_silent` and :func:`snr_gain`: the silence test (peak below one 16-bit LSB) and the gain that
  mixes noise into speech at a given SNR, shared by the test-set mixer and the on-the-fly mixing data set.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import secrets
from pathlib import Path
from typing import BinaryIO, Callable

import numpy as np
import soundfile as sf

from jaxse.errors import JaxseError, one_line

LSB16 = 2.0**-15
"""One least significant bit of 16-bit audio in [-1, 1): clean audio (and noise) peaking below it is silent."""
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".au")

# File extension -> libsndfile major format, passed explicitly when writing (the temporary file's
# name ends in ".part", from which soundfile could not guess the format).
_FORMAT_BY_EXTENSION = {
    ".wav": "WAV",
    ".flac": "FLAC",
    ".ogg": "OGG",
    ".oga": "OGG",
    ".opus": "OGG",
    ".mp3": "MP3",
    ".aiff": "AIFF",
    ".aif": "AIFF",
    ".aifc": "AIFF",
    ".au": "AU",
    ".snd": "AU",
    ".caf": "CAF",
    ".w64": "W64",
    ".rf64": "RF64",
}

# Subtypes that store floating-point (or lossy-coded) audio and so need no clipping on write.
_UNCLIPPED_SUBTYPES = ("FLOAT", "DOUBLE", "VORBIS", "OPUS", "MPEG_LAYER_I", "MPEG_LAYER_II", "MPEG_LAYER_III")


class AudioError(JaxseError):
    """An audio file could not be used; the message names the file and the problem on one line."""


@dataclasses.dataclass(frozen=True)
class Audio:
    """Decoded mono audio.

    ``samples`` is float32 of shape ``(L,)`` at ``sample_rate`` (after any resampling);
    ``orig_sample_rate`` and ``num_channels`` describe the file as stored.
    """

    samples: np.ndarray
    sample_rate: int
    orig_sample_rate: int
    num_channels: int
    path: str

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.samples.shape[-1] / self.sample_rate


@dataclasses.dataclass(frozen=True)
class AudioInfo:
    """Header information of an audio file (nothing decoded)."""

    num_frames: int
    sample_rate: int
    num_channels: int
    format: str
    subtype: str
    path: str

    @property
    def duration(self) -> float:
        return self.num_frames / self.sample_rate


def _existing_file(path) -> str:
    p = str(path)
    if not os.path.exists(p):
        raise AudioError(f"{p}: no such file")
    if os.path.isdir(p):
        raise AudioError(f"{p}: is a directory, not an audio file")
    if os.path.isfile(p) and os.path.getsize(p) == 0:  # libsndfile would only say "Format not recognised"
        raise AudioError(f"{p}: empty file (0 bytes), not a readable audio file")
    return p


def probe_audio(path) -> AudioInfo:
    """Read the header of an audio file without decoding it.

    Raises :class:`AudioError` if the file is missing, is not audio that libsndfile reads, or
    holds zero frames. (Non-finite samples are only found by :func:`read_audio`.)
    """
    p = _existing_file(path)
    try:
        info = sf.info(p)
    except Exception as exc:  # libsndfile errors, OSError, ...
        raise AudioError(f"{p}: not a readable audio file ({one_line(exc, None)})") from exc
    if info.frames <= 0:
        raise AudioError(f"{p}: empty audio file (0 frames)")
    if info.samplerate <= 0:
        raise AudioError(f"{p}: invalid sample rate {info.samplerate}")
    return AudioInfo(int(info.frames), int(info.samplerate), int(info.channels), info.format, info.subtype, p)


def read_audio(path, target_sr: int | None = None) -> Audio:
    """Decode an audio file to mono float32, resampled to ``target_sr`` when given.

    Channels are averaged. Raises :class:`AudioError` for a missing, unreadable or non-audio
    file, a file without samples, or one that holds NaN or Inf samples.
    """
    p = _existing_file(path)
    try:
        data, sr = sf.read(p, dtype="float32", always_2d=True)
    except Exception as exc:
        raise AudioError(f"{p}: not a readable audio file ({one_line(exc, None)})") from exc
    num_frames, num_channels = data.shape
    if num_frames == 0 or num_channels == 0:
        raise AudioError(f"{p}: empty audio file (0 frames)")
    if sr <= 0:
        raise AudioError(f"{p}: invalid sample rate {sr}")
    if num_channels == 1:
        x = np.ascontiguousarray(data[:, 0])
    else:
        x = data.mean(axis=1, dtype=np.float64).astype(np.float32)
    if not np.isfinite(x).all():
        bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
        raise AudioError(f"{p}: {bad} non-finite (NaN or Inf) samples")
    out_sr = int(sr)
    if target_sr is not None and int(target_sr) != out_sr:
        x = resample(x, out_sr, int(target_sr))
        out_sr = int(target_sr)
    return Audio(samples=x, sample_rate=out_sr, orig_sample_rate=int(sr), num_channels=int(num_channels), path=p)


def resampled_length(length: int, sr_in: int, sr_out: int) -> int:
    """``round(length * sr_out / sr_in)`` (halves round up), computed exactly in integers."""
    length, sr_in, sr_out = int(length), int(sr_in), int(sr_out)
    return (2 * length * sr_out + sr_in) // (2 * sr_in)


def resample(x, sr_in: int, sr_out: int) -> np.ndarray:
    """Polyphase resampling of ``x`` (``(..., L)``) from ``sr_in`` to ``sr_out`` Hz along the last axis.

    Uses ``scipy.signal.resample_poly`` with ``up/down = sr_out/sr_in`` reduced by their gcd (its
    default Kaiser-windowed anti-aliasing filter). The output is float32 with exactly
    :func:`resampled_length` samples, so e.g. 16 kHz -> 44.1 kHz -> 16 kHz gives back the original
    length. Equal rates return the input (as float32) unchanged.
    """
    sr_in, sr_out = int(sr_in), int(sr_out)
    if sr_in <= 0 or sr_out <= 0:
        raise ValueError(f"sample rates must be positive, got {sr_in} -> {sr_out}")
    x = np.asarray(x)
    if x.ndim == 0:
        raise ValueError("resample needs an array with a time axis (..., L)")
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32)
    if sr_in == sr_out:
        return x.astype(np.float32, copy=False)
    length = x.shape[-1]
    target = resampled_length(length, sr_in, sr_out)
    if length == 0:
        return np.zeros(x.shape[:-1] + (0,), np.float32)
    from scipy import signal  # imported here: scipy.signal takes ~0.7 s to import

    g = math.gcd(sr_in, sr_out)
    y = signal.resample_poly(x, sr_out // g, sr_in // g, axis=-1)
    n = y.shape[-1]
    if n > target:
        y = y[..., :target]
    elif n < target:
        y = np.pad(y, [(0, 0)] * (y.ndim - 1) + [(0, target - n)])
    return np.ascontiguousarray(y, dtype=np.float32)


def is_silent(x: np.ndarray) -> bool:
    """True when ``x`` has no energy or never reaches one 16-bit LSB."""
    return x.size == 0 or float(np.max(np.abs(x))) < LSB16


def snr_gain(clean: np.ndarray, noise: np.ndarray, snr_db: float) -> float:
    """The gain ``g`` with ``10 log10(sum(clean^2) / sum((g noise)^2)) == snr_db`` (computed in float64)."""
    es = float(np.sum(np.square(clean, dtype=np.float64)))
    en = float(np.sum(np.square(noise, dtype=np.float64)))
    if es <= 0.0 or en <= 0.0:
        raise ValueError("snr_gain needs clean and noise with non-zero energy")
    return math.sqrt(es / (en * 10.0 ** (snr_db / 10.0)))


def _format_for(path: Path) -> str:
    ext = path.suffix.lower()
    fmt = _FORMAT_BY_EXTENSION.get(ext)
    if fmt is None:
        fmt = ext[1:].upper()
        if fmt not in sf.available_formats():
            raise ValueError(f"{path}: cannot choose an audio format for extension {path.suffix!r}")
    return fmt


def _clip_upper(subtype: str) -> float:
    """Largest sample value an integer subtype stores without overflow: 1 - 2^-(bits-1)."""
    bits = {"PCM_S8": 8, "PCM_U8": 8, "PCM_16": 16, "PCM_24": 24, "PCM_32": 32}.get(subtype, 16)
    return 1.0 - 2.0 ** -(bits - 1)


def write_audio(path, samples, sample_rate: int, subtype: str | None = None) -> Path:
    """Write ``samples`` (``(L,)`` or ``(L, channels)``) to ``path`` atomically; returns the path.

    The format comes from the extension (``.wav``, ``.flac``, ``.ogg``, ...). The default subtype
    is PCM_16 for WAV and FLAC, otherwise libsndfile's default for the format. For integer
    subtypes (PCM and other fixed-point codings) the samples are CLIPPED to ``[-1, 1 - 2^-(bits-1)]``,
    i.e. to ``[-1, 1)``, so that out-of-range values saturate instead of wrapping around.
    Non-finite samples raise ``ValueError``.

    The file is encoded in memory (:func:`encode_audio`: float files without libsndfile's time-stamped PEAK
    chunk, so the same samples always give the same bytes), then written to a hidden
    ``.<name>.<random>.part`` file in the same directory, which is fsynced and renamed over ``path`` with
    ``os.replace``. Parent directories are created. If anything fails (e.g. ``OSError`` ENOSPC: a full disk),
    the temporary file is removed, ``path`` is left as it was and the error is raised.
    """
    path = Path(path)
    fmt = _format_for(path)
    if subtype is None:
        subtype = "PCM_16" if fmt in ("WAV", "FLAC") else sf.default_subtype(fmt)
    subtype = subtype.upper()
    if not sf.check_format(fmt, subtype):
        raise ValueError(f"{path}: subtype {subtype!r} is not valid for format {fmt}")
    sample_rate = int(sample_rate)
    if sample_rate <= 0:
        raise ValueError(f"{path}: invalid sample rate {sample_rate}")

    data = np.asarray(samples)
    if data.ndim not in (1, 2) or data.shape[0] == 0:
        raise ValueError(f"{path}: expected samples of shape (L,) or (L, channels) with L > 0, got {data.shape}")
    if not np.issubdtype(data.dtype, np.floating):
        raise ValueError(f"{path}: expected floating-point samples in [-1, 1], got dtype {data.dtype}")
    if not np.isfinite(data).all():
        raise ValueError(f"{path}: refusing to write non-finite (NaN or Inf) samples")
    if subtype not in _UNCLIPPED_SUBTYPES and not subtype.startswith("MPEG"):
        data = np.clip(data.astype(np.float64), -1.0, _clip_upper(subtype))

    return write_bytes_atomic(path, encode_audio(data, sample_rate, subtype, fmt))


_SFC_SET_ADD_PEAK_CHUNK = 0x1050  # sndfile.h: whether a float file gets a PEAK chunk (which holds a timestamp)


def encode_audio(data: np.ndarray, sample_rate: int, subtype: str, fmt: str) -> bytes:
    """The bytes of an audio file holding ``data`` (``(L,)`` or ``(L, channels)``), encoded in memory.

    Float files get no PEAK chunk (libsndfile's default adds one, stamped with the time of writing, so that two
    writes of the same samples would differ): the same samples give the same bytes, which ``cmp`` and
    content-addressed pipelines can check. Encoding in memory also keeps file-system errors (a full disk) out
    of libsndfile's I/O callbacks: they are raised as ordinary ``OSError`` by the plain write that follows.
    """
    buf = io.BytesIO()
    channels = 1 if data.ndim == 1 else data.shape[1]
    with sf.SoundFile(buf, "w", int(sample_rate), channels, subtype, format=fmt) as f:
        if subtype in ("FLOAT", "DOUBLE"):
            from soundfile import _ffi, _snd

            _snd.sf_command(f._file, _SFC_SET_ADD_PEAK_CHUNK, _ffi.NULL, 0)  # before any sample is written
        f.write(data)
    return buf.getvalue()


def write_atomic(path, write: Callable[[BinaryIO], object]) -> Path:
    """Create or replace ``path`` atomically: ``write(fh)`` fills a hidden ``.<name>.<random>.part``
    file in the same directory, which is fsynced and renamed over ``path`` (``os.replace``). Parent
    directories are created. If anything fails, the temporary file is removed and ``path`` is left as it
    was. Used for every file the package writes (audio, manifests, reports, benchmark JSON)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.part")
    # O_EXCL: never clobber another writer's temporary; mode 0o666 & ~umask like an ordinary file.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)
    return path


def write_bytes_atomic(path, data: bytes) -> Path:
    """:func:`write_atomic` of a byte string."""
    return write_atomic(path, lambda fh: fh.write(data))


def _fsync_dir(directory: Path) -> None:
    """Best-effort fsync of a directory so that a rename is durable (not possible on every OS)."""
    try:
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def is_under(path, directory) -> bool:
    """Whether ``path`` is ``directory`` or lies inside it (symbolic links resolved)."""
    try:
        Path(path).resolve().relative_to(Path(directory).resolve())
        return True
    except ValueError:
        return False


def find_audio_files(root, extensions=AUDIO_EXTENSIONS) -> list[Path]:
    """Audio files under ``root`` (recursive), sorted; extensions match case-insensitively.

    If ``root`` is a file it is returned as ``[root]`` whatever its extension. A missing
    ``root`` raises ``FileNotFoundError``.
    """
    root = Path(root)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such file or directory")
    exts = {e.lower() if e.startswith(".") else "." + e.lower() for e in extensions}
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in exts and p.is_file())
