"""UDiffSE prior (Nortier et al., ICASSP 2024): NCSN++ 65M, "udiffse" parameterisation (output / t).

Reference: UDiffSE ``train.py --transform_type exponent --format wsj0 --gpus 2 --batch_size 14`` under DDP,
i.e. 2 GPUs × 14 = a global batch of 28 (``training.batch_size`` here is always the global batch; on
8 devices use e.g. ``--config.training.batch_size=32``, the batch must divide by the device count).
Adam 1e-4, EMA 0.999 with warm-up, 256-frame crops, t_eps 0.03. The reference trained on WSJ0 si_tr_s;
the default data are the shared clean-speech pack.
"""

from configs import default


def get_config():
    config = default.get_config()
    config.model.nf = 128
    config.model.ch_mult = (1, 1, 2, 2, 2, 2, 2)
    config.model.num_res_blocks = 2
    config.model.attn_resolutions = (16,)
    config.model.parameterization = "udiffse"
    config.training.batch_size = 28
    config.training.eval_batch_size = 4
    return config
