"""Unsupervised speech enhancement with a diffusion prior and an NMF noise model (UDiffSE, UDiffSE+).

Observation model in the normalised compressed-spectrogram domain: X = S + N, N ~ N_C(0, diag(WH)).

* **UDiffSE** (EM): each E-step runs the reverse SDE from ``X + σ(1)z`` with the prior score and, every k
  steps, a likelihood step ``S ← S + λ g(t)² dt ∇ log N_C(X; S/μ_t, σ_t²/μ_t² + WH)`` (skipped in the
  first EM iteration, as the reference); the M-step is one IS multiplicative update of (W, H) fitted to
  ``mean_b |X − S_b|²``. The estimate is the mean of the last E-step's b samples.
* **UDiffSE+**: a single reverse pass; every k steps the NMF is updated on ``X − Ŝ0`` where Ŝ0 is a
  Tweedie-type estimate, then the likelihood step is applied.

Shapes: X is ``(U, F, T)`` (U utterances); posterior samples are ``(U, b, F, T)``; W ``(U, F, K)``, H
``(U, K, T)``; ``mask`` ``(U, T)`` marks real (non-padded) frames. Everything is pure; the step loops
run in ``lax.scan`` and the whole EM loop is a scan too, so one call is one compiled program.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxse import nmf
from jaxse.errors import SettingsError, check_numbers

from jaxse.diffusion import samplers
from jaxse.diffusion.sde import OUVESDE, complex_normal, expand_t

METHODS = ("udiffse", "udiffse+")
TWEEDIE = ("reference", "ou")


@dataclasses.dataclass(frozen=True)
class PosteriorConfig:
    """Settings of the posterior samplers (defaults: the reference values; b = 4 as in the later evaluations)."""

    method: str = "udiffse"
    num_steps: int = 30  # reverse steps per E-step (N)
    num_em: int = 5  # EM iterations (UDiffSE only)
    lmbd: float = 1.5  # likelihood weight λ
    every_k: int = 2  # likelihood (and UDiffSE+ NMF) every k steps
    num_samples: int = 4  # parallel posterior samples b, averaged
    nmf_rank: int = 4
    nmf_delta: float = 1e-10
    # 1.0: the reference IS multiplicative update; 0.5: the monotone MM variant.
    nmf_exponent: float = 1.0
    skip_first_likelihood: bool = True  # UDiffSE: the first E-step samples the prior only
    snr: float = 0.5  # corrector step ε = (snr·σ)²
    # "ald": the reference's Langevin corrector (prior score only) before each predictor step; "none".
    corrector: str = "ald"
    # UDiffSE+ estimate of s0 for the NMF: "reference" S_t + σ²·score (estimates μ_t s0, as the
    # reference code); "ou": the OU Tweedie estimate (S_t + σ²·score)/μ_t.
    tweedie: str = "reference"
    start_step: int = 0  # UDiffSE+ may start the reverse pass later (from σ(t_start))
    dt: str = "reference"  # "reference": dt = 1/N; "grid": the actual grid spacing
    # Start of each reverse pass: "reference" X + σ(t0)z (the reference code); "marginal" μ(t0)X + σ(t0)z,
    # the forward marginal of the mixture at t0 (what the SDE expects if s0 ≈ X).
    init: str = "reference"

    def __post_init__(self):
        """Refuses (:class:`jaxse.errors.SettingsError`, a ``ValueError``) a choice not among those known, a
        count < 1 and a real number that is not finite or has the wrong sign (``--config.lmbd=nan``)."""
        if self.method not in METHODS:
            raise SettingsError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.init not in ("reference", "marginal"):
            raise SettingsError(f"init must be 'reference' or 'marginal', got {self.init!r}")
        if self.tweedie not in TWEEDIE:
            raise SettingsError(f"tweedie must be one of {TWEEDIE}, got {self.tweedie!r}")
        check_numbers(self, finite=("num_steps", "num_em", "every_k", "num_samples", "nmf_rank", "start_step"))
        for name in ("num_steps", "num_em", "every_k", "num_samples", "nmf_rank"):
            if int(getattr(self, name)) < 1:
                raise SettingsError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.start_step < self.num_steps:
            raise SettingsError(f"start_step must be in [0, num_steps), got {self.start_step}")
        check_numbers(self, positive=("snr",), nonnegative=("lmbd", "nmf_delta", "nmf_exponent"))

    @property
    def pc(self) -> samplers.PCConfig:
        return samplers.PCConfig(num_steps=self.num_steps, snr=self.snr, dt=self.dt, corrector=self.corrector)

    @property
    def nfe(self) -> int:
        """Network evaluations per utterance batch (each on U·b spectrograms)."""
        per_pass = (self.num_steps - (self.start_step if self.method == "udiffse+" else 0)) * self.pc.nfe_per_step
        return per_pass * (self.num_em if self.method == "udiffse" else 1)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def likelihood_step(s, x, v, t, std, g, dt, lmbd, sde: OUVESDE):
    """``s + λ g² dt (1/μ)(X − s/μ)/((σ/μ)² + V)``: the noise-perturbed pseudo-likelihood score step.

    ``s``, ``x`` complex (B, F, T); ``v`` (B, F, T) noise variance; ``t``, ``std``, ``g`` (B,); ``dt`` scalar.
    """
    mu = expand_t(sde.mean_coeff(t), s)
    var = expand_t(std, s) ** 2 / mu**2 + v
    grad = (x - s / mu) / (mu * var)
    return s + lmbd * expand_t(g, s) ** 2 * dt * grad


# ----------------------------------------------------------------------------------------------------------
# Noise: either drawn inside the scan from per-step keys (bounded memory) or injected (parity tests).

def _step_noise(inputs, cfg: PosteriorConfig, shape, dtype):
    if "key" in inputs:
        return samplers.draw_step_noise(inputs["key"], cfg.pc, shape, dtype)
    return inputs["z_corr"], inputs["z_pred"]


def _time_grid(cfg: PosteriorConfig, sde: OUVESDE, rdt, start: int = 0):
    ts = samplers.timesteps(cfg.num_steps, sde.t_eps, sde.T, dtype=rdt)[start:]
    dts = samplers.step_sizes(cfg.pc, sde, dtype=rdt)[start:]
    idx = jnp.arange(start, cfg.num_steps)
    return ts, dts, idx


def _start(cfg: PosteriorConfig, sde: OUVESDE, xr, t0, z):
    scale = sde.mean_coeff(t0) if cfg.init == "marginal" else 1.0
    return scale * xr + sde.std(t0) * z


def _flat(x, b):
    """(U, F, T) -> (U·b, F, T), each utterance repeated b times (sample-major within an utterance)."""
    return jnp.repeat(x, b, axis=0)


def _per_utt(s, b):
    return s.reshape(s.shape[0] // b, b, *s.shape[1:])


def e_step(score_fn, sde: OUVESDE, cfg: PosteriorConfig, x, v, use_likelihood, *, key=None, noise=None,
           debug_loop: bool = False):
    """One UDiffSE E-step: N reverse steps from ``X + σ(1)z`` with the likelihood every k steps.

    Args:
      x: (U, F, T) normalised mixture; v: (U, F, T) noise variance WH.
      use_likelihood: (traced) bool; False reproduces the reference's prior-only first EM iteration.
      key: PRNG key (noise drawn step by step inside the scan), or
      noise: dict with ``z_init`` (U·b, F, T), ``z_corr`` (N, U·b, F, T), ``z_pred`` (N, U·b, F, T).
    Returns: posterior samples (U, b, F, T).
    """
    b = cfg.num_samples
    xr, vr = _flat(x, b), _flat(v, b)
    shape, dtype = xr.shape, xr.dtype
    rdt = jnp.real(xr).dtype
    ts, dts, idx = _time_grid(cfg, sde, rdt)
    n = cfg.num_steps
    if noise is None:
        k_init, k_steps = jax.random.split(key)
        z_init = complex_normal(k_init, shape, dtype)
        per_step = {"key": jax.random.split(k_steps, n)}
    else:
        z_init = noise["z_init"]
        per_step = {"z_corr": noise["z_corr"], "z_pred": noise["z_pred"]}
    s = _start(cfg, sde, xr, ts[0], z_init)
    use_likelihood = jnp.asarray(use_likelihood)

    def body(s, inputs):
        t_i, dt_i, i = inputs["t"], inputs["dt"], inputs["i"]
        z_corr, z_pred = _step_noise(inputs, cfg, shape, dtype)
        t = jnp.full((shape[0],), t_i, rdt)
        s, aux = samplers.pc_step(score_fn, sde, cfg.pc, s, t, dt_i, z_corr, z_pred, i == n - 1)
        s_lik = likelihood_step(s, xr, vr, t, aux["std"], aux["g"], dt_i, cfg.lmbd, sde)
        do = jnp.logical_and(use_likelihood, i % cfg.every_k == 0)
        return jnp.where(do, s_lik, s), None

    xs = {"t": ts, "dt": dts, "i": idx, **per_step}
    s = _scan(body, s, xs, debug_loop)
    return _per_utt(s, b)


def m_step(w, h, x, s, mask=None, cfg: PosteriorConfig = PosteriorConfig()):
    """One NMF update fitted to ``Vm = mean_b |X − S_b|²``; x (U, F, T), s (U, b, F, T)."""
    vm = jnp.mean(jnp.abs(x[:, None] - s) ** 2, axis=1)
    return nmf.mu_update(w, h, vm, mask, cfg.nmf_delta, cfg.nmf_exponent)


def udiffse(key, score_fn, sde: OUVESDE, cfg: PosteriorConfig, x, mask=None, *, w_init=None, h_init=None,
            debug_loop: bool = False):
    """The UDiffSE EM algorithm; returns ``(S_hat (U, F, T), {"W", "H", "samples"})``.

    The EM iterations run in ``lax.scan`` (each is one E-step scan plus one NMF update), so the whole
    algorithm is one compiled program.
    """
    u, f, t = x.shape
    k_nmf, k_em = jax.random.split(key)
    if w_init is None:
        w_init, h_init = nmf.init_nmf(k_nmf, f, t, cfg.nmf_rank, (u,), cfg.nmf_delta, jnp.real(x).dtype)

    def em_iter(carry, inputs):
        w, h, _ = carry
        j, k = inputs
        use_lik = jnp.logical_or(j > 0, not cfg.skip_first_likelihood)
        s = e_step(score_fn, sde, cfg, x, w @ h, use_lik, key=k, debug_loop=debug_loop)
        w, h = m_step(w, h, x, s, mask, cfg)
        return (w, h, s), None

    s0 = jnp.zeros((u, cfg.num_samples, f, t), x.dtype)
    xs = (jnp.arange(cfg.num_em), jax.random.split(k_em, cfg.num_em))
    w, h, s = _scan(em_iter, (w_init, h_init, s0), xs, debug_loop)
    return jnp.mean(s, axis=1), {"W": w, "H": h, "samples": s}


def udiffse_plus(key, score_fn, sde: OUVESDE, cfg: PosteriorConfig, x, mask=None, *, w_init=None, h_init=None,
                 noise=None, debug_loop: bool = False):
    """UDiffSE+: one reverse pass with NMF updates from a Tweedie-type estimate every k steps.

    Returns ``(S_hat (U, F, T), {"W", "H", "V", "samples"})``. ``noise`` (parity tests) is as in
    :func:`e_step`, with ``z_corr``/``z_pred`` covering steps ``start_step..N-1``.
    """
    u, f, t = x.shape
    b = cfg.num_samples
    xr = _flat(x, b)
    shape, dtype = xr.shape, xr.dtype
    rdt = jnp.real(xr).dtype
    k_nmf, k_init, k_steps = jax.random.split(key, 3)
    if w_init is None:
        w_init, h_init = nmf.init_nmf(k_nmf, f, t, cfg.nmf_rank, (u,), cfg.nmf_delta, rdt)
    ts, dts, idx = _time_grid(cfg, sde, rdt, cfg.start_step)
    n = cfg.num_steps
    if noise is None:
        z_init = complex_normal(k_init, shape, dtype)
        per_step = {"key": jax.random.split(k_steps, n - cfg.start_step)}
    else:
        z_init = noise["z_init"]
        per_step = {"z_corr": noise["z_corr"], "z_pred": noise["z_pred"]}
    s = _start(cfg, sde, xr, ts[0], z_init)

    def body(carry, inputs):
        s, s0, w, h = carry
        t_i, dt_i, i = inputs["t"], inputs["dt"], inputs["i"]
        update = i % cfg.every_k == 0
        w_new, h_new = m_step(w, h, x, _per_utt(s0, b), mask, cfg)
        w, h = jnp.where(update, w_new, w), jnp.where(update, h_new, h)
        z_corr, z_pred = _step_noise(inputs, cfg, shape, dtype)
        tv = jnp.full((shape[0],), t_i, rdt)
        s, aux = samplers.pc_step(score_fn, sde, cfg.pc, s, tv, dt_i, z_corr, z_pred, i == n - 1)
        s_lik = likelihood_step(s, xr, _flat(w @ h, b), tv, aux["std"], aux["g"], dt_i, cfg.lmbd, sde)
        s0_new = s_lik + expand_t(aux["std"], s) ** 2 * aux["score"]
        if cfg.tweedie == "ou":
            s0_new = s0_new / expand_t(sde.mean_coeff(tv), s)
        s = jnp.where(update, s_lik, s)
        s0 = jnp.where(update, s0_new, s0)
        return (s, s0, w, h), None

    xs = {"t": ts, "dt": dts, "i": idx, **per_step}
    s, _, w, h = _scan(body, (s, s, w_init, h_init), xs, debug_loop)
    samples = _per_utt(s, b)
    return jnp.mean(samples, axis=1), {"W": w, "H": h, "V": w @ h, "samples": samples}


def posterior_mean(key, score_fn, sde: OUVESDE, cfg: PosteriorConfig, x, mask=None, debug_loop: bool = False):
    """Dispatch on ``cfg.method``; returns ``(S_hat, aux)``."""
    fn = udiffse if cfg.method == "udiffse" else udiffse_plus
    return fn(key, score_fn, sde, cfg, x, mask, debug_loop=debug_loop)


def _scan(body, carry, xs, debug_loop: bool):
    if not debug_loop:
        return jax.lax.scan(body, carry, xs)[0]
    n = jax.tree_util.tree_leaves(xs)[0].shape[0]
    for i in range(n):
        carry, _ = body(carry, jax.tree_util.tree_map(lambda a: a[i], xs))
    return carry
