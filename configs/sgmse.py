"""SGMSE+ (Richter et al.; the 2309.10457 code base): a score model conditioned on the noisy spectrogram.

NCSN++ 65M layout with 4 input channels (x_t and the noisy y), output divided by t, OUVE SDE towards y
(θ 1.5, σ 0.05…0.5, t_eps 0.03), denoising score matching; Adam 1e-4, EMA 0.999, 256-frame crops, batch 1
(the 2309.10457 README: "same hyper-parameters as SGMSE+, except batch size 1"). Full size: train on a GPU.

Data (``data.source``): "mix" (default) mixes clean speech ``data.train_dir`` with ``data.noise_dir`` on the fly
at SNRs uniform in ``data.snr_range`` (a pure function of seed and step); "paired" reads the reference layout
``DIR/clean`` + ``DIR/noisy`` from ``data.train_dir`` / ``data.valid_dir``::

    python train.py --config configs/sgmse.py --workdir runs/sgmse
    python train.py --config configs/sgmse.py --workdir runs/sgmse --config.data.source=paired \\
        --config.data.train_dir=CORPUS/train --config.data.valid_dir=CORPUS/valid

Loss (``config.loss``): ``kind`` "dsm" (SGMSE+) or "weighted" (configs/weighted.py); ``supervised_error``
"theoretical" (the reference code) or "tweedie" (the consistent estimate), for the weighted loss.
"""

import os

import ml_collections

from configs import default


def get_config():
    config = default.get_config()
    config.model.family = "sgmse"
    config.model.parameterization = "udiffse"
    root = default.data_root()
    config.data.source = "mix"
    config.data.train_dir = ",".join(os.path.join(root, d) for d in ("train", "train_extra"))
    config.data.noise_dir = os.path.join(root, "noise", "train")
    config.data.valid_noise_dir = ""  # "" : noise_dir
    config.data.snr_range = (-5.0, 5.0)
    config.loss = ml_collections.ConfigDict(dict(kind="dsm", supervised_error="theoretical"))
    config.training.batch_size = 1
    config.training.eval_batch_size = 1
    config.training.num_valid = 20
    config.training.sample_every = 0  # no prior samples: the model needs a noisy input
    return config
