"""Losses and train/eval steps of SGMSE+, of its weighted generative-supervised variant, and of the supervised
baseline, on batches of paired crops ``{"clean": (B, L), "noisy": (B, L)}`` (both divided by the peak of the
noisy crop, the reference's ``normalize="noisy"``).

SGMSE+ (``kind="dsm"``), per example, with ``t ~ U(t_eps, T)`` and ``z ~ N_C(0, I)``::

    x_t  = e^{−θt}x0 + (1 − e^{−θt})y + σ(t)z
    err  = σ(t)·s(x_t, y, t) + z,              L_DSM = 0.5·Σ|err|²

Weighted generative-supervised loss (``kind="weighted"``, Ayilo et al. 2023), with the "convex normalised
sigma" weight ``α_t = (σ(T) − σ(t)) / (σ(T) − σ(t_eps))`` (1 at t_eps, 0 at T)::

    L = (1 − α_t)·L_DSM + α_t·L_sup,           L_sup = 0.5·Σ|e_sup|²

with the supervised error ``e_sup`` in one of two forms (``supervised_error``):

* ``"theoretical"`` (the reference code, the default): ``x_t + (σ²/2)·s − (e^{+θt}x0 + (1 − e^{+θt})y)``;
* ``"tweedie"`` (the consistent single-step estimate of x0 for the OU mean):
  ``e^{θt}(x_t + σ²·s) − (e^{θt} − 1)y − x0``.

The reference also computes the plain DSM batch loss in the weighted case and discards it; it is reported
here as the metric ``dsm`` (it costs nothing more). Losses are batch means.

Supervised baseline: ``x̂ = net(y)``, ``L = 0.5·Σ|x0 − x̂|²``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from jaxse.diffusion.sde import complex_normal, expand_t
from jaxse.sgmse.models import ConditionalScoreModel, PredictiveModel, marginal
from jaxse.spectral import SpecConfig, wave_to_spec
from jaxse.core.train_state import ema_decay_at, ema_update

LOSS_KINDS = ("dsm", "weighted")
SUPERVISED_ERRORS = ("theoretical", "tweedie")


@dataclasses.dataclass(frozen=True)
class SGMSELoss:
    """Which loss trains the conditional score model (see the module docstring)."""

    kind: str = "dsm"
    supervised_error: str = "theoretical"

    def __post_init__(self):
        if self.kind not in LOSS_KINDS:
            raise ValueError(f"loss.kind must be one of {LOSS_KINDS}, got {self.kind!r}")
        if self.supervised_error not in SUPERVISED_ERRORS:
            raise ValueError(f"loss.supervised_error must be one of {SUPERVISED_ERRORS}, got {self.supervised_error!r}")


def _half_sq(e):
    """0.5·Σ|e|² per example (over every axis but the first)."""
    return 0.5 * jnp.sum(jnp.real(e) ** 2 + jnp.imag(e) ** 2, axis=tuple(range(1, e.ndim)))


def loss_terms(model: ConditionalScoreModel, variables, x0, y, t, z, loss: SGMSELoss = SGMSELoss()) -> dict:
    """Every intermediate of the loss at given ``t`` (B,) and ``z`` (complex, like ``x0``): ``x_t``, ``std``,
    ``score``, ``err``, ``dsm`` (batch mean of L_DSM), ``loss``, and for the weighted loss ``expo`` (e^{θt}),
    ``alpha``, ``sup_err``, ``loss_dsm_weighted`` and ``loss_sup_weighted`` (the two batch-mean terms)."""
    sde = model.sde
    mean, std = marginal(sde, x0, y, t)
    x_t = mean + expand_t(std, x0) * z
    score = model.score(variables, x_t, t, y)
    err = score * expand_t(std, score) + z
    dsm_per = _half_sq(err)
    out = {"x_t": x_t, "std": std, "score": score, "err": err, "dsm": jnp.mean(dsm_per)}
    if loss.kind == "dsm":
        out["loss"] = out["dsm"]
        return out
    expo = jnp.exp(sde.theta * t)
    e = expand_t(expo, x0)
    s2 = expand_t(std**2, x0)
    if loss.supervised_error == "theoretical":
        sup_err = x_t + 0.5 * s2 * score - (e * x0 + (1.0 - e) * y)
    else:
        sup_err = e * (x_t + s2 * score) - (e - 1.0) * y - x0
    std_eps, std_T = sde.std(sde.t_eps), sde.std(sde.T)
    alpha = (std_T - std) / (std_T - std_eps)
    dsm_w = jnp.mean((1.0 - alpha) * dsm_per)
    sup_w = jnp.mean(alpha * _half_sq(sup_err))
    out.update(expo=expo, alpha=alpha, sup_err=sup_err, loss_dsm_weighted=dsm_w, loss_sup_weighted=sup_w,
               loss=dsm_w + sup_w)
    return out


def conditional_loss(model: ConditionalScoreModel, variables, x0, y, key, loss: SGMSELoss = SGMSELoss()) -> dict:
    """:func:`loss_terms` with ``t ~ U(t_eps, T)`` per example and ``z`` drawn from ``key``."""
    sde = model.sde
    rdt = jnp.float64 if x0.dtype == jnp.complex128 else jnp.float32
    k_t, k_z = jax.random.split(key)
    t = jax.random.uniform(k_t, (x0.shape[0],), rdt, minval=sde.t_eps, maxval=sde.T)
    z = complex_normal(k_z, x0.shape, x0.dtype)
    return loss_terms(model, variables, x0, y, t, z, loss)


def supervised_terms(model: PredictiveModel, variables, x0, y) -> dict:
    """``x_hat = net(y)``, ``err = x0 − x_hat``, ``loss`` = batch mean of 0.5·Σ|err|²."""
    x_hat = model.predict(variables, y)
    err = x0 - x_hat
    return {"x_hat": x_hat, "err": err, "loss": jnp.mean(_half_sq(err))}


def _specs(batch, spec: SpecConfig):
    return wave_to_spec(batch["clean"], spec), wave_to_spec(batch["noisy"], spec)


def _scalars(model, variables, batch, key, spec, loss) -> dict:
    x0, y = _specs(batch, spec)
    if isinstance(model, PredictiveModel):
        return {"loss": supervised_terms(model, variables, x0, y)["loss"]}
    terms = conditional_loss(model, variables, x0, y, key, loss)
    out = {"loss": terms["loss"]}
    if loss.kind == "weighted":
        out.update(dsm=terms["dsm"], dsm_weighted=terms["loss_dsm_weighted"], sup_weighted=terms["loss_sup_weighted"])
    return out


def train_step(state, batch, *, model, spec: SpecConfig, tx: optax.GradientTransformation, ema_decay: float,
               loss: SGMSELoss = SGMSELoss()):
    """One optimizer step on a paired batch: ``(new_state, metrics)``; the draws of step ``s`` use
    ``fold_in(state.key, s)``."""
    key = jax.random.fold_in(state.key, state.step)

    def loss_fn(params):
        scalars = _scalars(model, {"params": params, "constants": state.constants}, batch, key, spec, loss)
        return scalars["loss"], scalars

    (_, scalars), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    decay = ema_decay_at(state.step + 1, ema_decay)
    ema_params = ema_update(state.ema_params, params, decay)
    new_state = state.replace(step=state.step + 1, params=params, ema_params=ema_params, opt_state=opt_state)
    return new_state, {**scalars, "grad_norm": optax.tree.norm(grads), "ema_decay": decay}


def eval_step(variables, batch, key, *, model, spec: SpecConfig, loss: SGMSELoss = SGMSELoss()) -> dict:
    """The loss terms of ``variables`` on a paired batch, the draws fixed by ``key``."""
    return _scalars(model, variables, batch, key, spec, loss)
