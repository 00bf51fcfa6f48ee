"""What the families of NCSN++ score networks share (the score-model core knows none of them):

* :class:`NCSNppCheckpointFamily`: the compressed STFT of ``config.spec``, an EMA of the parameters, warm start
  from a checkpoint of the same model, exports in the checkpoint layout of
  :func:`jaxse.diffusion.export.export_prior` (the prior, SGMSE+, the supervised baseline, the AV prior);
* :class:`ScorePriorFamily`: a clean-speech score prior trained by denoising score matching (OUVE SDE,
  NCSN++/NCSN++M, ``score`` parameterisation), the base of the ``ncsnpp`` family (:mod:`jaxse.prior.family`) and
  of the ``av`` family (:mod:`jaxse.av.family`, whose networks take conditioning frames).""" 

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import jax

from jaxse import registry
from jaxse.diffusion import training as dsm
from jaxse.diffusion.models import ScoreModel
from jaxse.diffusion.ncsnpp import NCSNppConfig
from jaxse.diffusion.sde import OUVESDE
from jaxse.spectral import SpecConfig, spec_to_wave

# Network output scaling implied by each parameterisation (see jaxse.diffusion.models).
OUTPUT_SCALING = {"udiffse": "1/t", "noise": "none"}


def pc_config(config):
    """The prior sampler of ``config.sampling`` (steps, and snr / corrector_steps when given)."""
    from jaxse.diffusion import samplers

    sc = config.sampling
    changes = {"num_steps": int(sc.num_steps)}
    for name in ("snr", "corrector_steps"):
        if name in sc:
            changes[name] = sc[name]
    return samplers.UDIFFSE_PC.replace(**changes)


class NCSNppCheckpointFamily(registry.Family):
    """What every family of NCSN++ networks shares (the prior here, SGMSE+ and the supervised baseline in
    :mod:`jaxse.sgmse.family`): the compressed STFT of ``config.spec``, an EMA of the parameters that
    validation, samples and exports use, warm start from a checkpoint of the same model, and exports in the
    checkpoint layout of :func:`jaxse.diffusion.export.export_prior`."""

    uses_ema = True

    def spec_from_config(self, config) -> SpecConfig:
        return SpecConfig(sample_rate=int(config.data.sample_rate), **dict(config.spec))

    def warm_start(self, model, source, steps_per_epoch):
        from jaxse.core.loading import load_checkpoint

        src_model, variables, info = load_checkpoint(source, family=self.name)
        if src_model.to_dict() != model.to_dict():
            raise ValueError(f"training.init_from={source}: its model {src_model.to_dict()} differs from the "
                             f"config's {model.to_dict()}")
        return variables, int(info.get("step") or 0)

    def restore_target(self, model, meta: dict) -> dict:
        shapes = model.abstract_variables(int(meta.get("num_bins", SpecConfig(**meta["spec"]).num_bins)))
        return {"ema_params": shapes["params"], "constants": shapes["constants"]}

    def inference_variables(self, restored: dict) -> dict:
        return {"params": restored["ema_params"], "constants": restored.get("constants") or {}}

    def export(self, directory, model, variables, spec, step, valid_loss, config, info):
        from jaxse.diffusion.export import export_prior

        train_config = config.to_dict() if hasattr(config, "to_dict") else dict(config or {})
        return export_prior(directory, model, jax.device_get(variables), spec, step=step,
                            extra={"valid_loss_ema": None if valid_loss is None else float(valid_loss),
                                   "train_config": train_config, **(info or {})})

    def export_checkpoint(self, workdir, step, output, records):
        """The EMA weights of checkpoint ``step`` as a prior (:func:`jaxse.diffusion.export.export_prior`), with
        its EMA validation loss and training config in the metadata."""
        from jaxse.core.loading import load_checkpoint
        from jaxse.diffusion.export import export_prior
        from jaxse.pytree import count_params

        valid = records.get(step, {}).get("valid/loss")
        valid = None if valid is None else float(valid)
        model, variables, meta = load_checkpoint(Path(workdir) / "checkpoints" / str(step))
        out = export_prior(output, model, variables, SpecConfig(**meta["spec"]), step=step,
                           extra={"valid_loss_ema": valid, "train_config": meta.get("config")})
        return out, (f"wrote {out}: step {step}, EMA valid loss {valid}, "
                     f"{count_params(variables['params']):,} parameters")



class ScorePriorFamily(NCSNppCheckpointFamily):
    """A clean-speech score prior (DSM on clean crops, EMA). Subclasses set ``name``, ``model_class`` and
    ``conditioned`` (whether its networks take conditioning frames, ``config.model.cond_dim > 0``)."""

    model_class = ScoreModel
    conditioned = False

    def model_from_config(self, config) -> ScoreModel:
        """The NCSN++ fields + ``parameterization`` of ``config.model``, and ``config.sde``; the network's
        ``output_scaling`` follows from the parameterisation ("udiffse" -> "1/t", "noise" -> "none")."""
        m = config.model
        parameterization = m.parameterization
        if parameterization not in OUTPUT_SCALING:
            raise ValueError(
                f"config.model.parameterization must be one of {tuple(OUTPUT_SCALING)}, got {parameterization!r}")
        net_fields = {f.name for f in dataclasses.fields(NCSNppConfig)} - {"output_scaling"}
        unknown = set(m.keys()) - net_fields - {"parameterization", "family"}
        if unknown:
            raise ValueError(f"unknown config.model fields: {sorted(unknown)}")
        net_kw = {k: m[k] for k in m.keys() if k in net_fields}
        net = NCSNppConfig(output_scaling=OUTPUT_SCALING[parameterization], **net_kw)
        if (net.cond_dim > 0) != self.conditioned:
            conditioned = [n for n in registry.family_names() if getattr(registry.family(n), "conditioned", False)]
            raise ValueError(f"config.model.cond_dim > 0 (conditioning frames) is the {' or '.join(map(repr, conditioned))} "
                             f"family's: set config.model.family={conditioned[0]!r}" if net.cond_dim else
                             f"the {self.name!r} family needs config.model.cond_dim > 0 (the conditioning dimension)")
        return self.model_class(net=net, parameterization=parameterization, sde=OUVESDE(**dict(config.sde)))

    def model_from_dict(self, d: dict) -> ScoreModel:
        return self.model_class.from_dict(d)

    def validate_config(self, config, model) -> None:
        if int(config.training.sample_every) > 0 and int(config.sampling.num_frames) % model.net.frame_multiple:
            raise ValueError(f"sampling.num_frames={config.sampling.num_frames} is not a multiple of the "
                             f"network's frame multiple ({model.net.frame_multiple})")

    def train_step(self, model, spec, tx, ema_decay, objective):
        return functools.partial(dsm.train_step, model=model, spec=spec, tx=tx, ema_decay=float(ema_decay))

    def eval_step(self, model, spec, objective):
        return functools.partial(dsm.eval_step, model=model, spec=spec)

    def sample_fn(self, model, spec, config, pc=None):
        """``(variables, key) -> waves (sampling.num_samples, crop_length(sampling.num_frames))``: prior samples
        of :func:`jaxse.diffusion.samplers.sample` (``pc``, default :func:`pc_config`), spectrogram inverted."""
        from jaxse.diffusion import samplers

        cfg = pc_config(config) if pc is None else pc
        num_frames = int(config.sampling.num_frames)
        shape = (int(config.sampling.num_samples), spec.num_bins, num_frames)
        length = spec.crop_length(num_frames)

        def fn(variables, key):
            x, _ = samplers.sample(key, model.score_fn(variables), model.sde, cfg, shape)
            return spec_to_wave(x, length, spec)

        return fn

