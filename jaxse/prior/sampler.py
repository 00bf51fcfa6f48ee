"""The sampler of the clean-speech prior (the ``ncsnpp`` family's :meth:`jaxse.registry.Family.prior_sampler`):
the predictor–corrector sampler of :mod:`jaxse.diffusion.samplers` run from the prior, as a whole (``lax.scan``
or unrolled) or step by step (one compiled step, the inputs of every step prepared as the whole sampler does)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxse.diffusion import samplers


@dataclasses.dataclass(frozen=True)
class PriorSampler:
    """Unconditional sampling from a score model's prior with the PC sampler ``pc``."""

    pc: samplers.PCConfig = samplers.UDIFFSE_PC

    @property
    def num_steps(self) -> int:
        return int(self.pc.num_steps)

    @property
    def nfe(self) -> int:
        """Score evaluations of a whole run."""
        return samplers.count_nfe(self.pc)

    @property
    def nfe_per_step(self) -> int:
        return self.pc.nfe_per_step

    def to_dict(self) -> dict:
        return self.pc.to_dict()

    def replace(self, **changes) -> "PriorSampler":
        """Other settings of the PC sampler (e.g. ``num_steps``)."""
        return PriorSampler(self.pc.replace(**changes))

    def sample(self, model, variables, key, shape, debug_loop: bool = False):
        """A draw of shape ``shape`` (B, F, T) (:func:`jaxse.diffusion.samplers.sample`; ``debug_loop``: its
        steps unrolled instead of a ``lax.scan``)."""
        x, _ = samplers.sample(key, model.score_fn(variables), model.sde, self.pc, shape, debug_loop=debug_loop)
        return x

    def step(self, model, variables, state, key, t, dt, last):
        """One reverse step of :meth:`sample` on ``state`` (B, F, T): scalar ``t`` and ``dt``, ``last`` whether
        it is the final one."""
        z_corr, z_pred = samplers.draw_step_noise(key, self.pc, state.shape, state.dtype)
        tv = jnp.full((state.shape[0],), t, t.dtype)
        new, _ = samplers.pc_step(model.score_fn(variables), model.sde, self.pc, state, tv, dt, z_corr, z_pred, last)
        return new

    def loop_inputs(self, model, key, shape):
        """``(x0, keys, ts, dts, lasts)``: the start state and the per-step inputs of :meth:`step` (lists of N),
        with the key use and time grid of :meth:`sample` for ``key``."""
        sde = model.sde
        k_init, k_steps = jax.random.split(key)
        x0 = sde.prior_sample(k_init, tuple(shape))
        n = self.num_steps
        keys = list(jax.random.split(k_steps, n))
        ts = list(samplers.timesteps(n, sde.t_eps, sde.T))
        dts = list(samplers.step_sizes(self.pc, sde))
        lasts = [jnp.asarray(i == n - 1) for i in range(n)]
        return x0, keys, ts, dts, lasts
