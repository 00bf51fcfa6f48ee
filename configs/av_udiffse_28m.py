"""AV-UDiffSE / AV-UDiffSE+ prior (Ayilo et al., arXiv 2410.05301): the 28M NCSN++M with light cross-attention
fusion of visual features at every level ("concat_attn_masking_light", fusion_level enc_dec, p = 0), model family
"av". The reference recipe: AV-HuBERT Base final-layer features (768 dims, 25 fps, no projection), 256-frame crops
with their 51 video frames, batch 4, Adam 1e-4, EMA 0.999; the same SDE and STFT as UDiffSE+. For a GPU.

Point ``data.visual_dir`` / ``data.valid_visual_dir`` at feature trees that mirror ``data.train_dir`` /
``data.valid_dir`` (one ``.npy`` array (frames, 768) per utterance; see the README, "Audio-visual priors")::

    python train.py --config configs/av_udiffse_28m.py --workdir runs/av28 \\
        --config.data.train_dir=CORPUS/train --config.data.visual_dir=FEATURES/train \\
        --config.data.valid_dir=CORPUS/valid --config.data.valid_visual_dir=FEATURES/valid
"""

from configs import udiffse_plus_28m


def get_config():
    config = udiffse_plus_28m.get_config()
    config.model.family = "av"
    config.model.cond_dim = 768
    config.model.xattn_scaled = False  # the reference: unscaled logits
    config.model.xattn_first_d_head = 128  # the reference's hard-coded head of the first block
    config.model.xattn_time_window = 0.0  # the reference: no positions (0.04: a 40 ms Gaussian time window)
    config.data.visual_dir = ""
    config.data.valid_visual_dir = ""
    config.data.visual_fps = 25.0
    config.data.visual_dropout = 0.0  # the reference (p = 0); > 0 zeroes that share of training rows' features
    config.training.sample_every = 0  # prior samples would need visual features
    return config
