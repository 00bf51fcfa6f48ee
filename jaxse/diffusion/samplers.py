"""Predictor–corrector (PC) samplers for the OUVE diffusion prior.

Everything here is a pure function of arrays; the only state is the PRNG key. The score model enters as a
closure ``score_fn(x, t) -> score`` with ``x`` complex ``(B, F, T)`` (batch, frequency bins, frames; there is
no channel axis) and ``t`` real ``(B,)``. This module never imports a network.

One reverse step at grid time ``t_i`` with step size ``dt`` (``order="corrector_first"``, the reference order):

* corrector (annealed Langevin, ``corrector_steps`` times, σ = σ(t_i) computed once)::

      ε = c·(snr·σ)²,  x ← x + ε·score(x, t_i) + sqrt(2ε)·z        c = 1 ("udiffse"), c = 2 ("sgmse" ALD)

* predictor (reverse-time SDE, Euler step from t_i to t_i − dt)::

      x_mean = x − f(x)·dt + g(t_i)²·dt·score(x, t_i),   x ← x_mean + g(t_i)·sqrt(dt)·z

  With the OUVE drift f = −θx this is exactly UDiffSE's ``x + θ·x·dt + g²·score·dt + g·sqrt(dt)·z``.
  ``"reverse_diffusion"`` (sgmse ``x − (f·dt − G²·score)``, G = g·sqrt(dt)) and ``"euler_maruyama"``
  (sgmse ``x + (f − g²·score)·(−dt)``) are the same update in exact arithmetic for any drift; both names are
  kept because the reference codes use both, and they differ only in floating-point rounding. (Upstream sgmse's
  Euler–Maruyama always uses dt = 1/N while its reverse-diffusion predictor takes the grid spacing; here the
  step size is chosen separately by ``PCConfig.dt`` for either predictor.)

Time grid: ``t_i = linspace(T, t_eps, N)``, i = 0..N−1. Step sizes (``PCConfig.dt``):

* ``"reference"``: constant dt = T/N (= 1/N, the UDiffSE code). The last step then integrates from t_eps to
  t_eps − 1/N ≈ −0.0033 (spec (j).3).
* ``"grid"``: dt_i = t_i − t_{i+1} for i < N−1, and **dt_{N−1} = t_{N−1} = t_eps, i.e. the last step
  integrates from t_eps down to exactly t = 0**. This is upstream sgmse's choice (``stepsize = timesteps[-1]``,
  "from eps to 0"); the step sizes then sum to T exactly, as in the reference mode. The score is never evaluated
  below t_eps.

On the last step (i = N−1) no predictor noise is added unless ``noise_last_step`` (UDiffSE uses zeros; upstream
sgmse returns the last ``x_mean``, which is the same thing). The sampler returns the final state, with no extra
denoising step.

``order="predictor_first"`` runs the predictor at t_i and then the corrector at the time the predictor reached,
``max(t_i − dt, t_eps)`` (clamped so the score model is never queried below t_eps; on the last step the
corrector therefore runs at t_eps).

NFE per step = ``corrector_steps·[corrector ≠ none] + [predictor ≠ none]`` (UDiffSE: 2; 30 steps → 60).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from .sde import OUVESDE, complex_normal, expand_t

PREDICTORS = ("reverse_diffusion", "euler_maruyama", "none")
CORRECTORS = ("ald", "none")
CORRECTOR_CONVENTIONS = ("udiffse", "sgmse")
DT_MODES = ("reference", "grid")
ORDERS = ("corrector_first", "predictor_first")

ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"PCConfig.{name}={value!r} is not one of {', '.join(map(repr, choices))}")


@dataclasses.dataclass(frozen=True)
class PCConfig:
    """Settings of a predictor–corrector sampler (hashable, so it can be a static jit argument).

    Attributes:
      num_steps: N, the number of reverse steps (grid points t_0 = T, ..., t_{N−1} = t_eps).
      predictor: "reverse_diffusion", "euler_maruyama" (same update, see the module docstring) or "none".
      corrector: "ald" (annealed Langevin with ε ∝ σ(t)²) or "none".
      corrector_convention: "udiffse" (ε = (snr·σ)²) or "sgmse" (ε = 2·(snr·σ)²).
      snr: Langevin signal-to-noise ratio (0.5 in both reference codes).
      corrector_steps: Langevin steps per reverse step (one score evaluation each).
      dt: "reference" (constant T/N) or "grid" (t_i − t_{i+1}; last step t_eps → 0).
      noise_last_step: add predictor noise on the last step too (the references do not).
      order: "corrector_first" (all reference codes) or "predictor_first".
    """

    num_steps: int = 30
    predictor: str = "reverse_diffusion"
    corrector: str = "ald"
    corrector_convention: str = "udiffse"
    snr: float = 0.5
    corrector_steps: int = 1
    dt: str = "reference"
    noise_last_step: bool = False
    order: str = "corrector_first"

    def __post_init__(self):
        if not _is_int(self.num_steps) or self.num_steps < 1:
            raise ValueError(f"PCConfig.num_steps must be a positive int, got {self.num_steps!r}")
        _check_choice("predictor", self.predictor, PREDICTORS)
        _check_choice("corrector", self.corrector, CORRECTORS)
        _check_choice("corrector_convention", self.corrector_convention, CORRECTOR_CONVENTIONS)
        _check_choice("dt", self.dt, DT_MODES)
        _check_choice("order", self.order, ORDERS)
        if self.predictor == "none" and self.corrector == "none":
            raise ValueError("PCConfig: predictor and corrector are both 'none'; the sampler would do nothing")
        if not _is_int(self.corrector_steps) or self.corrector_steps < 1:
            raise ValueError(f"PCConfig.corrector_steps must be a positive int, got {self.corrector_steps!r}")
        if isinstance(self.snr, (bool, np.bool_)) or not isinstance(self.snr, (int, float, np.floating, np.integer)):
            raise ValueError(f"PCConfig.snr must be a real number, got {self.snr!r}")
        if not (math.isfinite(self.snr) and self.snr > 0):
            raise ValueError(f"PCConfig.snr must be finite and > 0, got {self.snr!r}")
        if not isinstance(self.noise_last_step, (bool, np.bool_)):
            raise ValueError(f"PCConfig.noise_last_step must be a bool, got {self.noise_last_step!r}")

    @property
    def corrector_nfe(self) -> int:
        """Score evaluations of the corrector per reverse step."""
        return self.corrector_steps if self.corrector != "none" else 0

    @property
    def nfe_per_step(self) -> int:
        return self.corrector_nfe + (1 if self.predictor != "none" else 0)

    @property
    def corrector_factor(self) -> float:
        """c in ε = c·(snr·σ)²."""
        return 1.0 if self.corrector_convention == "udiffse" else 2.0

    def replace(self, **changes) -> "PCConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# UDiffSE `src/enhancement.py::predictor_corrector` (also fast_UdiffSE / enudiffuse): corrector then
# reverse-diffusion predictor, ε = (0.5σ)², constant dt = 1/N, predictor score at the corrected state,
# no noise on the last step. 2 NFE per step.
UDIFFSE_PC = PCConfig()

# Upstream sgmse `get_pc_sampler("reverse_diffusion", "ald", snr=0.5, corrector_steps=1, denoise=True)`:
# ALD ε = 2(snr·σ)², the actual grid spacing as step size (last step eps → 0), last step noise-free (x_mean).
SGMSE_PC = PCConfig(corrector_convention="sgmse", dt="grid")


def count_nfe(cfg: PCConfig) -> int:
    """Score-function evaluations of a full run: N × (corrector_steps·[corrector ≠ none] + [predictor ≠ none])."""
    return cfg.num_steps * cfg.nfe_per_step


def timesteps(num_steps: int, t_eps: float = 0.03, T: float = 1.0, dtype=jnp.float32):
    """The reverse-time grid linspace(T, t_eps, N) (reference ``LinearScheduler`` without its unused trailing 0).

    Computed in float64 on the host and rounded once to ``dtype``.
    """
    if not _is_int(num_steps) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive int, got {num_steps!r}")
    return jnp.asarray(np.linspace(float(T), float(t_eps), int(num_steps), dtype=np.float64), dtype=dtype)


def step_sizes(cfg: PCConfig, sde: OUVESDE, dtype=jnp.float32):
    """Per-step dt, shape (N,): constant T/N ("reference") or t_i − t_{i+1} with dt_{N−1} = t_eps ("grid")."""
    n = cfg.num_steps
    if cfg.dt == "reference":
        dts = np.full((n,), float(sde.T) / n, dtype=np.float64)
    else:
        ts = np.linspace(float(sde.T), float(sde.t_eps), n, dtype=np.float64)
        dts = np.append(ts[:-1] - ts[1:], ts[-1])  # last step: t_eps -> 0
    return jnp.asarray(dts, dtype=dtype)


def corrector_step_size(cfg: PCConfig, std):
    """Langevin step ε = c·(snr·σ)² (c = 1 "udiffse", 2 "sgmse")."""
    return cfg.corrector_factor * (cfg.snr * std) ** 2


def _real_dtype(dtype):
    return jnp.float64 if jnp.dtype(dtype) == jnp.complex128 else jnp.float32


def draw_step_noise(key, cfg: PCConfig, shape, dtype=jnp.complex64):
    """The noise one reverse step consumes: ``(z_corr, z_pred)``.

    ``z_corr`` has shape ``(corrector_steps, *shape)`` (None without a corrector), ``z_pred`` has ``shape``
    (None without a predictor). The key is always split into (corrector key, predictor key), so the predictor
    noise for a given key does not depend on the corrector settings.
    """
    k_corr, k_pred = jax.random.split(key)
    z_corr = None
    if cfg.corrector != "none":
        z_corr = complex_normal(k_corr, (cfg.corrector_steps, *tuple(shape)), dtype)
    z_pred = complex_normal(k_pred, tuple(shape), dtype) if cfg.predictor != "none" else None
    return z_corr, z_pred


def _corrector_noise_list(cfg: PCConfig, x, z_corr):
    """Normalise z_corr to a list of ``corrector_steps`` arrays shaped like x."""
    n = cfg.corrector_steps
    if z_corr is None:
        raise ValueError("pc_step: the corrector needs z_corr")
    z_corr = jnp.asarray(z_corr)
    if z_corr.shape == x.shape:
        if n != 1:
            raise ValueError(
                f"pc_step: z_corr of shape {z_corr.shape} (= x.shape) is only accepted when corrector_steps == 1; "
                f"pass shape {(n, *x.shape)}"
            )
        return [z_corr]
    if z_corr.shape != (n, *x.shape):
        raise ValueError(
            f"pc_step: z_corr must have shape {(n, *x.shape)} (or x.shape when corrector_steps == 1), "
            f"got {z_corr.shape}"
        )
    return [z_corr[k] for k in range(n)]


def _corrector(score_fn, cfg, x, t, std, zs):
    """Annealed Langevin steps at time t; returns (x, last score)."""
    eps = expand_t(corrector_step_size(cfg, std), x)
    noise_scale = jnp.sqrt(2.0 * eps)
    score = None
    for z in zs:
        score = score_fn(x, t)
        x = x + eps * score + noise_scale * z
    return x, score


def _predictor(score_fn, sde, cfg, x, t, g, dt, z_pred, last):
    """Reverse-SDE Euler step from t to t − dt; returns (x_new, x_mean, score)."""
    score = score_fn(x, t)
    f = sde.drift(x, t)
    g_b = expand_t(g, x)
    if cfg.predictor == "reverse_diffusion":
        # sgmse: rev_f = f·dt − G²·score with G = g·sqrt(dt); x_mean = x − rev_f.
        G = g_b * jnp.sqrt(dt)
        x_mean = x - (f * dt - G**2 * score)
    else:  # euler_maruyama: x_mean = x + (f − g²·score)·(−dt)
        x_mean = x + (f - g_b**2 * score) * (-dt)
        G = g_b * jnp.sqrt(dt)
    if z_pred is None:
        raise ValueError("pc_step: the predictor needs z_pred")
    z_pred = jnp.asarray(z_pred)
    if z_pred.shape != x.shape:
        raise ValueError(f"pc_step: z_pred must have shape {x.shape}, got {z_pred.shape}")
    if not cfg.noise_last_step:
        z_pred = jnp.where(jnp.asarray(last), jnp.zeros_like(z_pred), z_pred)
    return x_mean + G * z_pred, x_mean, score


def pc_step(score_fn: ScoreFn, sde: OUVESDE, cfg: PCConfig, x, t, dt, z_corr, z_pred, last):
    """One predictor–corrector step with given noise; pure and jit/scan-safe.

    Args:
      score_fn: ``score_fn(x, t) -> score``, x complex (B, F, T), t real (B,).
      sde: the OUVE SDE (σ, g and the drift).
      cfg: sampler settings (static).
      x: state at t, complex (B, F, T).
      t: (B,) time of this step (t_i).
      dt: step size, scalar or (B,).
      z_corr: corrector noise, shape ``(corrector_steps, *x.shape)``; ``x.shape`` is also accepted when
        ``corrector_steps == 1``. Ignored (may be None) when ``cfg.corrector == "none"``.
      z_pred: predictor noise, shape ``x.shape``; ignored (may be None) when ``cfg.predictor == "none"``.
      last: (possibly traced) bool; on the last step the predictor noise is zeroed unless
        ``cfg.noise_last_step``.

    Returns:
      ``(x_new, aux)``. ``aux`` holds
        * ``x_corrected``: the state after the corrector phase (with ``corrector_first``: the predictor's input;
          with ``predictor_first``: equal to ``x_new``). Equals the predictor input if there is no corrector.
        * ``x_mean``: the predictor's noise-free output (``x_corrected`` if there is no predictor);
        * ``score``: the predictor's score, i.e. at its input state and t (the last corrector score if there is
          no predictor);
        * ``std``: σ(t), ``g``: g(t), both (B,).
      A posterior sampler can add its likelihood term to ``x_new`` afterwards.
    """
    x = jnp.asarray(x)
    rdt = _real_dtype(x.dtype)
    t = jnp.asarray(t, rdt)
    dt_b = expand_t(jnp.asarray(dt, rdt), x)
    std = sde.std(t)
    g = sde.diffusion(t)
    use_corr = cfg.corrector != "none"
    use_pred = cfg.predictor != "none"
    zs = _corrector_noise_list(cfg, x, z_corr) if use_corr else []

    score_c = score_p = None
    if cfg.order == "corrector_first":
        x_c = x
        if use_corr:
            x_c, score_c = _corrector(score_fn, cfg, x, t, std, zs)
        x_new, x_mean = x_c, x_c
        if use_pred:
            x_new, x_mean, score_p = _predictor(score_fn, sde, cfg, x_c, t, g, dt_b, z_pred, last)
    else:
        x_p, x_mean = x, x
        if use_pred:
            x_p, x_mean, score_p = _predictor(score_fn, sde, cfg, x, t, g, dt_b, z_pred, last)
        x_c = x_p
        if use_corr:
            t_c = jnp.maximum(t - jnp.asarray(dt, rdt), jnp.asarray(sde.t_eps, rdt))
            x_c, score_c = _corrector(score_fn, cfg, x_p, t_c, sde.std(t_c), zs)
        x_new = x_c
    aux = {
        "x_corrected": x_c,
        "x_mean": x_mean,
        "score": score_p if use_pred else score_c,
        "std": std,
        "g": g,
    }
    return x_new, aux


def sample(
    key,
    score_fn: ScoreFn,
    sde: OUVESDE,
    cfg: PCConfig,
    shape,
    x_init=None,
    debug_loop: bool = False,
    return_trajectory: bool = False,
):
    """Run the N-step PC sampler from the prior (or from ``x_init``) and return the final state.

    ``key`` is split once into (initial key, step key); the step key is split into N per-step keys up front,
    and step i draws its noise with ``draw_step_noise(keys[i], ...)``. The loop runs in ``jax.lax.scan``; with
    ``debug_loop=True`` the same step body runs in a Python for-loop on the same keys (same result up to
    floating-point fusion differences). The function is traceable, e.g.
    ``jax.jit(lambda k: sample(k, score_fn, sde, cfg, shape)[0])``.

    Args:
      key: PRNG key.
      shape: (B, F, T) of the state; may be None when ``x_init`` is given.
      x_init: optional starting state (default: ``sde.prior_sample(k_init, shape)`` = σ(T)·z).

    Returns:
      ``(x, info)`` with ``info["nfe"]`` (Python int, ``count_nfe(cfg)``; becomes an array if ``sample`` itself
      is jitted), ``info["timesteps"]`` (N,), ``info["dt"]`` (N,), and with ``return_trajectory`` also
      ``info["trajectory"]`` (N, *shape): the state after each step (the last entry is ``x``).
    """
    k_init, k_steps = jax.random.split(key)
    if x_init is None:
        if shape is None:
            raise ValueError("sample: give shape or x_init")
        x = sde.prior_sample(k_init, tuple(shape))
    else:
        x = jnp.asarray(x_init)
        if not jnp.iscomplexobj(x):
            x = x.astype(jnp.complex64)
        if shape is not None and tuple(shape) != x.shape:
            raise ValueError(f"sample: x_init has shape {x.shape}, expected {tuple(shape)}")
    if x.ndim < 1:
        raise ValueError("sample: the state needs a leading batch axis")
    rdt = _real_dtype(x.dtype)
    n = cfg.num_steps
    ts = timesteps(n, sde.t_eps, sde.T, dtype=rdt)
    dts = step_sizes(cfg, sde, dtype=rdt)
    keys = jax.random.split(k_steps, n)
    lasts = jnp.arange(n) == n - 1
    batch = x.shape[0]

    def body(state, inputs):
        k, t_i, dt_i, last = inputs
        z_corr, z_pred = draw_step_noise(k, cfg, state.shape, state.dtype)
        t_vec = jnp.full((batch,), t_i, dtype=rdt)
        new, _ = pc_step(score_fn, sde, cfg, state, t_vec, dt_i, z_corr, z_pred, last)
        return new, (new if return_trajectory else None)

    if debug_loop:
        outs = []
        for i in range(n):
            x, out = body(x, (keys[i], ts[i], dts[i], lasts[i]))
            outs.append(out)
        traj = jnp.stack(outs) if return_trajectory else None
    else:
        x, traj = jax.lax.scan(body, x, (keys, ts, dts, lasts))

    info = {"nfe": count_nfe(cfg), "timesteps": ts, "dt": dts}
    if return_trajectory:
        info["trajectory"] = traj
    return x, info
