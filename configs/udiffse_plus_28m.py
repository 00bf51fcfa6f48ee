"""UDiffSE+ prior (Ayilo et al., 2025): NCSN++M (28M), "noise" parameterisation (score = -out/σ(t)).

Reference: fast_UdiffSE ``train.py --backbone ncsnpp28M --batch_size 4`` (runs/*.sh), ``max_epochs=200``;
the GPU count is not stated, so the global batch here is 4. Same loss, Adam 1e-4, EMA 0.999 with warm-up,
t_eps 0.03 and STFT as UDiffSE. ``num_steps``: ~200 passes over our 1781-file training set at batch 4.
"""

from configs import default


def get_config():
    config = default.get_config()
    config.model.nf = 128
    config.model.ch_mult = (1, 2, 2, 2)
    config.model.num_res_blocks = 1
    config.model.attn_resolutions = ()
    config.model.parameterization = "noise"
    config.training.batch_size = 4
    config.training.eval_batch_size = 4
    config.training.num_steps = 90_000
    return config
