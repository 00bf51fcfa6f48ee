"""The long CPU training of the shipped prior's network: warm start, more speech, progressive crops.

Continues the prior shipped in ``jaxse/assets/prior`` (NCSN++M layout, nf 16, 0.44M parameters) instead of
starting again. Its first run was ``configs/shipped_prior.py`` (2,000 steps of 8 × 64-frame crops); this
config took it from step 2000 to 3000, the prior shipped since, and continues from there:

* warm start from its EMA weights (``training.init_from``) at its step, fresh Adam with a 200-step
  learning-rate warm-up;
* clean speech of ``train`` and ``train_extra`` (the same 120 speakers, 2.9 h);
* progressive crops with 512 frames per batch throughout (about the same cost per step): 8 × 64 frames up to
  step 3000, 4 × 128 up to 8000, then 2 × 256, so that the middle attention is trained on sequences close
  to the enhancement rows;
* validation on 80 centre crops of 256 frames, the same in every phase (the loss sums over frames, so it
  is comparable across phases but not with the 64-frame losses of the original run).

Run detached, on one core, resumable (rerunning the command continues the workdir); every new lowest
validation loss is exported to ``--config.training.export_dir``::

    nohup nice -n 10 taskset -c 1 python train.py --config configs/prior_cpu_long.py \\
        --workdir runs/prior_long --config.training.export_dir=runs/prior_long_best > runs/prior_long.log 2>&1 &

If the workdir is lost, warm-start again from the last export (its step is carried on)::

    python train.py --config configs/prior_cpu_long.py --workdir runs/prior_long \\
        --config.training.init_from=runs/prior_long_best --config.training.export_dir=runs/prior_long_best
"""

import os

from configs import default, shipped_prior


def get_config():
    config = shipped_prior.get_config()
    root = default.data_root()
    config.data.train_dir = ",".join(os.path.join(root, d) for d in ("train", "train_extra"))
    config.data.crop_schedule = "0:64x8,3000:128x4,8000:256x2"
    config.data.valid_frames = 256
    config.training.init_from = os.path.join("jaxse", "assets", "prior")
    config.training.warmup_steps = 200
    config.training.num_steps = 30_000
    config.training.eval_every = 500
    config.training.checkpoint_every = 250
    config.training.keep_checkpoints = 2
    config.training.sample_every = 5000
    return config
