"""The supervised (predictive) baseline of 2309.10457: the NCSN++ 65M layout with 2 input channels (the noisy y),
no time embedding and no output scaling, trained by 0.5·Σ|x0 − net(y)|² (Adam 1e-4, EMA 0.999, batch 1, 256
frames); enhancement is one forward (``enhance.py --method supervised``). Data as configs/sgmse.py::

    python train.py --config configs/supervised.py --workdir runs/supervised
"""

from configs import sgmse


def get_config():
    config = sgmse.get_config()
    config.model.family = "supervised"
    del config["loss"]
    return config
