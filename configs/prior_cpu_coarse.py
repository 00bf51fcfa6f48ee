"""A small prior shaped for the CPU: few channels at full resolution, more at the coarse levels.

The shipped prior's network (nf 16, ch_mult 1,2,2,2) spends most of its FLOPs at the full 256-bin
resolution. With nf 8 and ch_mult 1,2,4,8 the four levels have 8/16/32/64 channels: 0.70M parameters (more
than the shipped 0.44M) at 5.5 GFLOP per 256-frame forward instead of 10.3, so a training step and an
enhancement cost about half as much. Trained from scratch with the recipe of ``configs/prior_cpu_long.py``
(train + train_extra, progressive crops, 256-frame validation crops; no warm start: the shapes differ)::

    nohup nice -n 10 taskset -c 0 python train.py --config configs/prior_cpu_coarse.py \\
        --workdir runs/prior_coarse --config.training.export_dir=runs/prior_coarse_best > runs/prior_coarse.log 2>&1 &
"""

from configs import prior_cpu_long


def get_config():
    config = prior_cpu_long.get_config()
    config.model.nf = 8
    config.model.ch_mult = (1, 2, 4, 8)
    config.data.crop_schedule = "0:64x8,4000:128x4,10000:256x2"
    config.training.init_from = ""
    config.training.warmup_steps = 0
    return config
