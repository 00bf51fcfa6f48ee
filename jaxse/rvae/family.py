"""The ``"rvae"`` model family: the RVAE speech model of the RVAE-EM baselines (no EMA, no prior sampler; the
reference recipe's silence-trimmed chunks, KL warm-up and early stopping)."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import jax

from jaxse import registry
from jaxse.rvae import training as rt


class RVAEFamily(registry.Family):
    name = rt.FAMILY
    uses_ema = False
    has_sampler = False
    counts_epochs = True
    last_value_metrics = ("kl_weight",)  # the KL warm-up weight of the step, logged as is

    def detect_directory(self, path: Path) -> str | None:
        """An RVAE directory: ``rvae.json`` (+ ``rvae_params.npz``), family ``"rvae"`` unless it records another."""
        info = Path(path) / "rvae.json"
        if not info.is_file():
            return None
        try:
            return str(json.loads(info.read_text()).get("family", self.name))
        except (OSError, ValueError):
            return self.name

    def model_from_config(self, config) -> rt.RVAEModel:
        return rt.RVAEModel.from_config(config)

    def model_from_dict(self, d: dict) -> rt.RVAEModel:
        return rt.RVAEModel.from_dict(d)

    def spec_from_config(self, config):
        return rt.spec_from_config(config)

    def validate_config(self, config, model) -> None:
        from jaxse.data import crop_phases, valid_frames

        if int(config.training.sample_every) > 0:
            raise ValueError("training.sample_every must be 0 for the RVAE (it has no prior sampler)")
        if len(crop_phases(config)) > 1 or valid_frames(config) != int(config.data.crop_frames):
            raise ValueError("data.crop_schedule and data.valid_frames are for the diffusion prior (the RVAE's "
                             "silence-trimmed data set depends on its crop length)")
        bins = self.spec_from_config(config).num_bins
        if bins != model.cfg.x_dim:
            raise ValueError(f"config.model.x_dim={model.cfg.x_dim} differs from the {bins} bins of config.spec")

    def objective(self, config, steps_per_epoch):
        return rt.RVAEObjective.from_config(config, steps_per_epoch)

    def patience_start(self, objective) -> int:
        """The end of the KL warm-up: early stopping counts from there at the earliest."""
        return 0 if objective is None else int(objective.warmup_steps)

    def train_step(self, model, spec, tx, ema_decay, objective):
        objective = rt.RVAEObjective() if objective is None else objective
        return functools.partial(rt.train_step, spec=spec, tx=tx, objective=objective)

    def eval_step(self, model, spec, objective):
        objective = rt.RVAEObjective() if objective is None else objective
        return functools.partial(rt.eval_step, spec=spec, objective=objective)

    def data_info(self, train_ds, steps_per_epoch):
        return {"train_files": len(train_ds), "train_hours": train_ds.total_duration / 3600,
                "train_chunks": train_ds.total_chunks, "steps_per_epoch": steps_per_epoch}

    def warm_start(self, model, source, steps_per_epoch):
        """An RVAE directory (``rvae.json`` + ``rvae_params.npz``): its params, and its epoch at this run's
        ``steps_per_epoch`` as the step (the KL warm-up is counted in epochs; the data may differ)."""
        from jaxse.rvae.convert import CONFIG_FILE, load_rvae

        source = Path(source)
        cfg, params = load_rvae(source)
        if cfg != model.cfg:
            raise ValueError(f"training.init_from={source}: its RVAE ({cfg}) differs from the config's ({model.cfg})")
        info = json.loads((source / CONFIG_FILE).read_text()) if (source / CONFIG_FILE).is_file() else {}
        step = int(info.get("step") or 0)
        if info.get("epoch") is not None and steps_per_epoch:
            step = int(round(float(info["epoch"]) * int(steps_per_epoch)))
        return {"params": params}, step

    def restore_target(self, model, meta: dict) -> dict:
        return {"params": model.abstract_variables()["params"]}

    def inference_variables(self, restored: dict) -> dict:
        return {"params": restored["params"], "constants": {}}

    def export(self, directory, model, variables, spec, step, valid_loss, config, info):
        from jaxse.rvae.export import rvae_run_info

        train_config = config.to_dict() if hasattr(config, "to_dict") else dict(config or {})
        info = dict(info or {})
        extra = {"valid_loss": None if valid_loss is None else float(valid_loss),
                 **{k: v for k, v in info.items() if k != "data"}}
        return rt.export_rvae(directory, jax.device_get(variables["params"]),
                              rvae_run_info(step, info.get("data", {}), train_config, spec.to_dict(), extra))

    def export_checkpoint(self, workdir, step, output, records):
        """Checkpoint ``step`` as ``rvae.json`` + ``rvae_params.npz`` + ``MODEL_CARD.md``
        (:func:`jaxse.rvae.export.export_rvae_run`)."""
        from jaxse.rvae.export import export_rvae_run

        out = export_rvae_run(workdir, output, step, records)
        info = json.loads((out / "rvae.json").read_text())
        valid = records.get(step, {}).get("valid/loss")
        valid = None if valid is None else float(valid)
        return out, f"wrote {out}: RVAE step {step}, valid loss {valid}, {info['num_params']:,} parameters"


FAMILY = RVAEFamily()
