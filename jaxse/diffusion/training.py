"""The diffusion prior's loss: denoising score matching of the reference (σ²-weighted), its train and eval steps.

One training step (inside ``jax.jit``, on the waveform batch)::

    x0  = wave_to_spec(waves)                       # compressed complex STFT, (B, F, T), on device
    t   ~ U(t_eps, T)  per example
    z   ~ N_C(0, I)    (real and imaginary parts each N(0, 1/2))
    x_t = μ(t)·x0 + σ(t)·z
    loss = mean_B( 0.5 · Σ_{F,T} |σ(t)·score(x_t, t) + z|² )

followed by the optimizer update and the EMA (:func:`jaxse.core.train_state.ema_update`). The loop, state, data,
parallelism and checkpoints are the shared ones of :mod:`jaxse.training`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from jaxse.diffusion.models import ScoreModel
from jaxse.diffusion.sde import expand_t
from jaxse.spectral import SpecConfig, wave_to_spec
from jaxse.core.train_state import ema_decay_at, ema_update


def dsm_loss(model: ScoreModel, variables, x0, key, cond=None):
    """Denoising score matching loss of the reference (σ²-weighted): ``(loss, per_example)``.

    ``x0`` complex ``(B, F, T)``; ``key`` gives ``t ~ U(t_eps, T)`` (one per example) and the complex noise.
    ``per_example = 0.5·Σ_{F,T}|σ(t)·score(x_t, t) + z|²`` and ``loss`` is its batch mean. ``cond``: the
    conditioning frames (B, T_v, D) of an audio-visual prior.
    """
    sde = model.sde
    rdt = jnp.float64 if x0.dtype == jnp.complex128 else jnp.float32
    k_t, k_z = jax.random.split(key)
    t = jax.random.uniform(k_t, (x0.shape[0],), rdt, minval=sde.t_eps, maxval=sde.T)
    x_t, z, std = sde.perturb(k_z, x0, t)
    score = model.score(variables, x_t, t) if cond is None else model.score(variables, x_t, t, cond)
    err = score * expand_t(std, score) + z
    per_example = 0.5 * jnp.sum(jnp.real(err) ** 2 + jnp.imag(err) ** 2, axis=tuple(range(1, err.ndim)))
    return jnp.mean(per_example), per_example


def train_step(state, batch, *, model: ScoreModel, spec: SpecConfig, tx: optax.GradientTransformation,
               ema_decay: float):
    """One optimizer step on ``batch["waves"]`` (peak-normalised crops ``(B, L)``; and ``batch["visual"]``, the
    aligned visual features ``(B, K, D)``, for an audio-visual prior): ``(new_state, metrics)``.

    The draws of step ``s`` use ``fold_in(state.key, s)``.
    """
    key = jax.random.fold_in(state.key, state.step)
    x0 = wave_to_spec(batch["waves"], spec)

    def loss_fn(params):
        loss, _ = dsm_loss(model, {"params": params, "constants": state.constants}, x0, key, batch.get("visual"))
        return loss

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    decay = ema_decay_at(state.step + 1, ema_decay)
    ema_params = ema_update(state.ema_params, params, decay)
    new_state = state.replace(step=state.step + 1, params=params, ema_params=ema_params, opt_state=opt_state)
    metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), "ema_decay": decay}
    return new_state, metrics


def eval_step(variables, batch, key, *, model: ScoreModel, spec: SpecConfig) -> dict:
    """``{"loss": mean DSM loss}`` of ``variables`` on ``batch["waves"]``, the draws fixed by ``key``."""
    loss, _ = dsm_loss(model, variables, wave_to_spec(batch["waves"], spec), key, batch.get("visual"))
    return {"loss": loss}
