"""The RVAE speech model of the RVAE-based enhancement methods, trained with the reference recipe.

Non-causal RVAE (``jaxse.rvae.net``: BiLSTM 128 encoder features, z_dim 16, BiLSTM 128 decoder; 1,026,849
parameters, the size of the published ``RVAE_final_epoch294.pt``), trained as in Bie et al.'s DVAE_SE code
(``jaxse.rvae.training`` has the details and the differences):

* data: silence trimmed (``librosa.effects.trim(top_db=30)`` equivalent), 50-frame sequences of
  (50 − 1)·256 = 12544 samples each divided by its own peak, |STFT|² with the 1024-point sine window, hop 256;
* loss: IS(|s|², v + 1e-10) + w_kl·β·KL per frame, β = 0.01, w_kl = epoch/50 for the first 50 epochs, then 1;
* Adam lr 1e-3, batch 128, 300 epochs at most, early stopping after 30 epochs without a lower validation loss,
  the checkpoint with the lowest validation loss kept (``python -m jaxse.export`` picks it).

Step-based: each step draws a random batch of crops, deterministic in (seed, step); an epoch is
``ceil(chunks / 128)`` steps with ``chunks`` the reference's count of non-overlapping 50-frame sequences of the
trimmed training set (6,222 -> 49 steps for ``../shared/data/train``), so 300 epochs = 14,700 steps there.
No EMA. Run from the repository root (the data dirs default to ``../shared/data/{train,valid}`` or
``$JAXSE_DATA``)::

    python train.py --config configs/rvae.py --workdir runs/rvae
    python -m jaxse.export runs/rvae -o OUTDIR          # rvae.json + rvae_params.npz + MODEL_CARD.md
"""

import ml_collections

from configs import default


def get_config():
    config = default.get_config()
    del config.sde  # diffusion-only groups
    del config.sampling

    config.model = ml_collections.ConfigDict(dict(
        family="rvae",
        x_dim=513,
        z_dim=16,
        dim_rnn_g_x=128,
        dim_rnn_g_z=128,
        dim_rnn_h=128,
        bidir_g_x=True,
        bidir_h=True,
    ))
    # jaxse.rvae.spectral.RVAESpecConfig; the reference trains with torch.stft(center=True, pad_mode="reflect").
    config.spec = ml_collections.ConfigDict(dict(n_fft=1024, hop_length=256, pad_mode="reflect"))
    config.rvae = ml_collections.ConfigDict(dict(beta=0.01, kl_warm_epochs=50, var_eps=1e-10))

    config.data.crop_frames = 50
    config.data.trim_top_db = 30.0
    config.data.sample_by_length = True  # files drawn in proportion to their 50-frame chunks
    config.data.valid_chunks = True  # validate on every chunk of the trimmed validation files
    # decoded, trimmed files kept (LRU): all of ../shared/data; a part of a larger corpus (WSJ0's 25 h: ~5.8 GB)
    config.data.cache_mb = 2048

    t = config.training
    t.batch_size = 128
    t.num_steps = 0  # 0: num_epochs × steps_per_epoch (derived from the training data)
    t.num_epochs = 300
    t.lr = 1e-3
    t.ema_decay = 0.0  # unused: the RVAE recipe has no EMA
    t.early_stop_patience_epochs = 30
    t.keep_best = True
    t.log_every = 7
    t.eval_every = 49  # one epoch of ../shared/data/train
    t.checkpoint_every = 49
    t.keep_checkpoints = 2
    t.sample_every = 0
    t.num_valid = 1_000_000  # all validation chunks (whole eval batches)
    t.eval_batch_size = 32
    return config
