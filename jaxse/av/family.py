"""The ``"av"`` model family: the clean-speech diffusion prior conditioned on visual features (AV-UDiffSE).

Trained like the audio-only prior (denoising score matching on clean speech, EMA, warm start, exports), on
batches ``{"waves", "visual"}`` of :class:`jaxse.av.data.AVSpeechDataset`. ``config.data.visual_dir`` (and
``valid_visual_dir``) hold the feature trees that mirror ``train_dir`` (``valid_dir``), one folder per audio
folder; ``data.visual_fps`` their frame rate (25); ``data.visual_dropout`` the probability of zeroing a
training row's features (0). ``config.model.cond_dim`` is the feature dimension (768
for AV-HuBERT Base). No prior samples during training (they would need visual features).
"""

from __future__ import annotations

from jaxse.av.models import AVScoreModel
from jaxse.diffusion.family import DiffusionFamily


class AVFamily(DiffusionFamily):
    name = "av"
    has_sampler = False
    model_class = AVScoreModel

    def make_dataset(self, config, spec, split: str, crop_frames: int):
        from jaxse.av.data import AVSpeechDataset

        d = config.data
        root = d.train_dir if split == "train" else d.valid_dir
        visual = d.get("visual_dir", "") if split == "train" else d.get("valid_visual_dir", "")
        if not visual:
            raise ValueError(f"the av family needs data.{'visual_dir' if split == 'train' else 'valid_visual_dir'} "
                             "(visual features mirroring the audio folders)")
        dropout = float(d.get("visual_dropout", 0.0)) if split == "train" else 0.0  # validation: never
        return AVSpeechDataset(root, visual, dim=int(config.model.cond_dim), fps=float(d.get("visual_fps", 25.0)),
                               visual_dropout=dropout, sample_rate=int(d.sample_rate), crop_frames=int(crop_frames), spec=spec)

    def validate_config(self, config, model) -> None:
        if int(config.training.sample_every) > 0:
            raise ValueError("training.sample_every must be 0 for the av family (prior samples need visual features)")

    def data_info(self, train_ds, steps_per_epoch):
        return {"train_files": len(train_ds), "train_hours": train_ds.total_duration / 3600,
                "visual_dim": train_ds.dim, "visual_fps": train_ds.fps,
                "visual_frames_per_crop": train_ds.visual_frames}


FAMILY = AVFamily()
