"""The spectrogram figures of ``python -m jaxse.evaluate``: which files to draw, and the stacked dB
spectrograms (noisy / enhanced / clean) of one file as PNG bytes (matplotlib's Agg canvas, no pyplot)."""

from __future__ import annotations

import io
import math
from typing import Sequence

import numpy as np

from jaxse.audio import read_audio
from jaxse.evaluation import metrics as M

SAMPLE_RATE = M.SAMPLE_RATE


def _spectrogram_db(x: np.ndarray, n_fft: int = 512, hop: int = 128) -> np.ndarray:
    x = np.asarray(x, np.float64)
    if x.size < n_fft:
        x = np.pad(x, (0, n_fft - x.size))
    frames = np.lib.stride_tricks.sliding_window_view(np.pad(x, n_fft // 2), n_fft)[::hop]
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n_fft) / n_fft)
    mag = np.abs(np.fft.rfft(frames * window, axis=-1))
    return 20.0 * np.log10(mag + 1e-10).T  # (freq, time)


def choose_figures(rows: Sequence[dict], k: int) -> list[int]:
    """Indices of ``k`` rows to draw: round-robin over the SNRs (ascending), taking each SNR's files in
    path order; without SNRs, ``k`` files evenly spaced in path order. Deterministic."""
    n = len(rows)
    k = max(0, min(int(k), n))
    if k == 0:
        return []
    snrs = sorted({r["snr_db"] for r in rows if r.get("snr_db") is not None})
    if snrs:
        queues = [[i for i, r in enumerate(rows) if r.get("snr_db") == v] for v in snrs]
        queues.append([i for i, r in enumerate(rows) if r.get("snr_db") is None])
        chosen: list[int] = []
        depth = 0
        while len(chosen) < k:
            for q in queues:
                if depth < len(q) and len(chosen) < k:
                    chosen.append(q[depth])
            depth += 1
        return chosen
    if k == 1:
        return [0]
    return sorted({round(j * (n - 1) / (k - 1)) for j in range(k)})


def figure_name(key: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in key.replace("/", "__"))
    return safe + ".png"


def draw_figure(item, row: dict) -> bytes:
    """PNG bytes of the stacked dB spectrograms (noisy / enhanced / clean) of one file (Agg, no pyplot)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise M.MissingDependencyError(f"figures need the package 'matplotlib': {M.EVAL_EXTRA_HINT}") from exc
    panels = []
    if item.noisy is not None:
        cond = ", ".join(p for p in (f"{row['snr_db']:g} dB" if row.get("snr_db") is not None else "",
                                     row.get("noise_type") or "") if p)
        panels.append(("noisy" + (f" ({cond})" if cond else ""), item.noisy, "input_"))
    panels.append(("enhanced", item.enhanced, ""))
    panels.append(("clean", item.clean, None))
    specs = []
    for title, path, prefix in panels:
        x = read_audio(path, target_sr=SAMPLE_RATE).samples
        if prefix is not None:
            parts = [f"{lab} {row[prefix + m]:.2f}" for m, lab in (("pesq_wb", "PESQ-WB"), ("si_sdr", "SI-SDR"))
                     if isinstance(row.get(prefix + m), float) and math.isfinite(row[prefix + m])]
            if parts:
                title += ": " + ", ".join(parts)
        specs.append((title, _spectrogram_db(x), x.size / SAMPLE_RATE))
    vmax = max(float(s.max()) for _, s, _ in specs)
    fig = Figure(figsize=(9, 2.3 * len(specs) + 0.4))
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(specs), 1, sharex=True, squeeze=False)[:, 0]
    im = None
    for ax, (title, spec, dur) in zip(axes, specs):
        im = ax.imshow(spec, origin="lower", aspect="auto", cmap="magma", vmin=vmax - 80.0, vmax=vmax,
                       extent=(0.0, dur, 0.0, SAMPLE_RATE / 2000.0), interpolation="nearest")
        ax.set_title(title, fontsize=9, loc="left")
        ax.set_ylabel("kHz")
    axes[-1].set_xlabel("time (s)")
    fig.suptitle(item.file, fontsize=10)
    fig.colorbar(im, ax=list(axes), label="dB", shrink=0.9)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()
