"""Score models: an NCSN++ network plus the output parameterisation that turns it into a score.

A :class:`ScoreModel` is a frozen description; parameters live outside it in a ``variables`` dict
``{"params": ..., "constants": {...}}`` (``constants`` holds the fixed Fourier-embedding weights, which
are never trained nor averaged). Everything is pure: ``model.score(variables, x, t)``.

Parameterisations (``ScoreModel.parameterization``):

* ``"udiffse"``: the reference UDiffSE model. The network divides its output pyramid by ``t`` (not σ(t))
  before its output conv, and ``score = -net(x, t)``. Use with ``NCSNppConfig(output_scaling="1/t")``.
* ``"noise"``: the network predicts the noise z (UDiffSE+ / NCSN++M) and ``score = -net(x, t) / σ(t)``.
  Use with ``output_scaling="none"``. This is the principled choice for new models.
"""

from __future__ import annotations

from typing import ClassVar

import dataclasses

import jax
import jax.numpy as jnp

from jaxse.diffusion.ncsnpp import NCSNpp, NCSNppConfig
from jaxse.diffusion.sde import OUVESDE, expand_t

PARAMETERIZATIONS = ("udiffse", "noise")


@dataclasses.dataclass(frozen=True)
class ScoreModel:
    net: NCSNppConfig = NCSNppConfig()
    family: ClassVar[str] = "ncsnpp"  # the model family (jaxse.registry) recorded in checkpoints
    parameterization: str = "udiffse"
    sde: OUVESDE = OUVESDE()

    def __post_init__(self):
        if self.parameterization not in PARAMETERIZATIONS:
            raise ValueError(f"parameterization must be one of {PARAMETERIZATIONS}, got {self.parameterization!r}")
        expected = "1/t" if self.parameterization == "udiffse" else "none"
        if self.net.output_scaling != expected:
            raise ValueError(
                f"parameterization {self.parameterization!r} needs net.output_scaling={expected!r}, "
                f"got {self.net.output_scaling!r}")

    @property
    def module(self) -> NCSNpp:
        return NCSNpp(self.net)

    def init(self, key, num_bins: int = 256, num_frames: int | None = None, batch: int = 1):
        """Fresh variables ``{"params", "constants"}`` (reference initialisation)."""
        n = num_frames or self.net.frame_multiple
        x = jnp.zeros((batch, num_bins, n), jnp.complex64)
        t = jnp.full((batch,), 0.5, jnp.float32)
        cond = jnp.zeros((batch, 1, self.net.cond_dim), jnp.float32) if self.net.cond_dim else None
        variables = jax.jit(self.module.init)({"params": key}, x, t, None, cond)
        return {"params": variables["params"], "constants": variables["constants"]}

    def abstract_variables(self, num_bins: int = 256):
        """Shapes/dtypes of the variables, without allocating them."""
        return jax.eval_shape(lambda k: self.init(k, num_bins), jax.random.PRNGKey(0))

    def apply_net(self, variables, x, t, cond=None, cond_mask=None):
        return self.module.apply({"params": variables["params"], "constants": variables["constants"]}, x, t,
                                 None, cond, cond_mask)

    def score(self, variables, x, t, cond=None, cond_mask=None):
        """Score of the perturbed prior at time t: ``x`` complex (B, F, T), ``t`` (B,) -> complex (B, F, T).
        ``cond`` (B, T_v, D): the conditioning frames of an audio-visual prior (``net.cond_dim`` = D);
        ``cond_mask`` (B, T_v) bool: which of them are real (default all)."""
        out = self.apply_net(variables, x, t, cond, cond_mask)
        if self.parameterization == "udiffse":
            return -out
        return -out / expand_t(self.sde.std(t), out)

    def score_fn(self, variables, cond=None, cond_mask=None):
        """Closure ``(x, t) -> score`` for the samplers (an audio-visual prior: given its ``cond``)."""
        return lambda x, t: self.score(variables, x, t, cond, cond_mask)

    @property
    def frame_multiple(self) -> int:
        """Frame counts the network takes are multiples of this."""
        return self.net.frame_multiple

    def to_dict(self) -> dict:
        return {"family": self.family, "net": self.net.to_dict(), "parameterization": self.parameterization,
                "sde": self.sde.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> "ScoreModel":
        """Inverse of :meth:`to_dict`; also reads the descriptions written before ``family`` was recorded."""
        family = d.get("family", cls.family)
        if family != cls.family:
            raise ValueError(f"not a diffusion prior's description (model family {family!r})")
        return cls(net=NCSNppConfig.from_dict(d["net"]), parameterization=d["parameterization"],
                   sde=OUVESDE(**d["sde"]))




# Reference models.
UDIFFSE_65M = ScoreModel()
UDIFFSE_PLUS_28M = ScoreModel(
    net=NCSNppConfig(ch_mult=(1, 2, 2, 2), num_res_blocks=1, attn_resolutions=(), output_scaling="none"),
    parameterization="noise",
)
# The size of the prior shipped in jaxse/assets/prior (NCSN++M layout at nf 16, 0.44M parameters), for benchmarks
# with random weights.
SHIPPED_PRIOR_SIZE = ScoreModel(
    net=NCSNppConfig(nf=16, ch_mult=(1, 2, 2, 2), num_res_blocks=1, attn_resolutions=(), output_scaling="none"),
    parameterization="noise",
)
