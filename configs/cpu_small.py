"""A small prior that trains in minutes on a 2-core CPU (for trying the pipeline, not for enhancement).

NCSN++M-style network ("noise" parameterisation, no attention except the middle block, one res-block per
level) with nf 16 and 3 levels (0.31M parameters), 32-frame crops (0.25 s), global batch 4, Adam lr 1e-3
(10× the reference). About 1 step/s on 2 CPU cores: 300 steps in ~5 min, during which the EMA validation
loss falls from ~4000 (= 0.5·F·T, an untrained net) to ~900. Run from the
repository root so that the default data dirs (``../shared/data/{train,valid}``, or ``$JAXSE_DATA/...``)
are found::

    python train.py --config configs/cpu_small.py --workdir runs/cpu_small
"""

from configs import udiffse_plus_28m


def get_config():
    config = udiffse_plus_28m.get_config()  # the NCSN++M layout, "noise" parameterisation
    config.model.nf = 16
    config.model.ch_mult = (1, 2, 2)
    config.data.crop_frames = 32
    config.data.cache_mb = 1024  # the decoded ../shared/data training set (2-2.9 h: 0.5-0.7 GB) stays in memory
    config.training.batch_size = 4
    # 10× the reference learning rate: with 1e-4 this tiny net barely moves in 300 steps.
    config.training.lr = 1e-3
    config.training.num_steps = 300
    config.training.log_every = 10
    config.training.eval_every = 50
    config.training.checkpoint_every = 100
    config.training.keep_checkpoints = 2
    config.training.sample_every = 300
    config.training.num_valid = 32
    config.training.eval_batch_size = 8
    config.sampling.num_steps = 30
    config.sampling.num_samples = 2
    config.sampling.num_frames = 64
    return config
