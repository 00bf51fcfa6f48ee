"""The ``toy`` family: everything a family supplies, in one file, using only the shared layers of jaxse.

* the model: the mean log power of clean speech in each frequency bin (``params["log_power"]``, shape ``(F,)``),
  fitted by least squares to the per-crop mean log power of the training crops;
* the method ``toy-gain``: a Wiener gain ``S / (S + N)`` per bin, ``S`` the prior's power, ``N`` the noisy input's
  quietest frame in that bin (a stationary-noise floor), never below ``floor``.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxse import parallel, registry
from jaxse.core.backend import MethodBackend
from jaxse.core.checkpoint import checkpoint_metadata, write_checkpoint
from jaxse.core.loading import checkpoint_path, load_checkpoint
from jaxse.spectral import SpecConfig, wave_to_spec

NAME = "toy"
EPS = 1e-8


@dataclasses.dataclass(frozen=True)
class ToyModel:
    num_bins: int = 256

    family: ClassVar[str] = NAME
    frame_multiple: ClassVar[int] = 1

    def init(self, key, num_bins: int | None = None) -> dict:
        return {"params": {"log_power": jnp.zeros((self.num_bins,), jnp.float32)}, "constants": {}}

    def abstract_variables(self, num_bins: int | None = None) -> dict:
        return jax.eval_shape(lambda k: self.init(k, num_bins), jax.random.PRNGKey(0))

    def to_dict(self) -> dict:
        return {"family": NAME, "num_bins": self.num_bins}

    @classmethod
    def from_dict(cls, d: dict) -> "ToyModel":
        return cls(num_bins=int(d["num_bins"]))


def _mean_log_power(waves, spec):
    x = wave_to_spec(waves, spec)  # (B, F, T), the plain STFT (transform "none")
    return jnp.log(jnp.abs(x) ** 2 + EPS).mean(-1)  # (B, F)


def _loss(params, waves, spec):
    return jnp.mean((_mean_log_power(waves, spec) - params["log_power"]) ** 2)


def train_step(state, batch, *, spec, tx):
    loss, grads = jax.value_and_grad(_loss)(state.params, batch["waves"], spec)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), {"loss": loss}


def eval_step(variables, batch, key, *, spec):
    return {"loss": _loss(variables["params"], batch["waves"], spec)}


class ToyFamily(registry.Family):
    name = NAME
    uses_ema = False
    last_value_metrics = ()

    def spec_from_config(self, config) -> SpecConfig:
        return SpecConfig(sample_rate=int(config.data.sample_rate), transform="none")

    def model_from_config(self, config) -> ToyModel:
        return ToyModel(num_bins=self.spec_from_config(config).num_bins)

    def model_from_dict(self, d: dict) -> ToyModel:
        return ToyModel.from_dict(d)

    def train_step(self, model, spec, tx, ema_decay, objective):
        return functools.partial(train_step, spec=spec, tx=tx)

    def eval_step(self, model, spec, objective):
        return functools.partial(eval_step, spec=spec)

    def restore_target(self, model, meta: dict) -> dict:
        return {"params": model.abstract_variables()["params"]}

    def inference_variables(self, restored: dict) -> dict:
        return {"params": restored["params"], "constants": {}}

    def export(self, directory, model, variables, spec, step, valid_loss, config, info):
        meta = checkpoint_metadata(config or {}, model, spec, step, extra={"kind": "inference", "valid_loss": valid_loss})
        params = jax.tree.map(np.asarray, jax.device_get(variables["params"]))
        return write_checkpoint(directory, {"params": params}, meta, step)

    def export_checkpoint(self, workdir: Path, step: int, output, records: dict):
        model, variables, meta = load_checkpoint(Path(workdir) / "checkpoints" / str(step), family=NAME)
        valid = (records.get(step) or {}).get("valid/loss")
        out = self.export(Path(output), model, variables, SpecConfig(**meta["spec"]), step, valid, meta.get("config"), {})
        return out, f"wrote {out}: toy prior, step {step}, valid loss {valid}"


FAMILY = ToyFamily()


@dataclasses.dataclass(frozen=True)
class ToySettings:
    method: str = "toy-gain"
    floor: float = 0.1

    def __post_init__(self):
        if not 0.0 <= self.floor <= 1.0:
            raise ValueError(f"floor must be in [0, 1], got {self.floor}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class ToyBackend(MethodBackend):
    """The Wiener gain of the toy prior, on the plain STFT of ``spec``."""

    def __init__(self, model, variables, cfg: ToySettings, spec: SpecConfig):
        self.name, self.model, self.variables, self.cfg, self.spec = cfg.method, model, variables, cfg, spec

    def norm_factor(self, wave):
        return max(float(np.max(np.abs(wave))), 1e-12)  # training crops are peak-normalised too

    def analysis(self, waves, lengths, num_frames):
        return parallel.batched_spec(waves, lengths, num_frames, self.spec)

    def synthesis(self, spec, lengths, row_length):
        return parallel.batched_wave(spec, lengths, row_length, self.spec)

    def posterior(self, variables, key, x, mask, cond=None):
        power = jnp.abs(x) ** 2
        noise = jnp.min(jnp.where(mask[None, :] > 0, power, jnp.inf), axis=1)  # (F,) the quietest real frame
        speech = jnp.exp(variables["params"]["log_power"])
        gain = jnp.maximum(speech / (speech + noise + EPS), self.cfg.floor)
        return gain[:, None] * x * mask[None, :]

    @property
    def nfe(self) -> int:
        return 0


def make_backend(model, variables, cfg, spec) -> ToyBackend:
    return ToyBackend(model, variables, cfg, spec)


def load_backend(checkpoint, cfg: ToySettings) -> ToyBackend:
    path = checkpoint_path(checkpoint, Path("no-shipped-toy-model"), NAME, "no toy model is shipped: pass a checkpoint")
    model, variables, meta = load_checkpoint(path, family=NAME)
    return ToyBackend(model, variables, cfg, SpecConfig(**meta["spec"]))


METHOD = registry.Method("toy-gain", NAME, "toy_family.family:ToySettings", "toy-gain", "toy_family.family:load_backend",
                         "no-shipped-toy-model", backend="toy_family.family:make_backend")
