"""The default prior shipped inside the package (``jaxse/assets/prior``), trained on 2 CPU cores.

NCSN++M layout (noise parameterisation, one res-block per level, attention only in the middle block) at
nf 16 with four levels: 0.44M parameters (1.8 MB), ~1/64 of the FLOPs of the 28M NCSN++M, so that
UDiffSE+ runs at a usable real-time factor on a CPU. 64-frame crops (0.5 s), global batch 8, Adam 5e-4
(5× the reference: this small net learns slowly at 1e-4 within a CPU budget), EMA 0.999 with warm-up.
Trained on ``../shared/data/train``; the EMA validation loss on ``../shared/data/valid`` selects the
checkpoint. Reproduce::

    python train.py --config configs/shipped_prior.py --workdir runs/shipped_prior
"""

from configs import udiffse_plus_28m


def get_config():
    config = udiffse_plus_28m.get_config()  # the NCSN++M layout, "noise" parameterisation
    config.model.nf = 16
    config.data.crop_frames = 64
    config.data.cache_mb = 1024  # the decoded ../shared/data training set (2-2.9 h: 0.5-0.7 GB) stays in memory
    config.training.batch_size = 8
    config.training.lr = 5e-4
    config.training.num_steps = 20_000
    config.training.log_every = 25
    config.training.eval_every = 250
    config.training.checkpoint_every = 250
    config.training.keep_checkpoints = 3
    config.training.sample_every = 2000
    config.training.num_valid = 80
    config.training.eval_batch_size = 8
    config.sampling.num_steps = 30
    config.sampling.num_samples = 2
    config.sampling.num_frames = 128
    return config
