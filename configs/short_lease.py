"""The prior of the short-lease recipe (``bash benchmarks/short_lease.sh``): what one GPU trains in ~7 minutes.

The recipe gives the training phase 400 s: ``training.max_seconds`` = 345 s of loop (compilation included; the
rest is setup and the last checkpoint). The choice, from XLA's cost analysis (``jax.jit(...).lower(...)
.cost_analysis()`` of ``model.score`` and of the training step, as the accelerator check reports them):

    NCSN++M (ch_mult 1,2,2,2)  parameters  forward 1 x 256 frames  train step per crop  train step, batch 8
    nf 128 (UDiffSE+ 28M)      27.7M       621 GFLOP               1.86 TFLOP (3.0x)    14.9 TFLOP
    nf 96                      15.6M       350 GFLOP               1.05 TFLOP            8.4 TFLOP
    nf 64                       6.9M       156 GFLOP               0.47 TFLOP            3.7 TFLOP

An H100 does ~990 dense bfloat16 TFLOP/s at peak, ~400 on large matrix products, and on these convolutions (many
levels of small spatial size, GroupNorm and element-wise work between them) a realistic third of that, ~130
TFLOP/s; in float32 ~50 TFLOP/s (TF32 convolutions, if XLA uses them, sit in between). So for nf 128 at batch 8:

* bfloat16: 14.9 / 130 ≈ 0.11 s per step, ~9 steps/s: ~285 s of steps after ~60 s of compilation give ~2,500
  steps, 20,000 crops = 11.4 h of speech, about 4 passes over ``train`` + ``train_extra`` (2.9 h);
* float32: ~0.3 s per step, ~1,000 steps. bfloat16 compute (parameters, Adam and the loss stay float32) triples
  what 7 minutes buy, so it is the default; the recipe's check times the forward in both dtypes on the device
  and keeps bfloat16 only where it is at least 1.25x faster (``--dtype auto``).

Why nf 128 (the reference 28M NCSN++M) rather than a narrower net with more steps (nf 96: ~1.8x the steps, nf 64
at batch 16: ~2x the steps of twice the crops): (1) at an equal number of steps a wider network lowers the loss
faster, and ~2,500 steps at batch 8 are about as many updates as the shipped prior had (3,000 at 8 x 64 frames),
with 4x the frames per crop; (2) it is the architecture of ``configs/udiffse_plus_28m.py``, so the export is the
first installment of the reference recipe: a later lease continues it (``--config.training.init_from=
runs/short_lease/prior``, which needs the same architecture) instead of starting again; a narrower net would be a
dead end. For the same reason
it trains from scratch: the shipped prior (nf 16) cannot initialise a nf 128 network.

Batch 8 (the reference's 4 leaves an H100 partly idle at 256 frames) with Adam 2e-4 (the reference 1e-4 scaled
with the batch) after a 200-step linear warm-up; EMA 0.999 with its warm-up (a window of ~1,000 of the ~2,500
steps); 256-frame crops (2 s, the reference's). Validation: the 80 centre crops of ``valid`` at 256 frames, every
``training.eval_every`` steps (the recipe sets it from the check's step rate: ~8 validations), each new best
exported (``training.export_dir``), the last step always validated. No prior samples, one checkpoint (at the
stop), ``num_steps`` only a bound: the clock ends the run.

    bash benchmarks/short_lease.sh --wheels wheels/          # on the lent machine: check, train, enhance, one JSON
    python train.py --config configs/short_lease.py --workdir runs/short_lease/train \\
        --config.training.max_seconds=345 --config.training.export_dir=runs/short_lease/prior   # the training alone
"""

import os

from configs import default, udiffse_plus_28m


def get_config():
    config = udiffse_plus_28m.get_config()  # NCSN++M nf 128 (27.7M), "noise" parameterisation
    config.model.dtype = "bfloat16"
    root = default.data_root()
    extra = os.path.join(root, "train_extra")
    if os.path.isdir(extra):
        config.data.train_dir = os.path.join(root, "train") + "," + extra
    config.data.crop_frames = 256
    config.training.batch_size = 8
    config.training.eval_batch_size = 16
    config.training.lr = 2e-4
    config.training.warmup_steps = 200
    config.training.ema_decay = 0.999
    config.training.num_steps = 100_000  # a bound: training.max_seconds ends the run
    config.training.max_seconds = 345.0
    config.training.log_every = 25
    config.training.eval_every = 300
    config.training.checkpoint_every = 1_000_000  # one checkpoint, at the stop
    config.training.keep_checkpoints = 1
    config.training.sample_every = 0
    config.training.num_valid = 80
    return config
