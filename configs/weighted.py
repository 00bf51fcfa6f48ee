"""SGMSE+ trained with the weighted generative-supervised loss (Ayilo, Sadeghi, Serizel, arXiv 2309.10457):
``L = (1 − α_t)·L_DSM + α_t·L_sup`` with ``α_t = (σ(T) − σ(t)) / (σ(T) − σ(t_eps))`` and the supervised error in
the reference code's form (``--config.loss.supervised_error=tweedie`` for the consistent one). Everything else
as configs/sgmse.py (reference size; train on a GPU)::

    python train.py --config configs/weighted.py --workdir runs/weighted
"""

from configs import sgmse


def get_config():
    config = sgmse.get_config()
    config.loss.kind = "weighted"
    return config
