"""The supervised baseline at the size of the shipped prior (see configs/sgmse_cpu.py)::

    python train.py --config configs/supervised_cpu.py --workdir runs/supervised_cpu
"""

from configs import sgmse_cpu, supervised


def get_config():
    return sgmse_cpu.small(supervised.get_config())
