"""The ``"av"`` model family: the clean-speech diffusion prior conditioned on visual features (AV-UDiffSE).

Trained like the audio-only prior (denoising score matching on clean speech, EMA, warm start, exports), on
batches ``{"waves", "visual"}`` of :class:`jaxse.av.data.AVSpeechDataset`. ``config.data.visual_dir`` (and
``valid_visual_dir``) hold the feature trees that mirror ``train_dir`` (``valid_dir``), one folder per audio
folder; ``data.visual_fps`` their frame rate (25); ``data.visual_dropout`` the probability of zeroing a
training row's features (0). ``config.model.cond_dim`` is the feature dimension (768
for AV-HuBERT Base). No prior samples during training (they would need visual features).
"""

from __future__ import annotations

import re

from jaxse.av.models import AVScoreModel
from jaxse.diffusion.family import ScorePriorFamily
from jaxse.diffusion.ncsnpp import NCSNppConfig


class AVFamily(ScorePriorFamily):
    name = "av"
    has_sampler = False
    model_class = AVScoreModel
    conditioned = True

    def reference_model(self, layout):
        """NCSN++M with cross-attention blocks (``*.cross_attention.*``): the feature dimension and the first
        block's head size are read from the shapes."""
        if not (layout.timed and layout.in_channels == 2 and layout.xattn_modules
                and layout.num_modules - len(layout.xattn_modules) == layout.SMALL_MODULES):
            return None
        first = layout.xattn_modules[0]
        cond_dim = int(layout.state[f"all_modules.{first}.cross_attention.to_k.weight"].shape[1])
        d_head, d_model = layout.state[f"all_modules.{first}.cross_attention.to_q.weight"].shape
        return AVScoreModel(net=NCSNppConfig(**layout.small(), output_scaling="none", cond_dim=cond_dim,
                                             xattn_first_d_head=0 if d_head == d_model else int(d_head)),
                            parameterization="noise")

    def reference_state(self, state: dict) -> dict:
        """Without the frozen lip-feature extractor (AV-HuBERT): the features are precomputed here."""
        return {k: v for k, v in state.items() if not re.match(r"(dnn\.|param/)?feature_extractor\.", k)}

    def describe_model(self, model) -> str:
        return f"audio-visual {model.parameterization} prior (feature dimension {model.net.cond_dim})"

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
