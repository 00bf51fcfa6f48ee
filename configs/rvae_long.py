"""The rest of the RVAE recipe for the shipped RVAE: warm start from the shipped epoch, more speech, up to 300 epochs.

The RVAE first shipped in ``jaxse/assets/rvae`` stopped at epoch 56 of the 300-epoch recipe of ``configs/rvae.py``
with its validation loss still falling; this config took it on to epoch 95 and then 172, the RVAE shipped since,
and continues from whatever is shipped: its weights (``training.init_from``), a fresh Adam with a 100-step
learning-rate warm-up, the step counter at its epoch of this data set (the KL warm-up, counted in epochs, is
over), and clean speech of ``train`` and
``train_extra`` (2.3 h after trimming silence, 9,261 sequences of 50 frames, 73 steps per epoch). Everything
else is the reference recipe (early stopping after 30 epochs without improvement, the best checkpoint kept).
Every new best is exported to ``training.export_dir``::

    nohup nice -n 10 taskset -c 0 python train.py --config configs/rvae_long.py --workdir runs/rvae_long \\
        --config.training.export_dir=runs/rvae_long_best > runs/rvae_long.log 2>&1 &

If the workdir is lost, warm-start from the last export instead (its epoch is carried on):
``--config.training.init_from=runs/rvae_long_best``.
"""

import os

from configs import default, rvae


def get_config():
    config = rvae.get_config()
    root = default.data_root()
    config.data.train_dir = ",".join(os.path.join(root, d) for d in ("train", "train_extra"))
    config.training.init_from = os.path.join("jaxse", "assets", "rvae")
    config.training.warmup_steps = 100
    config.training.eval_every = 73  # one epoch of train + train_extra
    config.training.checkpoint_every = 73
    return config
