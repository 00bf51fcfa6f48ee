"""The audio-only control of ``configs/av_cpu.py``: the same network without fusion blocks, the same data (``train``),
crops, optimiser and step budget, so that the two differ only by the (synthetic) visual features::

    python train.py --config configs/av_cpu_audio_only.py --workdir runs/ao_cpu --config.training.export_dir=runs/ao_cpu_best
"""

from configs import shipped_prior


def get_config():
    config = shipped_prior.get_config()  # NCSN++M layout, nf 16, 8 x 64-frame crops, Adam 5e-4, EMA 0.999
    config.training.num_steps = 2000  # the shipped step-2000 prior (git 835d2e4) is this run at step 2000
    config.training.sample_every = 0
    config.training.eval_every = 250
    config.training.checkpoint_every = 250
    return config
