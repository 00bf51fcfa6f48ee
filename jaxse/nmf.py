"""Itakura–Saito NMF of the noise variance: V = W H, with W (…, F, K) and H (…, K, T) non-negative.

Pure functions with arbitrary leading batch axes (one NMF per utterance). ``mask`` (…, T), 1 on the
frames that belong to the utterance and 0 on padding, keeps padded frames out of the W update and leaves
their H untouched.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def init_nmf(key, num_bins: int, num_frames: int, rank: int, batch_shape=(), delta: float = 1e-10,
             dtype=jnp.float32):
    """W, H ~ U[0, 1) clamped at δ (the reference initialisation, with an explicit key)."""
    kw, kh = jax.random.split(key)
    w = jax.random.uniform(kw, (*batch_shape, num_bins, rank), dtype)
    h = jax.random.uniform(kh, (*batch_shape, rank, num_frames), dtype)
    return jnp.maximum(w, delta), jnp.maximum(h, delta)


def is_divergence(vm, v, mask=None):
    """D_IS(Vm | V) = Σ Vm/V − log(Vm/V) − 1 over (F, T) (masked frames excluded). Vm must be > 0."""
    r = vm / v
    d = r - jnp.log(r) - 1.0
    if mask is not None:
        d = d * mask[..., None, :]
    return jnp.sum(d, axis=(-2, -1))


def mu_update(w, h, vm, mask=None, delta: float = 1e-10, exponent: float = 1.0):
    """One IS multiplicative update of W then H, the δ floor, then L1-normalised columns of W.

    The reference: W ← W ⊙ [(Vm V⁻²) Hᵀ]/[V⁻¹ Hᵀ], floor; V = WH; H ← H ⊙ [Wᵀ(Vm V⁻²)]/[Wᵀ V⁻¹], floor;
    n_k = Σ_f W_fk, W ← W/n, H ← n H (V unchanged). ``exponent=1`` is the reference update;
    ``exponent=0.5`` is the majorisation–minimisation update of Févotte & Idier (2011), whose IS
    divergence is guaranteed not to increase. The floor is applied before the normalisation, as in the
    reference, so W can end slightly below δ.
    """
    m = None if mask is None else mask[..., None, :].astype(vm.dtype)
    v = w @ h
    a = vm / v**2
    b = 1.0 / v
    if m is not None:
        a, b = a * m, b * m
    ht = jnp.swapaxes(h, -1, -2)
    w = jnp.maximum(w * ((a @ ht) / (b @ ht)) ** exponent, delta)
    v = w @ h
    wt = jnp.swapaxes(w, -1, -2)
    h_new = jnp.maximum(h * ((wt @ (vm / v**2)) / (wt @ (1.0 / v))) ** exponent, delta)
    if m is not None:
        h_new = jnp.where(m > 0, h_new, h)
    norms = jnp.sum(w, axis=-2, keepdims=True)  # (…, 1, K)
    return w / norms, h_new * jnp.swapaxes(norms, -1, -2)
