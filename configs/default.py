"""Default training config: the UDiffSE reference recipe (NCSN++ 65M, "udiffse" parameterisation).

Every experiment config imports this file, calls ``get_config()`` and changes what differs. Train with::

    python train.py --config configs/udiffse_65m.py --workdir runs/udiffse_65m [--config.training.seed=1 ...]

Data location: ``data.train_dir`` / ``data.valid_dir`` default to ``$JAXSE_DATA/train`` and
``$JAXSE_DATA/valid`` when the environment variable ``JAXSE_DATA`` is set, otherwise to
``../shared/data/train`` and ``../shared/data/valid``. Relative paths are resolved against the current
working directory (run from the repository root for the defaults to find ``../shared/data``).

Fields
------
model:     NCSN++ fields (nf, ch_mult, num_res_blocks, attn_resolutions, fourier_scale, group_cap, init_scale,
           fir_kernel, dtype, remat) + parameterization ("udiffse": net output / t, score = -out;
           "noise": score = -out/σ(t)). The network's output scaling follows from the parameterisation.
sde:       OUVE SDE (theta, sigma_min, sigma_max, t_eps, T).
spec:      STFT and compression (n_fft, hop_length, transform, exponent, factor, pad_multiple);
           its sample rate is data.sample_rate.
data:      train_dir (one directory, or several comma-separated), valid_dir, crop_frames (STFT frames per
           training crop), sample_rate, crop_schedule (progressive crops: "AFTER_STEP:FRAMES[xBATCH],...",
           see jaxse.data.crop_phases), valid_frames (validation crop length; 0 = crop_frames); train_dir and
           valid_dir may also be .jsonl manifests (python -m jaxse.data.manifest). The input pipeline
           (jaxse.data.pipeline): num_workers (processes decoding and cropping the batches; 0 = in the training
           thread; default from the CPU count), prefetch (finished batches per worker), cache_mb (decoded files
           kept per process, least recently used first; 0 = none: memory bounded by the batches in flight).
training:  batch_size (GLOBAL, over all devices and processes), num_steps, lr, b1, b2, eps (Adam),
           ema_decay, seed, log_every, eval_every, checkpoint_every, keep_checkpoints, sample_every (0 = off),
           num_valid (validation crops, cut to whole eval batches), eval_batch_size, init_from (warm start
           from an exported prior, a workdir or an RVAE directory: its weights, its step, a fresh optimizer),
           warmup_steps (linear learning-rate warm-up), export_dir (the model is exported there, replacing
           the previous export, whenever the validation loss reaches a new low), max_seconds (wall-clock
           budget of the loop, compilation included: stop after the step that passes it, validate, export a
           new best, save a checkpoint; 0 = no limit).
sampling:  prior samples written every training.sample_every steps: num_steps (PC steps), num_samples,
           num_frames, snr, corrector_steps (the UDiffSE PC sampler otherwise).
"""

from __future__ import annotations

import os

import ml_collections


def data_root() -> str:
    """``$JAXSE_DATA`` if set, else ``../shared/data`` (relative to the working directory)."""
    return os.environ.get("JAXSE_DATA", os.path.join("..", "shared", "data"))


def default_num_workers() -> int:
    """Input worker processes for this machine (``jaxse.data.pipeline.default_num_workers``): one core left to the
    training loop, at most 8."""
    return max(0, min(8, (os.cpu_count() or 1) - 1))


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()

    config.model = ml_collections.ConfigDict(dict(
        nf=128,
        ch_mult=(1, 1, 2, 2, 2, 2, 2),
        num_res_blocks=2,
        attn_resolutions=(16,),
        fourier_scale=16.0,
        group_cap=32,
        init_scale=0.0,
        fir_kernel=(1, 3, 3, 1),
        dtype="float32",
        remat=False,
        parameterization="udiffse",
    ))

    config.sde = ml_collections.ConfigDict(dict(theta=1.5, sigma_min=0.05, sigma_max=0.5, t_eps=0.03, T=1.0))

    config.spec = ml_collections.ConfigDict(dict(
        n_fft=510, hop_length=128, transform="exponent", exponent=0.5, factor=0.15, pad_multiple=64))

    root = data_root()
    config.data = ml_collections.ConfigDict(dict(
        train_dir=os.path.join(root, "train"),
        valid_dir=os.path.join(root, "valid"),
        crop_frames=256,
        sample_rate=16000,
        crop_schedule="",  # "" or "0:64x8,8000:128x4,...": progressive crops (jaxse.data.crop_phases)
        valid_frames=0,  # validation crop frames (0: crop_frames); fixed so the loss compares across phases
        num_workers=default_num_workers(),  # input worker processes (0: decode in the training thread)
        prefetch=2,  # finished batches each worker keeps ready
        cache_mb=0.0,  # decoded files kept per process in a bounded LRU cache (MiB; 0: none)
    ))

    config.training = ml_collections.ConfigDict(dict(
        # UDiffSE: `--gpus 2 --batch_size 14` under DDP, i.e. a global batch of 28.
        batch_size=28,
        # Not stated by the reference (PL 1.6 would default to 1000 epochs); ~1000 passes over our
        # 1781-file training set at batch 28 (64 steps per pass).
        num_steps=64_000,
        lr=1e-4,
        b1=0.9,
        b2=0.999,
        eps=1e-8,
        ema_decay=0.999,
        seed=0,
        log_every=50,
        eval_every=1000,
        checkpoint_every=1000,
        keep_checkpoints=3,
        sample_every=5000,
        num_valid=80,
        eval_batch_size=8,
        init_from="",  # warm start: an exported prior / workdir / RVAE dir (jaxse.training.warm_start_state)
        warmup_steps=0,  # linear learning-rate warm-up over the optimizer's first steps (0: constant)
        export_dir="",  # export the EMA weights here at every new lowest validation loss ("" : off)
        max_seconds=0.0,  # wall-clock budget of the training loop: stop, validate, save after it (0: no limit)
    ))

    config.sampling = ml_collections.ConfigDict(dict(
        num_steps=30,
        num_samples=2,
        num_frames=256,
        snr=0.5,
        corrector_steps=1,
    ))
    return config
