"""SGMSE+ at the size of the shipped prior, for a CPU: NCSN++M layout (one res-block per level, attention only
in the middle), nf 16, four levels (0.44M parameters with the 4 input channels), 64-frame crops, global
batch 8, Adam 5e-4 (as the shipped prior), the reference's output / t and DSM loss. Clean speech of ``train`` and
``train_extra`` mixed on the fly with ``noise/train`` at −5…5 dB; validation: ``valid`` mixed with
``noise/train`` by a fixed plan (the loss is comparable across the three small configs only within a family).

    python train.py --config configs/sgmse_cpu.py --workdir runs/sgmse_cpu

configs/weighted_cpu.py and configs/supervised_cpu.py are the same with the other two losses.
"""

from configs import sgmse


def small(config):
    config.model.nf = 16
    config.model.ch_mult = (1, 2, 2, 2)
    config.model.num_res_blocks = 1
    config.model.attn_resolutions = ()
    config.data.crop_frames = 64
    config.data.cache_mb = 1024  # the decoded clean speech and noise of ../shared/data stay in memory
    config.data.valid_frames = 256
    config.training.batch_size = 8
    config.training.lr = 5e-4
    config.training.num_steps = 3000
    config.training.log_every = 25
    config.training.eval_every = 250
    config.training.checkpoint_every = 250
    config.training.keep_checkpoints = 2
    config.training.num_valid = 40
    config.training.eval_batch_size = 8
    return config


def get_config():
    return small(sgmse.get_config())
