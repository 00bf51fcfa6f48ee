"""The state a training run carries from step to step, and the EMA rule the families' train steps share.

EMA warm-up convention (torch_ema ``use_num_updates=True``): ``update()`` first increments its counter and
then uses it, so ``k`` counts the updates *including the current one*: the first update after the first
optimizer step uses ``k = 1`` (d = 2/11), the n-th uses ``k = n``. The training loop passes
``k = state.step + 1`` where ``state.step`` is the number of optimizer steps done before this one. The EMA
starts as a copy of the initial parameters (as torch_ema's shadow parameters do).
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class TrainState:
    """Everything a training run carries from step to step (a pytree; checkpointed as a whole).

    Attributes:
      step: int32 scalar, the number of optimizer steps done.
      params: trained network parameters.
      ema_params: their exponential moving average (used for validation, samples and inference); ``None``
        for a model family without EMA (the RVAE), which uses ``params`` instead.
      opt_state: the optax (Adam) state.
      constants: fixed network arrays (the Fourier-embedding weights): never trained nor averaged.
      key: raw ``uint32[2]`` PRNG key of the training draws; step ``s`` uses ``fold_in(key, s)``.
    """

    step: jax.Array
    params: Any
    ema_params: Any
    opt_state: Any
    constants: Any
    key: jax.Array

    @property
    def variables(self) -> dict:
        return {"params": self.params, "constants": self.constants}

    @property
    def ema_variables(self) -> dict:
        return {"params": self.ema_params, "constants": self.constants}


def ema_decay_at(num_updates, decay: float = 0.999):
    """torch_ema warm-up: ``min(decay, (1 + k)/(10 + k))`` with ``k`` the updates done *including* this one."""
    k = jnp.asarray(num_updates, jnp.float32)
    return jnp.minimum(jnp.float32(decay), (1.0 + k) / (10.0 + k))


def ema_update(ema_params, params, decay):
    """torch_ema's in-place rule ``s -= (1 - d)·(s - p)``, leaf by leaf."""
    one_minus = 1.0 - decay
    return jax.tree.map(lambda e, p: e - (one_minus * (e - p)).astype(e.dtype), ema_params, params)
