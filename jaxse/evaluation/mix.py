"""Build a noisy test set from clean speech and noise recordings: ``python -m jaxse.mix``.

    python -m jaxse.mix --clean DIR --noise DIR -o OUT --snr -5 0 5 --seed 0 [--per-file N] [--max-files M]

Every clean file (found recursively, sorted) gets ``N`` mixtures (default 1), WSJ0-QUT style: a noise
file is picked at random, then a random start sample in it, and the noise from there (looped back to
the file's start if it is shorter than the speech, resampled to the clean file's rate, mixed down to
mono) is scaled so that ``10 log10(|s|^2 / |g n|^2)`` equals the mixture's SNR exactly over the whole
utterance. Outputs are ``OUT/noisy/<rel>`` and ``OUT/clean/<rel>`` (16-bit PCM, same relative names,
``_m<k>`` appended to the stem when ``N > 1``) and ``OUT/manifest.json``, which records every choice.

Reproducibility and independence:

* Each mixture draws its noise file and start from its own generator, seeded by a hash of
  ``(seed, clean relative path, mixture index)``: those choices do not depend on the other files, the
  file order, ``--snr``, ``--per-file`` or ``--max-files``.
* SNRs are balanced over the whole run (each of the k values gets floor(n/k) or ceil(n/k) of the n
  mixtures): the mixtures are put in a seeded hash order and dealt a seeded shuffle of the SNR list
  round-robin. The SNR is therefore the one field that depends on which mixtures are in the run.
* ``--max-files M`` keeps the M clean files with the smallest seeded hash: the subset depends on the
  seed and the file names only.

If the mixture (or the clean file) would exceed the 16-bit range, both are scaled by the same factor,
recorded as ``scale``. :func:`rebuild_mixture` regenerates a mixture from its manifest record alone.

Everything is checked before anything is written (unreadable or silent clean files, unreadable noise
files, noise without a non-silent segment, name clashes): a bad input ends the run with one error line
and no output. The manifest is then written first, the audio files after it; rerunning with the same
arguments leaves finished files alone and writes missing ones (output is identical either way), and an
``OUT`` holding the manifest of different arguments is refused unless ``--overwrite``.

numpy / scipy / soundfile only (no jax).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence, TextIO

import numpy as np
import soundfile as sf

from jaxse.audio import (LSB16, AudioError, find_audio_files, is_silent, is_under, probe_audio, read_audio,
                         resample, snr_gain, write_audio, write_bytes_atomic)
from jaxse.errors import one_line
from jaxse.logging_utils import ProgressBar, format_duration

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
PEAK_LIMIT = 1.0 - LSB16
"""Largest value 16-bit PCM stores: mixtures peaking above it are scaled down to it."""
MAX_NOISE_TRIES = 100
"""Random (file, start) draws tried per mixture before giving up on finding a non-silent noise segment."""

# Extensions written as 16-bit PCM in their own format; clean files of other formats give .wav outputs.
_PCM_EXTENSIONS = (".wav", ".flac", ".aiff", ".aif", ".au")


class MixError(Exception):
    """The test set cannot be built as asked; the message is one line."""


class NoiseFile(NamedTuple):
    """A noise recording: path relative to the noise root, length in frames and rate, both as stored."""

    rel: str
    num_frames: int
    sample_rate: int


# --------------------------------------------------------------------------------------------------
# Seeded choices
# --------------------------------------------------------------------------------------------------


def _hash(*parts: Any) -> int:
    """A 128-bit integer from JSON-serialisable parts (stable across runs, platforms and Python versions)."""
    # "jaxse.mix" is a fixed namespace of the seeded draws (the module's name when the first test sets were
    # made): it must never change, or the same command would build other test sets.
    data = json.dumps(["jaxse.mix", *parts], separators=(",", ":")).encode("utf-8")
    return int.from_bytes(hashlib.sha256(data).digest()[:16], "big")


def mixture_rng(seed: int, clean_rel: str, index: int) -> np.random.Generator:
    """The generator of mixture ``index`` of clean file ``clean_rel`` (a POSIX path relative to the clean root)."""
    return np.random.default_rng(_hash("mixture", seed, clean_rel, index))


def select_subset(clean_rels: Sequence[str], max_files: int | None, seed: int) -> list[str]:
    """The ``max_files`` names with the smallest seeded hash, in sorted order (all of them if ``None``).

    A name's membership depends only on the seed and the names, never on their order.
    """
    if max_files is None or max_files >= len(clean_rels):
        return sorted(clean_rels)
    return sorted(sorted(clean_rels, key=lambda rel: _hash("subset", seed, rel))[:max_files])


def assign_snrs(keys: Sequence[tuple[str, int]], snrs: Sequence[float], seed: int) -> list[float]:
    """Balanced SNRs for mixtures ``keys`` (``(clean_rel, index)`` pairs), in the order of ``keys``.

    The mixtures, sorted by a seeded hash, are dealt a seeded shuffle of ``snrs`` round-robin, so each SNR
    gets floor(n/k) or ceil(n/k) of the n mixtures whatever the order of ``keys``.
    """
    if not snrs:
        raise ValueError("need at least one SNR")
    dealt = [snrs[i] for i in np.random.default_rng(_hash("snr-shuffle", seed)).permutation(len(snrs))]
    order = sorted(range(len(keys)), key=lambda i: _hash("snr-order", seed, keys[i][0], keys[i][1]))
    out = [0.0] * len(keys)
    for rank, i in enumerate(order):
        out[i] = float(dealt[rank % len(dealt)])
    return out


# --------------------------------------------------------------------------------------------------
# Signals
# --------------------------------------------------------------------------------------------------


def _read_looped(path: str, start: int, count: int) -> np.ndarray:
    """``count`` mono float32 samples of ``path`` from frame ``start``, looping back to frame 0 at the end."""
    try:
        with sf.SoundFile(path) as f:
            frames = f.frames
            if frames <= 0:
                raise AudioError(f"{path}: empty audio file (0 frames)")
            pieces = []
            pos, left = start % frames, count
            while left > 0:
                n = min(left, frames - pos)
                f.seek(pos)
                block = f.read(n, dtype="float32", always_2d=True)
                if block.shape[0] != n:
                    raise AudioError(f"{path}: read {block.shape[0]} of {n} frames at frame {pos} "
                                     f"(wrong length in the header?)")
                pieces.append(block)
                pos, left = 0, left - n
    except AudioError:
        raise
    except Exception as exc:  # libsndfile errors, OSError, ...
        raise AudioError(f"{path}: not a readable audio file ({one_line(exc, None)})") from exc
    data = np.concatenate(pieces) if pieces else np.zeros((0, 1), np.float32)
    x = data[:, 0] if data.shape[1] == 1 else data.mean(axis=1, dtype=np.float64).astype(np.float32)
    if not np.isfinite(x).all():
        raise AudioError(f"{path}: non-finite (NaN or Inf) samples")
    return np.ascontiguousarray(x)


def read_noise_segment(path, start: int, num_samples: int, sample_rate: int) -> np.ndarray:
    """``num_samples`` float32 mono samples at ``sample_rate`` of the noise file ``path`` looped from ``start``.

    ``start`` is a frame index at the file's own rate; the file is treated as circular (played from
    ``start`` to its end, then again from its beginning as often as needed). At another rate the looped
    segment is read with some context on both sides (so the resampling filter sees real signal, not
    zeros, at the segment's edges), resampled with :func:`jaxse.audio.resample`, and cut so that output
    sample 0 is the instant of frame ``start``.
    """
    p = str(path)
    info = probe_audio(p)
    if info.sample_rate == sample_rate:
        return _read_looped(p, start, num_samples)
    g = math.gcd(info.sample_rate, sample_rate)
    up, down = sample_rate // g, info.sample_rate // g
    # resample_poly's filter reaches 10*max(up, down) samples at the upsampled rate to each side; the
    # context is a multiple of `down` input frames so that it is a whole number of output samples.
    reach = math.ceil(10 * max(up, down) / up) + 1
    blocks = -(-reach // down)
    context_in, context_out = blocks * down, blocks * up
    count_in = -(-num_samples * down // up) + 1
    x = _read_looped(p, start - context_in, context_in + count_in + context_in)
    y = resample(x, info.sample_rate, sample_rate)
    return np.ascontiguousarray(y[context_out : context_out + num_samples])


def _combine(clean: np.ndarray, noise: np.ndarray, gain: float, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """``(scale * (clean + gain * noise), scale * clean)`` as float32, computed in float64."""
    s = clean.astype(np.float64)
    noisy = (s + gain * noise.astype(np.float64)) * scale
    return noisy.astype(np.float32), (s * scale).astype(np.float32)


def peak_scale(clean: np.ndarray, noisy: np.ndarray) -> float:
    """1, or the factor bringing the larger peak of ``clean`` and ``noisy`` down to :data:`PEAK_LIMIT`."""
    peak = max(float(np.max(np.abs(clean))), float(np.max(np.abs(noisy))))
    return PEAK_LIMIT / peak if peak > PEAK_LIMIT else 1.0


# --------------------------------------------------------------------------------------------------
# Planning
# --------------------------------------------------------------------------------------------------


def output_name(clean_rel: str, index: int, per_file: int) -> str:
    """Relative output name: the clean name, ``_m<index>`` before the extension when ``per_file > 1``,
    and ``.wav`` instead of an extension that cannot hold 16-bit PCM (e.g. ``.ogg``, ``.mp3``)."""
    rel = Path(clean_rel)
    ext = rel.suffix if rel.suffix.lower() in _PCM_EXTENSIONS else ".wav"
    stem = f"{rel.stem}_m{index}" if per_file > 1 else rel.stem
    return rel.with_name(stem + ext).as_posix()


def list_audio(root, what: str, exclude: Sequence[Path] = ()) -> list[str]:
    """Sorted POSIX paths, relative to directory ``root``, of its audio files, leaving out hidden files and
    anything under the directories ``exclude`` (the output folders). Raises :class:`MixError` for a missing
    directory, one inside ``exclude``, or one without audio files."""
    root = Path(root)
    if not root.is_dir():
        raise MixError(f"{root}: {what} directory not found" if not root.exists() else f"{root}: not a directory")
    for folder in exclude:
        if is_under(root, folder):
            raise MixError(f"{root}: the {what} directory lies inside the output folder {folder}")
    files = [
        f
        for f in find_audio_files(root)
        if not any(part.startswith(".") for part in f.relative_to(root).parts)
        and not any(is_under(f, folder) for folder in exclude)
    ]
    if not files:
        raise MixError(f"{root}: no audio files (.wav, .flac, .ogg, ...) in the {what} directory")
    return [f.relative_to(root).as_posix() for f in files]


def _choose_noise(
    rng: np.random.Generator, noises: Sequence[NoiseFile], noise_root: Path, num_samples: int, sample_rate: int,
    clean_rel: str,
) -> tuple[NoiseFile, int, np.ndarray]:
    """Draw (noise file, start) pairs from ``rng`` until the segment under the utterance is not silent."""
    for _ in range(MAX_NOISE_TRIES):
        noise = noises[int(rng.integers(len(noises)))]
        start = int(rng.integers(noise.num_frames))
        segment = read_noise_segment(noise_root / noise.rel, start, num_samples, sample_rate)
        if not is_silent(segment):
            return noise, start, segment
    raise MixError(f"{clean_rel}: no non-silent noise segment found in {MAX_NOISE_TRIES} random draws "
                   f"(are the noise files silent?)")


def plan_mixtures(
    clean_root, noise_root, snrs: Sequence[float], seed: int, per_file: int = 1, max_files: int | None = None,
    exclude: Sequence[Path] = (), stream: TextIO | None = None, progress: bool = False,
) -> dict:
    """Check every input and return the manifest of the test set (nothing is written).

    Reads each selected clean file (rejecting unreadable and silent ones), the header of each noise file,
    and the noise segment of each mixture; computes gains and clipping scales. Files under the directories
    ``exclude`` (the output's ``noisy/`` and ``clean/``) are not inputs. With ``progress`` a bar on ``stream``
    (default stderr) counts the clean files. Raises :class:`MixError` or :class:`AudioError`.
    """
    clean_root, noise_root = Path(clean_root), Path(noise_root)
    snrs = [float(s) for s in snrs]
    clean_rels = select_subset(list_audio(clean_root, "clean", exclude), max_files, seed)
    noise_rels = list_audio(noise_root, "noise", exclude)
    noises = []
    for rel in noise_rels:
        info = probe_audio(noise_root / rel)
        noises.append(NoiseFile(rel, info.num_frames, info.sample_rate))

    keys = [(rel, k) for rel in clean_rels for k in range(per_file)]
    snr_of = dict(zip(keys, assign_snrs(keys, snrs, seed)))
    owner: dict[str, str] = {}
    records = []
    bar = ProgressBar(len(clean_rels), desc="mix: check", stream=stream, enabled=progress, log_interval=10.0)
    for i, rel in enumerate(clean_rels):
        bar.update(i)
        audio = read_audio(clean_root / rel)
        if is_silent(audio.samples):
            raise MixError(f"{clean_root / rel}: clean file is silent (peak below one 16-bit LSB); "
                           f"remove it from the clean set")
        for k in range(per_file):
            name = output_name(rel, k, per_file)
            if name in owner:
                raise MixError(f"{rel} and {owner[name]} would both be written as {name}; rename one of them")
            owner[name] = rel
            noise, start, segment = _choose_noise(
                mixture_rng(seed, rel, k), noises, noise_root, audio.samples.shape[0], audio.sample_rate, rel)
            snr = snr_of[(rel, k)]
            gain = snr_gain(audio.samples, segment, snr)
            noisy, _ = _combine(audio.samples, segment, gain, 1.0)
            records.append({
                "id": name.rsplit(".", 1)[0],
                "noisy": f"noisy/{name}",
                "clean": f"clean/{name}",
                "clean_source": rel,
                "noise_source": noise.rel,
                "noise_type": Path(noise.rel).stem,
                "noise_start": start,
                "noise_sample_rate": noise.sample_rate,
                "snr_db": snr,
                "noise_gain": gain,
                "scale": peak_scale(audio.samples, noisy),
                "num_samples": int(audio.samples.shape[0]),
                "sample_rate": audio.sample_rate,
            })
    bar.step = len(clean_rels)  # drawn by close(), not also by update()
    bar.close()
    rates = {r["sample_rate"] for r in records}
    return {
        "version": MANIFEST_VERSION,
        "seed": seed,
        "snrs": snrs,
        "per_file": per_file,
        "max_files": max_files,
        "clean_root": str(clean_root),
        "noise_root": str(noise_root),
        "sample_rate": rates.pop() if len(rates) == 1 else None,
        "mixtures": records,
    }


def rebuild_mixture(record: dict, clean_root, noise_root) -> tuple[np.ndarray, np.ndarray]:
    """``(noisy, clean)`` float32 arrays of one manifest record, regenerated from the record and the sources.

    These are the exact arrays that were written (before 16-bit quantisation). Raises :class:`MixError` if
    the source files no longer fit the record (other length, rate, or energy than when it was made).
    """
    clean_path = Path(clean_root) / record["clean_source"]
    noise_path = Path(noise_root) / record["noise_source"]
    audio = read_audio(clean_path)
    sr = int(record["sample_rate"])
    if audio.samples.shape[0] != record["num_samples"] or audio.sample_rate != sr:
        raise MixError(f"{clean_path}: {audio.samples.shape[0]} samples at {audio.sample_rate} Hz, but the manifest "
                       f"says {record['num_samples']} at {sr} Hz (the clean file changed)")
    noise_sr = probe_audio(noise_path).sample_rate
    if noise_sr != record["noise_sample_rate"]:
        raise MixError(f"{noise_path}: {noise_sr} Hz, but the manifest says {record['noise_sample_rate']} Hz")
    segment = read_noise_segment(noise_path, int(record["noise_start"]), audio.samples.shape[0], sr)
    gain = float(record["noise_gain"])
    if is_silent(segment) or not math.isclose(snr_gain(audio.samples, segment, record["snr_db"]), gain, rel_tol=1e-6):
        raise MixError(f"{record['id']}: the clean or noise file changed since the manifest was written "
                       f"(energy differs)")
    return _combine(audio.samples, segment, gain, float(record["scale"]))


# --------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------


def _write_json_atomic(path: Path, obj: dict) -> None:
    write_bytes_atomic(path, (json.dumps(obj, indent=1) + "\n").encode("utf-8"))


def _read_manifest(path: Path) -> dict | None:
    """The manifest at ``path``; ``None`` if there is none; ``{}`` if it cannot be parsed."""
    if not path.exists():
        return None
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return obj if isinstance(obj, dict) else {}


def _difference(old: dict, new: dict) -> str:
    if not old:
        return "it cannot be read"
    keys = [k for k in new if k != "mixtures" and old.get(k) != new[k]]
    if keys:
        return "; ".join(f"{k} {old.get(k)!r} there, {new[k]!r} now" for k in keys)
    return "the input files differ"


def _stale_outputs(out: Path, old: dict, new: dict) -> list[Path]:
    """Audio files listed by ``old`` but not by ``new`` (only paths under ``out/noisy`` and ``out/clean``)."""
    keep = {r[key] for r in new["mixtures"] for key in ("noisy", "clean")}
    stale = []
    for r in old.get("mixtures", []):
        for key in ("noisy", "clean"):
            rel = r.get(key) if isinstance(r, dict) else None
            if not isinstance(rel, str) or rel in keep or ".." in Path(rel).parts or Path(rel).is_absolute():
                continue
            if Path(rel).parts[:1] in (("noisy",), ("clean",)):
                stale.append(out / rel)
    return stale


def build_test_set(
    clean_root, noise_root, out_dir, snrs: Sequence[float], seed: int, per_file: int = 1,
    max_files: int | None = None, overwrite: bool = False, stream: TextIO | None = None, progress: bool = True,
) -> dict:
    """Plan, check and write a noisy test set into ``out_dir``; returns the manifest (see the module docstring).

    Raises :class:`MixError` / :class:`AudioError` before writing anything if an input is bad or ``out_dir``
    holds the manifest of a different run (unless ``overwrite``, which rewrites every file and deletes the
    audio files of the old manifest that the new one does not list).
    """
    stream = sys.stderr if stream is None else stream
    out = Path(out_dir)
    manifest = plan_mixtures(clean_root, noise_root, snrs, seed, per_file, max_files,
                             exclude=(out / "noisy", out / "clean"), stream=stream, progress=progress)
    manifest_path = out / MANIFEST_NAME
    old = _read_manifest(manifest_path)
    resume = old == manifest and not overwrite
    if old is not None and old != manifest:
        if not overwrite:
            raise MixError(f"{manifest_path} was written with other arguments or inputs "
                           f"({_difference(old, manifest)}); use --overwrite to replace that test set, or another -o")
        for path in _stale_outputs(out, old, manifest):
            path.unlink(missing_ok=True)
    if not resume:
        _write_json_atomic(manifest_path, manifest)

    records = manifest["mixtures"]
    bar = ProgressBar(len(records), desc="mix: write", stream=stream, enabled=progress, log_interval=10.0)
    for i, rec in enumerate(records):
        bar.update(i)
        noisy_path, clean_path = out / rec["noisy"], out / rec["clean"]
        if resume and noisy_path.exists() and clean_path.exists():
            continue
        noisy, clean = rebuild_mixture(rec, clean_root, noise_root)
        write_audio(clean_path, clean, rec["sample_rate"], subtype="PCM_16")
        write_audio(noisy_path, noisy, rec["sample_rate"], subtype="PCM_16")
    bar.step = len(records)  # drawn by close(), not also by update()
    bar.close()
    return manifest


def summary_line(manifest: dict, out_dir, seconds: float) -> str:
    """One line: how many mixtures, per SNR and per noise type, how many were scaled against clipping."""
    recs = manifest["mixtures"]
    per_snr = Counter(r["snr_db"] for r in recs)
    per_noise = Counter(r["noise_type"] for r in recs)
    scaled = sum(1 for r in recs if r["scale"] != 1.0)
    snr_text = ", ".join(f"{s:g} dB: {per_snr[s]}" for s in sorted(per_snr))
    noise_text = ", ".join(f"{t} {n}" for t, n in sorted(per_noise.items()))
    return (f"mixed {len(recs)} mixtures of {len({r['clean_source'] for r in recs})} clean files into {out_dir} "
            f"in {format_duration(seconds)} | SNR {snr_text} | noise {noise_text} | scaled against clipping: {scaled}")


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------


def _int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


def _finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m jaxse.mix``: mix clean speech with noise at given SNRs into a reproducible noisy test set."""
    ap = argparse.ArgumentParser(
        prog="python -m jaxse.mix",
        description="Mix clean speech with noise recordings at given SNRs into a reproducible noisy test set "
                    "(OUT/noisy, OUT/clean, OUT/manifest.json).")
    ap.add_argument("--clean", required=True, help="directory of clean speech (searched recursively)")
    ap.add_argument("--noise", required=True, help="directory of noise recordings (searched recursively)")
    ap.add_argument("-o", "--output", required=True, help="output directory (noisy/, clean/, manifest.json)")
    ap.add_argument("--snr", type=_finite_float, nargs="+", required=True, metavar="DB",
                    help="SNRs in dB, assigned to the mixtures in equal shares")
    ap.add_argument("--seed", type=_int_at_least(0), default=0, help="random seed (default 0)")
    ap.add_argument("--per-file", type=_int_at_least(1), default=1, metavar="N",
                    help="mixtures per clean file (default 1)")
    ap.add_argument("--max-files", type=_int_at_least(1), default=None, metavar="M",
                    help="use a seeded random subset of M clean files (the same subset for the same seed)")
    ap.add_argument("--overwrite", action="store_true", help="replace a test set made with other arguments in OUT")
    args = ap.parse_args(argv)
    if len(set(args.snr)) != len(args.snr):
        ap.error(f"--snr values must be distinct, got {' '.join(f'{s:g}' for s in args.snr)}")

    t0 = time.perf_counter()
    try:
        manifest = build_test_set(args.clean, args.noise, args.output, args.snr, args.seed, args.per_file,
                                  args.max_files, overwrite=args.overwrite)
    except (MixError, AudioError, OSError) as exc:
        clear = "\r\x1b[K" if sys.stderr.isatty() else ""  # on a terminal, the error replaces a progress bar
        print(f"{clear}error: {one_line(exc, None)}", file=sys.stderr)
        return 1
    print(summary_line(manifest, args.output, time.perf_counter() - t0), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
