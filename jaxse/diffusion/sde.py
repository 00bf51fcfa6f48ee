"""The OUVE SDE of UDiffSE (Ornstein–Uhlenbeck drift towards 0, variance-exploding diffusion).

    dx = -θ x dt + g(t) dw,   g(t) = σ_min (σ_max/σ_min)^t sqrt(2 ln(σ_max/σ_min))

Marginal: x_t | x_0 ~ N_C(μ(t) x_0, σ(t)² I) with μ(t) = e^{-θt}. All methods are pure; ``t`` is a
scalar or has the leading (batch) shape of ``x`` and is broadcast over the remaining axes.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp


def complex_normal(key, shape, dtype=jnp.complex64):
    """Circular complex Gaussian with E|z|² = 1 (real and imaginary parts each N(0, 1/2))."""
    real_dtype = jnp.float64 if dtype == jnp.complex128 else jnp.float32
    kr, ki = jax.random.split(key)
    re = jax.random.normal(kr, shape, real_dtype)
    im = jax.random.normal(ki, shape, real_dtype)
    return ((re + 1j * im) / math.sqrt(2.0)).astype(dtype)


def _bcast(t, x):
    t = jnp.asarray(t)
    return jnp.reshape(t, t.shape + (1,) * (jnp.ndim(x) - t.ndim))


@dataclasses.dataclass(frozen=True)
class OUVESDE:
    theta: float = 1.5
    sigma_min: float = 0.05
    sigma_max: float = 0.5
    t_eps: float = 0.03
    T: float = 1.0

    @property
    def logsig(self) -> float:
        return math.log(self.sigma_max / self.sigma_min)

    def mean_coeff(self, t):
        """μ(t) = e^{-θt}."""
        return jnp.exp(-self.theta * jnp.asarray(t))

    def std(self, t):
        """σ(t), the marginal standard deviation (per complex entry, E|x_t - μx_0|² = σ²)."""
        t = jnp.asarray(t)
        th, ls = self.theta, self.logsig
        return jnp.sqrt(
            self.sigma_min**2 * jnp.exp(-2.0 * th * t) * (jnp.exp(2.0 * (th + ls) * t) - 1.0) * ls / (th + ls)
        )

    def diffusion(self, t):
        """g(t)."""
        t = jnp.asarray(t)
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** t * math.sqrt(2.0 * self.logsig)

    def drift(self, x, t=None):
        """f(x, t) = -θ x (time-independent)."""
        del t
        return -self.theta * x

    def marginal(self, x0, t):
        """Mean and std of x_t | x_0."""
        return _bcast(self.mean_coeff(t), x0) * x0, self.std(t)

    def discretize(self, x, t, dt):
        """Euler–Maruyama discretisation: (f·dt, g·sqrt(dt))."""
        return self.drift(x, t) * dt, self.diffusion(t) * jnp.sqrt(dt)

    def prior_std(self):
        return self.std(self.T)

    def prior_sample(self, key, shape, dtype=jnp.complex64):
        """x_T = σ(T)·z."""
        return (self.prior_std() * complex_normal(key, shape, dtype)).astype(dtype)

    def perturb(self, key, x0, t):
        """Sample x_t | x_0; returns (x_t, z, σ(t)) with x_t = μ(t) x0 + σ(t) z."""
        z = complex_normal(key, x0.shape, x0.dtype)
        mean, std = self.marginal(x0, t)
        return mean + _bcast(std, x0) * z, z, std

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def expand_t(t, x):
    """Reshape a per-example ``t`` (shape ``(B,)``) so it broadcasts against ``x`` (shape ``(B, ...)``)."""
    return _bcast(t, x)
