"""The supervised models of the SGMSE+ family: a score model conditioned on the noisy spectrogram, and the
predictive (supervised) baseline. Frozen descriptions; parameters live outside (``{"params", "constants"}``).

* :class:`ConditionalScoreModel` (family ``"sgmse"``): NCSN++ with 4 input channels ``[Re x_t, Im x_t, Re y,
  Im y]`` (the reference's channel order), output pyramid divided by ``t``, ``score = −net(x_t, t, y)``; the OUVE
  SDE drifts towards ``y`` (:func:`marginal`).
* :class:`PredictiveModel` (family ``"supervised"``): the same NCSN++ with 2 input channels ``[Re y, Im y]``,
  no time embedding and no output scaling; the estimate is ``net(y)`` (one forward).

The OUVE SDE conditioned on ``y`` is ``dx = θ(y − x) dt + g(t) dw``. In the shifted variable ``u = x − y`` (``y``
is constant) it is exactly the unconditional OUVE SDE ``du = −θu dt + g dw`` of :mod:`jaxse.diffusion.sde`, and
the score with respect to ``u`` equals the one with respect to ``x``. So the prior sampler and its step
functions are reused unchanged on ``u``, started at ``u_T = σ(T)z`` (``x_T = y + σ(T)z``), with ``x = u + y`` at
the end (:func:`score_fn_shifted`).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from jaxse.diffusion.models import ScoreModel
from jaxse.diffusion.ncsnpp import NCSNpp, NCSNppConfig
from jaxse.diffusion.sde import OUVESDE, expand_t


def marginal(sde: OUVESDE, x0, y, t):
    """Mean and std of ``x_t | x_0, y``: ``e^{−θt}x0 + (1 − e^{−θt})y`` and ``σ(t)``."""
    mu = expand_t(sde.mean_coeff(t), x0)
    return mu * x0 + (1.0 - mu) * y, sde.std(t)


@dataclasses.dataclass(frozen=True)
class ConditionalScoreModel(ScoreModel):
    """SGMSE+'s score model ``s(x_t, y, t)``; ``parameterization`` as in :class:`ScoreModel` (the reference:
    ``"udiffse"``, i.e. output divided by t and ``score = −net``)."""

    family: ClassVar[str] = "sgmse"
    net: NCSNppConfig = NCSNppConfig(in_channels=4)

    def __post_init__(self):
        super().__post_init__()
        if self.net.in_channels != 4 or not self.net.time_embedding:
            raise ValueError("a conditional score model needs an NCSN++ with in_channels=4 and a time embedding")

    def init(self, key, num_bins: int = 256, num_frames: int | None = None, batch: int = 1):
        n = num_frames or self.net.frame_multiple
        x = jnp.zeros((batch, num_bins, n), jnp.complex64)
        t = jnp.full((batch,), 0.5, jnp.float32)
        variables = jax.jit(self.module.init)({"params": key}, x, t, x)
        return {"params": variables["params"], "constants": variables["constants"]}

    def apply_net(self, variables, x, t, y=None):
        if y is None:
            raise ValueError("a conditional score model needs the noisy spectrogram y")
        return self.module.apply({"params": variables["params"], "constants": variables["constants"]}, x, t, y)

    def score(self, variables, x, t, y=None):
        """``x`` complex (B, F, T), ``t`` (B,), ``y`` complex (B, F, T) -> score (B, F, T)."""
        out = self.apply_net(variables, x, t, y)
        if self.parameterization == "udiffse":
            return -out
        return -out / expand_t(self.sde.std(t), out)


def score_fn_shifted(model: ConditionalScoreModel, variables, y):
    """The score as a function of the shifted state ``u = x − y``: ``(u, t) -> score(u + y, t, y)``, for the
    unconditional samplers of :mod:`jaxse.diffusion.samplers` (see the module docstring)."""
    return lambda u, t: model.score(variables, u + y, t, y)


@dataclasses.dataclass(frozen=True)
class PredictiveModel:
    """The supervised baseline: ``x̂ = net(y)`` with a 2-channel NCSN++ without time embedding."""

    net: NCSNppConfig = NCSNppConfig(in_channels=2, time_embedding=False, output_scaling="none")
    family: ClassVar[str] = "supervised"

    def __post_init__(self):
        if self.net.in_channels != 2 or self.net.time_embedding or self.net.output_scaling != "none":
            raise ValueError("the predictive model needs an NCSN++ with in_channels=2, no time embedding and "
                             "output_scaling 'none'")

    @property
    def module(self) -> NCSNpp:
        return NCSNpp(self.net)

    @property
    def frame_multiple(self) -> int:
        return self.net.frame_multiple

    def init(self, key, num_bins: int = 256, num_frames: int | None = None, batch: int = 1):
        n = num_frames or self.net.frame_multiple
        y = jnp.zeros((batch, num_bins, n), jnp.complex64)
        variables = jax.jit(lambda k, yy: self.module.init({"params": k}, yy, None))(key, y)
        return {"params": variables["params"], "constants": dict(variables.get("constants", {}))}

    def abstract_variables(self, num_bins: int = 256):
        return jax.eval_shape(lambda k: self.init(k, num_bins), jax.random.PRNGKey(0))

    def predict(self, variables, y):
        """The clean-speech estimate of the noisy ``y`` (complex (B, F, T))."""
        return self.module.apply({"params": variables["params"]}, y, None)

    def to_dict(self) -> dict:
        return {"family": self.family, "net": self.net.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> "PredictiveModel":
        if d.get("family") != cls.family:
            raise ValueError(f"not a predictive model's description (model family {d.get('family')!r})")
        return cls(net=NCSNppConfig.from_dict(d["net"]))
