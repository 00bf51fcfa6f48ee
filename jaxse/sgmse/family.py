"""The ``"sgmse"`` and ``"supervised"`` model families: trained on noisy/clean pairs, not on clean speech alone.

* ``"sgmse"``: SGMSE+'s conditional score model, trained by denoising score matching (``loss.kind="dsm"``) or by
  the weighted generative-supervised loss (``loss.kind="weighted"``), EMA 0.999; enhanced by the PC sampler
  (``enhance.py --method sgmse+``).
* ``"supervised"``: the predictive baseline, same network without time input, trained by 0.5·Σ|x0 − x̂|², EMA
  0.999; enhanced by one forward (``enhance.py --method supervised``).

Training data (``config.data``):

* ``source="mix"``: clean speech ``train_dir`` (comma-separated roots) mixed on the fly with noise from
  ``noise_dir`` at SNRs drawn uniformly from ``snr_range`` (:class:`jaxse.sgmse.data.MixingDataset`, a pure
  function of (seed, step)); validation: ``valid_dir`` mixed with ``valid_noise_dir`` (default ``noise_dir``)
  by a fixed plan.
* ``source="paired"``: the reference layout, ``train_dir/clean`` and ``train_dir/noisy`` with the same relative
  paths (:class:`jaxse.sgmse.data.PairedSpeechDataset`); validation from ``valid_dir`` in the same layout.

Every pair is divided by the peak of its noisy crop (the reference's ``normalize="noisy"``).
"""

from __future__ import annotations

import dataclasses
import functools

from jaxse.diffusion.family import NCSNppCheckpointFamily
from jaxse.diffusion.ncsnpp import NCSNppConfig
from jaxse.diffusion.sde import OUVESDE
from jaxse.sgmse import training as sgt
from jaxse.sgmse.models import ConditionalScoreModel, PredictiveModel

DATA_SOURCES = ("mix", "paired")
_NET_FIELDS = {f.name for f in dataclasses.fields(NCSNppConfig)}


def _net_kwargs(config, fixed: dict, allowed_extra=()) -> dict:
    m = config.model
    unknown = set(m.keys()) - (_NET_FIELDS - set(fixed)) - {"family", *allowed_extra}
    if unknown:
        raise ValueError(f"unknown (or fixed by the model family) config.model fields: {sorted(unknown)}")
    return {**{k: m[k] for k in m.keys() if k in _NET_FIELDS}, **fixed}


class _PairedFamily(NCSNppCheckpointFamily):
    """What both families share: paired data, no prior samples (the rest: :class:`NCSNppCheckpointFamily`)."""

    has_sampler = False
    batch_fields = ("clean", "noisy")

    def make_dataset(self, config, spec, split: str, crop_frames: int):
        from jaxse.sgmse.data import MixingDataset, PairedSpeechDataset

        d = config.data
        source = str(d.get("source", "mix"))
        if source not in DATA_SOURCES:
            raise ValueError(f"data.source must be one of {DATA_SOURCES}, got {source!r}")
        root = d.train_dir if split == "train" else d.valid_dir
        if source == "paired":
            return PairedSpeechDataset(root, sample_rate=int(d.sample_rate), crop_frames=int(crop_frames), spec=spec)
        noise = d.noise_dir if split == "train" else (d.get("valid_noise_dir", "") or d.noise_dir)
        return MixingDataset(root, noise, sample_rate=int(d.sample_rate), crop_frames=int(crop_frames), spec=spec,
                             snr_range=tuple(d.snr_range))

    def validate_config(self, config, model) -> None:
        if int(config.training.sample_every) > 0:
            raise ValueError(f"training.sample_every must be 0 for the {self.name} family (no prior samples)")
        if str(config.data.get("source", "mix")) not in DATA_SOURCES:
            raise ValueError(f"data.source must be one of {DATA_SOURCES}, got {config.data.source!r}")

    def data_info(self, train_ds, steps_per_epoch):
        info = {"train_files": len(train_ds), "train_hours": train_ds.total_duration / 3600}
        noise = getattr(train_ds, "noise_files", None)
        if noise is not None:
            info.update(noise_files=len(noise), snr_range=list(getattr(train_ds, "snr_range", ())))
        return info


class SGMSEFamily(_PairedFamily):
    name = "sgmse"

    def model_from_config(self, config) -> ConditionalScoreModel:
        """``config.model``: NCSN++ fields and ``parameterization`` (default "udiffse": output / t, the
        reference); 4 input channels. ``config.sde``: the OUVE SDE."""
        param = str(config.model.get("parameterization", "udiffse"))
        scaling = {"udiffse": "1/t", "noise": "none"}
        if param not in scaling:
            raise ValueError(f"config.model.parameterization must be one of {tuple(scaling)}, got {param!r}")
        kw = _net_kwargs(config, {"in_channels": 4, "time_embedding": True, "output_scaling": scaling[param]},
                         allowed_extra=("parameterization",))
        return ConditionalScoreModel(net=NCSNppConfig(**kw), parameterization=param, sde=OUVESDE(**dict(config.sde)))

    def model_from_dict(self, d: dict) -> ConditionalScoreModel:
        return ConditionalScoreModel.from_dict(d)

    def reference_model(self, layout):
        """SGMSE+'s conditional score model: a time embedding, 4 input channels (x_t and the noisy y), the 65M
        layout, output divided by t."""
        if layout.timed and layout.in_channels == 4 and layout.num_modules == layout.BIG_MODULES:
            return ConditionalScoreModel(net=NCSNppConfig(**layout.big(), in_channels=4), parameterization="udiffse")
        return None

    def describe_model(self, model) -> str:
        return "SGMSE+ conditional score model"

    def objective(self, config, steps_per_epoch):
        loss = config.get("loss", None) or {}
        return sgt.SGMSELoss(kind=str(loss.get("kind", "dsm")),
                             supervised_error=str(loss.get("supervised_error", "theoretical")))

    def train_step(self, model, spec, tx, ema_decay, objective):
        return functools.partial(sgt.train_step, model=model, spec=spec, tx=tx, ema_decay=float(ema_decay),
                                 loss=objective or sgt.SGMSELoss())

    def eval_step(self, model, spec, objective):
        return functools.partial(sgt.eval_step, model=model, spec=spec, loss=objective or sgt.SGMSELoss())


class SupervisedFamily(_PairedFamily):
    name = "supervised"

    def model_from_config(self, config) -> PredictiveModel:
        """``config.model``: NCSN++ fields; 2 input channels (the noisy y), no time embedding, no scaling."""
        kw = _net_kwargs(config, {"in_channels": 2, "time_embedding": False, "output_scaling": "none"},
                         allowed_extra=("parameterization",))
        return PredictiveModel(net=NCSNppConfig(**kw))

    def model_from_dict(self, d: dict) -> PredictiveModel:
        return PredictiveModel.from_dict(d)

    def reference_model(self, layout):
        """The supervised baseline: no time embedding, 2 input channels, the 65M layout."""
        if not layout.timed and layout.in_channels == 2 and layout.num_modules == layout.BIG_MODULES:
            return PredictiveModel(net=NCSNppConfig(**layout.big(), time_embedding=False, output_scaling="none"))
        return None

    def describe_model(self, model) -> str:
        return "supervised (predictive) model"

    def train_step(self, model, spec, tx, ema_decay, objective):
        return functools.partial(sgt.train_step, model=model, spec=spec, tx=tx, ema_decay=float(ema_decay))

    def eval_step(self, model, spec, objective):
        return functools.partial(sgt.eval_step, model=model, spec=spec)


SGMSE_FAMILY = SGMSEFamily()
SUPERVISED_FAMILY = SupervisedFamily()
