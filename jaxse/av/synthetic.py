"""SYNTHETIC visual features, made from clean speech: a stand-in for lip features where no audio-visual corpus is
at hand. They check the audio-visual *mechanism* (alignment, batching, fusion, training, enhancement) only: they
say nothing about real lips, and every file and table made with them must say "synthetic visual features".

Per 40 ms video frame (25 fps; frame ``k`` covers samples ``[640k, 640k + 640)`` at 16 kHz): the log energies of
``bands`` log-spaced frequency bands (60 Hz – 7.6 kHz) of the Hann-windowed frame, in dB relative to the
utterance's loudest band-frame and clipped at −80 dB, scaled by 1/20; lifted to ``dim`` dimensions by a fixed
random projection (seed ``seed``, the same for every file), plus Gaussian noise of standard deviation
``noise`` (drawn from ``seed`` and the file's relative path). Like lip movements, they follow the clean
speech's time course and coarse spectrum and carry nothing of the noise.

    python -m jaxse.av.synthetic CLEAN_DIR -o FEATURE_DIR [--dim 32] [--bands 16] [--noise 0.1] [--seed 0]

writes ``FEATURE_DIR/<relative path>.npy`` (float32 ``(frames, dim)``) for every audio file under CLEAN_DIR, and
``FEATURE_DIR/SYNTHETIC_VISUAL_FEATURES.json`` with the settings. For a mixture tree of :mod:`jaxse.mix`
(``clean/`` and ``noisy/`` with the same relative paths), run it on ``clean/``: the features then sit at the
noisy files' relative paths, as ``enhance.py --visual`` expects.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

FPS = 25.0
LABEL = "SYNTHETIC_VISUAL_FEATURES.json"


def projection(bands: int, dim: int, seed: int) -> np.ndarray:
    """The fixed lift ``(bands, dim)`` from band energies to feature dimensions."""
    return (np.random.default_rng([seed, 7919]).standard_normal((bands, dim)) / np.sqrt(bands)).astype(np.float32)


def band_log_energies(x: np.ndarray, sample_rate: int = 16000, bands: int = 16, fps: float = FPS) -> np.ndarray:
    """``(frames, bands)``: per video frame, band log energies in dB re the utterance maximum, clipped at −80."""
    hop = int(round(sample_rate / fps))
    n = max(1, int(np.ceil(len(x) / hop)))
    frames = np.zeros((n, hop), np.float64)
    for k in range(n):
        seg = x[k * hop:(k + 1) * hop]
        frames[k, :len(seg)] = seg
    spec = np.abs(np.fft.rfft(frames * np.hanning(hop)[None], axis=1)) ** 2
    freqs = np.fft.rfftfreq(hop, 1.0 / sample_rate)
    edges = np.geomspace(60.0, min(7600.0, sample_rate / 2 - 1), bands + 1)
    energy = np.stack([spec[:, (freqs >= lo) & (freqs < hi)].sum(1) for lo, hi in zip(edges[:-1], edges[1:])], 1)
    db = 10 * np.log10(energy + 1e-12)
    return np.maximum(db - db.max(), -80.0)


def synthetic_features(x: np.ndarray, uid: str, sample_rate: int = 16000, dim: int = 32, bands: int = 16,
                       noise: float = 0.1, seed: int = 0) -> np.ndarray:
    """The synthetic visual features ``(frames, dim)`` of clean speech ``x`` (see the module doc)."""
    e = band_log_energies(np.asarray(x, np.float64), sample_rate, bands) / 20.0
    v = e.astype(np.float32) @ projection(bands, dim, seed)
    digest = int.from_bytes(hashlib.sha256(uid.encode()).digest()[:8], "little")
    v += noise * np.random.default_rng([seed, digest]).standard_normal(v.shape).astype(np.float32)
    return v.astype(np.float32)


def main(argv=None) -> int:
    from jaxse.audio import AudioError, find_audio_files, read_audio

    ap = argparse.ArgumentParser(prog="python -m jaxse.av.synthetic",
                                 description="SYNTHETIC visual features from clean speech (a stand-in for lip "
                                             "features: checks the audio-visual mechanism only).")
    ap.add_argument("clean", help="folder of clean speech (or a mixture tree's clean/ folder)")
    ap.add_argument("-o", "--output", required=True, help="feature folder (mirrors the clean folder, .npy files)")
    ap.add_argument("--dim", type=int, default=32, help="feature dimension (default 32)")
    ap.add_argument("--bands", type=int, default=16, help="frequency bands (default 16)")
    ap.add_argument("--noise", type=float, default=0.1, help="standard deviation of the added noise (default 0.1)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the projection and the noise (default 0)")
    args = ap.parse_args(argv)
    root, out = Path(args.clean), Path(args.output)
    if not root.is_dir():
        sys.stderr.write(f"jaxse.av.synthetic: error: {root}: not a directory\n")
        return 2
    files = find_audio_files(root)
    if not files:
        sys.stderr.write(f"jaxse.av.synthetic: error: {root}: no audio files\n")
        return 2
    out.mkdir(parents=True, exist_ok=True)
    done = 0
    for f in files:
        rel = f.relative_to(root)
        try:
            x = read_audio(f, target_sr=16000).samples
        except AudioError as exc:
            sys.stderr.write(f"skipped {rel}: {exc}\n")
            continue
        v = synthetic_features(x, rel.as_posix(), 16000, args.dim, args.bands, args.noise, args.seed)
        target = out / rel.with_suffix(".npy")
        target.parent.mkdir(parents=True, exist_ok=True)
        np.save(target, v)
        done += 1
    (out / LABEL).write_text(json.dumps({
        "what": "SYNTHETIC visual features made from clean speech (not lip features): band log-energies per 40 ms "
                "frame, randomly projected, plus noise; for checking the audio-visual mechanism only",
        "source": str(root), "fps": FPS, "dim": args.dim, "bands": args.bands, "noise": args.noise,
        "seed": args.seed, "files": done}, indent=1))
    print(f"wrote synthetic visual features of {done} files ({args.dim} dims, {FPS:g} fps) to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
