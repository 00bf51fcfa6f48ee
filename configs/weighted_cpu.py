"""The weighted generative-supervised loss at the size of the shipped prior (see configs/sgmse_cpu.py)::

    python train.py --config configs/weighted_cpu.py --workdir runs/weighted_cpu
"""

from configs import sgmse_cpu, weighted


def get_config():
    return sgmse_cpu.small(weighted.get_config())
