"""Visual features beside the audio: one ``.npy`` array ``(T_v, D)`` per utterance at ``fps`` frames per second
(25 for lip videos), in a tree that mirrors the audio tree (``AUDIO_ROOT/a/b.flac`` <-> ``VISUAL_ROOT/a/b.npy``).

Training crops are aligned as the reference does: an audio crop starting at sample ``s`` of ``n`` samples takes
the video frames from ``floor(s / sr · fps)``, ``floor(n / sr · fps)`` of them (51 for the 32,640 samples of a
256-frame crop at 16 kHz, hop 128); frames past the end of a feature file are zeros (the reference instead
redraws the crop, up to 5 times).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jaxse.data import CleanSpeechDataset, split_roots
from jaxse.data.files import is_manifest
from jaxse.errors import one_line

FEATURE_SUFFIX = ".npy"


def feature_path(visual_root, audio_root, audio_file) -> Path:
    """The feature file of ``audio_file`` (under ``audio_root``, or under the folder of a manifest ``audio_root``):
    the same relative path under ``visual_root``, with the suffix ``.npy``."""
    if is_manifest(audio_root):
        audio_root = Path(audio_root).parent
    rel = Path(audio_file).relative_to(audio_root) if Path(audio_root).is_dir() else Path(Path(audio_file).name)
    return Path(visual_root) / rel.with_suffix(FEATURE_SUFFIX)


def load_features(path, dim: int | None = None) -> np.ndarray:
    """A feature file as float32 ``(T_v, D)``; ``ValueError`` (one line) if missing, malformed or of another
    dimension than ``dim``."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no visual features {path}")
    try:
        v = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise ValueError(f"unreadable visual features {path} ({one_line(exc, 200)})") from None
    if v.ndim != 2 or v.shape[0] < 1:
        raise ValueError(f"visual features {path}: expected an array (frames, dim), got shape {v.shape}")
    if dim is not None and v.shape[1] != dim:
        raise ValueError(f"visual features {path}: dimension {v.shape[1]}, the model takes {dim}")
    return np.asarray(v, np.float32)


def crop_frames_of(start: int, length: int, sample_rate: int, fps: float) -> tuple[int, int]:
    """``(first, count)`` video frames of an audio crop: the reference's ``int(start / sr · fps)`` and
    ``int(length / sr · fps)``."""
    return int(start / sample_rate * fps), int(length / sample_rate * fps)


class AVSpeechDataset(CleanSpeechDataset):
    """Clean speech with its visual features: batches ``{"waves": (B, L), "visual": (B, K, D)}``.

    ``visual_root``: one folder per audio root (comma-separated like the roots), mirroring it. Every audio file
    needs its feature file of dimension ``dim`` (checked when the data set is built: ``ValueError`` naming the
    first missing or bad one and how many there are).

    ``visual_dropout`` p: each row's features are all zeros with probability p (the same rows for the same
    ``(file, crop start)``: drawn from a generator seeded by them), so that the prior also learns the
    audio-only score, taken when a user's features are zeros (no face found). 0 (default): never.
    """

    def __init__(self, root, visual_root, dim: int, fps: float = 25.0, visual_dropout: float = 0.0, **kwargs):
        super().__init__(root, **kwargs)
        if not 0.0 <= float(visual_dropout) < 1.0:
            raise ValueError(f"data.visual_dropout must be in [0, 1), got {visual_dropout}")
        self.visual_dropout = float(visual_dropout)
        vroots = split_roots(visual_root)
        if len(vroots) != len(self.roots):
            raise ValueError(f"data.visual_dir names {len(vroots)} folder(s) for {len(self.roots)} audio folder(s) "
                             "(one per audio folder, comma-separated, in the same order)")
        self.visual_roots, self.dim, self.fps = vroots, int(dim), float(fps)
        paths, bad = [], []
        dirs = [Path(r).parent if is_manifest(r) else Path(r) for r in self.roots]
        for f in self._files:
            root_i = next((i for i, r in enumerate(dirs) if r == Path(f) or r in Path(f).parents), None)
            if root_i is None:
                raise ValueError(f"{f}: not under any audio folder ({', '.join(map(str, dirs))}), so no visual "
                                 "features mirror it")
            p = feature_path(vroots[root_i], self.roots[root_i], f)
            paths.append(p)
            try:
                shape = np.load(p, mmap_mode="r", allow_pickle=False).shape
                if len(shape) != 2 or shape[1] != self.dim:
                    bad.append(f"{p}: shape {shape}, expected (frames, {self.dim})")
            except Exception:
                bad.append(f"{p}: missing or unreadable")
        if bad:
            raise ValueError(f"{len(bad)} of {len(paths)} visual feature files are missing or bad, e.g. {bad[0]}")
        self._feature_paths = paths

    @property
    def visual_frames(self) -> int:
        return crop_frames_of(0, self.crop_length, self.sample_rate, self.fps)[1]

    def features(self, index: int) -> np.ndarray:
        """The visual features of file ``index`` (through the data set's decode cache)."""
        key = ("visual", str(self._feature_paths[int(index)]), self.dim)
        v = self._cache.get(key)
        if v is None:
            v = self._cache.put(key, load_features(self._feature_paths[int(index)], self.dim))
        return v

    def visual_crop(self, index: int, start: int) -> np.ndarray:
        first, count = crop_frames_of(start, self.crop_length, self.sample_rate, self.fps)
        v = self.features(index)[first:first + count]
        if v.shape[0] < count:
            v = np.concatenate([v, np.zeros((count - v.shape[0], self.dim), np.float32)])
        return v

    def dropped(self, index: int, start: int) -> bool:
        """Whether the row ``(index, start)`` gets zero features (``visual_dropout``)."""
        if self.visual_dropout <= 0:
            return False
        return bool(np.random.default_rng([int(index), int(start), 0xA7]).random() < self.visual_dropout)

    def _rows(self, plan) -> dict:
        rows = [np.zeros((self.visual_frames, self.dim), np.float32) if self.dropped(i, s) else self.visual_crop(i, s)
                for i, s in plan]
        return {"waves": super()._rows(plan), "visual": np.stack(rows).astype(np.float32, copy=False)}
