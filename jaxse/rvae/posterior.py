"""Unsupervised speech enhancement with a pretrained RVAE speech prior and an NMF noise model.

Signal model (per utterance, STFT of the peak-normalised mixture ``x / max|x|``, :mod:`jaxse.rvae.spectral`):
``X_fn ~ N_C(0, g_n v_fn(z) + [WH]_fn)`` with ``v(z) = exp(decoder(z))`` the RVAE speech variance, ``z_n ~ N(0, I)``,
a per-frame gain ``g`` and a rank-K NMF noise variance ``WH``. Four EM algorithms share the M-step and the final
Wiener filter and differ in the E-step, i.e. in how samples of z given X are drawn:

* ``"vem"``: variational EM. Adam steps on the encoder parameters only (decoder frozen) minimising
  ``Σ |X|²/Vx + log Vx + KL(q ‖ N(0, I))`` with one reparameterised sample, then a fresh sample of q.
* ``"ldem"``: Langevin dynamics EM. M parallel chains, one (p)SGLD step per EM iteration on the energy
  ``Σ |X|²/Vx + log Vx + c‖z‖²``, followed by a perturbation ``z += sqrt(eta)·ξ``.
* ``"mhem"``: Metropolis–Hastings EM. A random-walk chain (K steps, burn-in B, the last K−B states are the
  samples), warm-started across EM iterations, with one accept/reject decision per frame.
* ``"malaem"``: Metropolis-adjusted Langevin EM. As MHEM with a tamed-gradient Langevin proposal
  ``z' = z − lr·T(∇U) + sqrt(2 lr)·ξ``, ``T(G) = G / (1 + lr‖G‖_F)``, per-frame acceptance; after the chain a
  perturbation ``z += sqrt(eta)·ξ``.

M-step (one pass per EM iteration, on the R samples ``Vs_r`` of the E-step, ``Vx_r = g Vs_r + WH``): the
square-root multiplicative updates of W, then H, the L1 normalisation of the columns of W, then the gain (whose
``Vx`` still uses the old gain). Final estimate: ``Ŝ = mean_r[g Vs_r / (g Vs_r + WH)] ⊙ X`` with the samples of
a final E-step (VEM: one fresh sample; LDEM: the current chains; MHEM/MALAEM: one more chain).

Design notes:

* **Shapes.** One utterance per call: X is ``(F, N)`` complex (F = 513). The latent chains are time-major
  ``(N, C, 16)``; ``Vs`` samples are ``(R, F, N)``. Batches of utterances are handled with ``jax.vmap`` outside
  (one key per utterance).
* **Compilation.** Each EM iteration is one traced function whose inner sampler loops are ``lax.scan``s; the EM
  loop is a ``lax.scan`` over iterations (``debug_loop=True``: a Python loop over a jitted iteration, same
  result up to float rounding), so :func:`enhance_spectrogram` is a single compiled program. LDEM's scan step
  is "M-step j, then E-step j+1" (the first E-step before the loop, the last M-step after it), so that one
  decoder pass gives both the M-step's Vs and, through its vjp, the next Langevin gradient: same algorithm,
  one decoder forward pass fewer per iteration.
* **Sampler kernels** (:func:`langevin_step`, :func:`mh_step`, :func:`mala_step`) are functions of a per-frame
  energy ``frame_energy_fn(z) -> (U (z.shape[:-1]), aux)``, so they can be checked on analytic energies.
* **Randomness.** ``key`` is split into the initialisation, the EM iterations and the final E-step. W ~ U[0,1)
  and H ~ U[0,1) (clamped at the machine epsilon) come from the key (the reference re-seeds numpy with 23 before
  each); every draw that depends on the number of frames has the frame axis first, so with JAX's default
  (partitionable) threefry the noise of the first n frames does not depend on how many padded frames follow.
* **Padding.** ``mask`` (N,) marks real frames (the frames of a zero-padded row that belong to the utterance).
  Padded frames are excluded from every energy, from the W statistics and from the KL; their H columns and
  gains are left unchanged, their latent z is frozen, and their estimate is zero. The RVAE's LSTMs reset their
  state on masked frames (:mod:`jaxse.rvae.net`), so the recurrences running backward in time (the encoder's
  g_x and the decoder's backward direction) start from the last real frame exactly as without padding: a padded
  row gives the result of the unpadded utterance, up to float rounding.
* **Floors.** ``floor`` (default 1e-10) is applied to W, H and g after their updates, and ``var_floor``
  (default 1e-12) to ``Vx`` wherever it enters the likelihood (energies, VEM loss, M-step statistics); divisions
  that can meet 0/0 return 0. The reference has neither (``floor=var_floor=0``). Without them an all-zero
  input, or a run of digitally silent frames, has an unbounded likelihood: W, H, g and Vs are driven towards 0
  until ``Vx⁻²`` overflows and the updates produce NaN. The floors are far below the |X|² of any frame with
  audible content (the 16-bit quantisation noise of a peak-normalised signal is ~1e-7 per bin), so they only
  act on (near-)digital silence.

Quirks of the reference kept behind options:

* ``prior_energy="reference"``: the LDEM and MALAEM energies use ``‖z‖²`` (twice the Gaussian negative
  log-prior) as the reference code does; the default ``"gaussian"`` uses ``½‖z‖²``. MHEM uses ``½‖z‖²`` in
  both modes (so does the reference).
* ``ld_optimizer="psgld"``: RMSprop-preconditioned SGLD as the reference (``V ← αV + (1−α)∇²``,
  ``G = sqrt(V) + 1e-15``, no bias correction, V starting at 0 and kept across EM iterations [our reading]).
  Its noise ``sqrt(2 lr / G)`` is very large where gradients are tiny. The default is ``"sgld"`` (the
  reference demo's choice).
* Frame-wise accept/reject of a jointly proposed z in MHEM/MALAEM is only an approximation of MH with the
  non-causal decoder (each frame's energy depends on every frame); it is reproduced as in the reference.
* VEM's E-step loss has KL weight 1 (the training β = 0.01 is not applied at test time, as in the reference).

Our choices where the reference gives none: the default method is ``"ldem"`` (the best and fastest of the four
in the authors' evaluations); the sampling methods draw their starting point from the encoder with the key.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import optax

from jaxse.errors import SettingsError, check_numbers
from jaxse.rvae.net import decode, encode, params_of
from jaxse.rvae.spectral import RVAESpecConfig, istft, stft

METHODS = ("vem", "mhem", "malaem", "ldem")
PRIOR_ENERGIES = ("gaussian", "reference")
LD_OPTIMIZERS = ("sgld", "psgld")


@dataclasses.dataclass(frozen=True)
class RVAEPosteriorConfig:
    """Settings of the RVAE EM algorithms. Defaults: the reference (ps-rvae-se) values, except where noted."""

    method: str = "ldem"
    num_em: int = 100  # EM iterations
    nmf_rank: int = 8
    floor: float = 1e-10  # floor of W, H, g after each update (0: none, as the reference)
    var_floor: float = 1e-12  # floor of Vx = g Vs + WH in the likelihood (0: none, as the reference)
    init_eta: float = 0.01  # sampling methods start from the encoder mean + sqrt(init_eta)·ξ
    # "gaussian": prior energy ½‖z‖² everywhere; "reference": ‖z‖² in LDEM and MALAEM, as the reference code.
    prior_energy: str = "gaussian"
    # VEM
    vem_lr: float = 5e-3  # Adam learning rate (ps-rvae-se; Bie et al.'s scripts use 1e-3 and 300 iterations)
    vem_epochs: int = 1  # Adam steps per E-step
    vem_samples: int = 1  # samples of q for the M-step
    vem_wf_samples: int = 1  # samples of q for the final Wiener filter
    # LDEM
    ld_chains: int = 10
    ld_steps: int = 1  # Langevin steps per E-step
    ld_lr: float = 5e-3
    ld_eta: float = 0.01  # perturbation variance after the Langevin steps
    ld_optimizer: str = "sgld"
    psgld_alpha: float = 0.99
    psgld_eps: float = 1e-15
    # MHEM / MALAEM
    mc_chains: int = 1
    mc_steps: int = 10
    mc_burn_in: int = 5
    mh_eta: float = 0.01  # random-walk proposal variance
    mala_lr: float = 5e-3
    mala_eta: float = 0.01  # MALAEM perturbation variance after the chain

    def __post_init__(self):
        if self.method not in METHODS:
            raise SettingsError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.prior_energy not in PRIOR_ENERGIES:
            raise SettingsError(f"prior_energy must be one of {PRIOR_ENERGIES}, got {self.prior_energy!r}")
        if self.ld_optimizer not in LD_OPTIMIZERS:
            raise SettingsError(f"ld_optimizer must be one of {LD_OPTIMIZERS}, got {self.ld_optimizer!r}")
        check_numbers(self, finite=("num_em", "nmf_rank", "vem_samples", "vem_wf_samples", "ld_chains", "mc_chains",
                                    "mc_steps", "vem_epochs", "ld_steps", "mc_burn_in"))
        for name in ("num_em", "nmf_rank", "vem_samples", "vem_wf_samples", "ld_chains", "mc_chains", "mc_steps"):
            if int(getattr(self, name)) < 1:
                raise SettingsError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("vem_epochs", "ld_steps", "mc_burn_in"):
            if int(getattr(self, name)) < 0:
                raise SettingsError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.mc_burn_in >= self.mc_steps:
            raise SettingsError(f"mc_burn_in ({self.mc_burn_in}) must be smaller than mc_steps ({self.mc_steps})")
        check_numbers(self, positive=("vem_lr", "ld_lr", "mala_lr", "psgld_alpha"),
                      nonnegative=("floor", "var_floor", "init_eta", "ld_eta", "mh_eta", "mala_eta", "psgld_eps"))

    @property
    def prior_coef(self) -> float:
        """Weight c of ‖z‖² in the energy of this method."""
        if self.prior_energy == "reference" and self.method in ("ldem", "malaem"):
            return 1.0
        return 0.5

    @property
    def num_samples(self) -> int:
        """R: samples of Vs per M-step."""
        return {"vem": self.vem_samples, "ldem": self.ld_chains,
                "mhem": (self.mc_steps - self.mc_burn_in) * self.mc_chains,
                "malaem": (self.mc_steps - self.mc_burn_in) * self.mc_chains}[self.method]

    def cost(self) -> dict:
        """Network passes of one :func:`rvae_posterior` call (one utterance), counted from the code below.

        ``decoder_forward`` / ``decoder_backward``: passes of the decoder over the whole sequence, each on a batch
        of ``chains`` latent sequences (the samples of one draw; VEM's loss uses one sample, its draws of q
        ``vem_samples`` / ``vem_wf_samples``); a gradient (``jax.vjp``) is one forward plus one backward pass.
        ``encoder_forward`` / ``encoder_backward`` likewise for the encoder (VEM: every E-step; the sampling
        methods: once, for the starting point). ``samples_per_m_step`` is R. MHEM evaluates the energy at the
        proposal and again at the kept state (2 forward passes per step, plus one at the start of each chain).
        """
        n = self.num_em
        if self.method == "vem":
            dec_f = n * (self.vem_epochs + 1) + 1
            dec_b = n * self.vem_epochs
            enc_f, enc_b, chains = dec_f, dec_b, self.vem_samples
        elif self.method == "ldem":
            # the first E-step (ld_steps gradients), then num_em - 1 fused iterations (the M-step's decoder pass
            # doubles as the first gradient), then the decoder pass of the last M-step and the Wiener filter
            dec_f = self.ld_steps + (n - 1) * max(self.ld_steps, 1) + 1
            dec_b = n * self.ld_steps
            enc_f, enc_b, chains = 1, 0, self.ld_chains
        else:  # mhem / malaem: num_em chains plus the final one, 1 + 2·mc_steps energies each
            per_chain = 1 + 2 * self.mc_steps
            dec_f = (n + 1) * per_chain
            dec_b = dec_f if self.method == "malaem" else 0
            enc_f, enc_b, chains = 1, 0, self.mc_chains
        return {"em_iterations": n, "decoder_forward": dec_f, "decoder_backward": dec_b, "encoder_forward": enc_f,
                "encoder_backward": enc_b, "chains": chains, "samples_per_m_step": self.num_samples}

    @property
    def nfe(self) -> int:
        """Decoder forward passes per utterance (``cost()["decoder_forward"]``), the analogue of the diffusion
        methods' network evaluations; backward and encoder passes are in :meth:`cost`."""
        return self.cost()["decoder_forward"]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ------------------------------------------------------------------------------------- NMF and M-step


def init_rvae_nmf(key, num_bins: int, num_frames: int, rank: int, dtype=jnp.float32):
    """The RVAE reference's NMF start: W ~ U[0,1)^(F×K), H ~ U[0,1)^(K×N), clamped at the machine epsilon, H
    drawn frame-major (UDiffSE's differs: :func:`jaxse.nmf.init_nmf`)."""
    kw, kh = jax.random.split(key)
    tiny = jnp.finfo(dtype).eps
    w = jnp.maximum(jax.random.uniform(kw, (num_bins, rank), dtype), tiny)
    h = jnp.maximum(jax.random.uniform(kh, (num_frames, rank), dtype), tiny).T
    return w, h


def _mask_or_ones(mask, n: int, dtype):
    return jnp.ones((n,), dtype) if mask is None else jnp.asarray(mask).astype(dtype)


def neg_log_likelihood(p, vx, mask=None):
    """``Σ_r Σ_{f,n} p/vx_r + log vx_r`` over real frames; ``p`` (F, N) = |X|², ``vx`` (R, F, N) or (F, N)."""
    d = p / vx + jnp.log(vx)
    if mask is not None:
        d = d * mask.astype(d.dtype)
    return jnp.sum(d)


def _vx(w, h, g, vs, var_floor: float = 0.0):
    return _floor(g * vs + w @ h, var_floor)


def _div(num, den):
    """``num / den`` with 0/0 = 0 (den floored at the smallest normal number)."""
    return num / jnp.maximum(den, jnp.finfo(den.dtype).tiny)


def _floor(a, floor: float):
    return jnp.maximum(a, floor) if floor > 0 else a


def _frame_stats(p, vx, m):
    """``A = Σ_r p / vx_r²`` and ``B = Σ_r 1 / vx_r`` (F, N), zero on masked frames."""
    return jnp.sum(p / vx**2, axis=0) * m, jnp.sum(1.0 / vx, axis=0) * m


def update_w(w, h, g, p, vs, mask=None, floor: float = 0.0, var_floor: float = 0.0):
    """``W ← W ⊙ sqrt[(A Hᵀ) / (B Hᵀ)]`` (the majorise–minimise IS update)."""
    m = _mask_or_ones(mask, p.shape[-1], p.dtype)
    a, b = _frame_stats(p, _vx(w, h, g, vs, var_floor), m)
    return _floor(w * jnp.sqrt(_div(a @ h.T, b @ h.T)), floor)


def update_h(w, h, g, p, vs, mask=None, floor: float = 0.0, var_floor: float = 0.0):
    """``H ← H ⊙ sqrt[(Wᵀ A) / (Wᵀ B)]`` on real frames; masked columns unchanged."""
    m = _mask_or_ones(mask, p.shape[-1], p.dtype)
    a, b = _frame_stats(p, _vx(w, h, g, vs, var_floor), m)
    h_new = _floor(h * jnp.sqrt(_div(w.T @ a, w.T @ b)), floor)
    return jnp.where(m > 0, h_new, h)


def normalize_nmf(w, h):
    """``c_k = Σ_f |W_fk|``; ``W ← W / c``, ``H ← c H`` (WH unchanged)."""
    c = jnp.sum(jnp.abs(w), axis=0)
    return w / c, h * c[:, None]


def update_gain(w, h, g, p, vs, mask=None, floor: float = 0.0, var_floor: float = 0.0):
    """``g_n ← g_n sqrt[Σ_{r,f} p Vs Vx⁻² / Σ_{r,f} Vs Vx⁻¹]`` (Vx with the current g); masked frames kept."""
    m = _mask_or_ones(mask, p.shape[-1], p.dtype)
    vx = _vx(w, h, g, vs, var_floor)
    num = jnp.sum(p * vs / vx**2, axis=(0, 1))
    den = jnp.sum(vs / vx, axis=(0, 1))
    g_new = _floor(g * jnp.sqrt(_div(num, den)), floor)
    return jnp.where(m > 0, g_new, g)


def m_step(w, h, g, p, vs, mask=None, floor: float = 0.0, var_floor: float = 0.0):
    """One M-step: W, then H, then the normalisation, then the gain. ``vs`` (R, F, N) speech variances."""
    w = update_w(w, h, g, p, vs, mask, floor, var_floor)
    h = update_h(w, h, g, p, vs, mask, floor, var_floor)
    w, h = normalize_nmf(w, h)
    g = update_gain(w, h, g, p, vs, mask, floor, var_floor)
    return w, h, g


def wiener_estimate(x, w, h, g, vs, mask=None):
    """``Ŝ = mean_r[g Vs_r / (g Vs_r + WH)] ⊙ X`` (zero on masked frames)."""
    gvs = g * vs
    gain = jnp.mean(_div(gvs, gvs + w @ h), axis=0)
    if mask is not None:
        gain = gain * mask.astype(gain.dtype)
    return gain * x


# ------------------------------------------------------------------------------- generic sampler kernels
#
# ``frame_energy_fn(z) -> (U, aux)``: z (..., D), U of shape z.shape[:-1] (one energy per frame and chain; the
# total energy is U.sum()). ``mask``, broadcastable to U, marks the entries that may move.


def energy_and_grad(frame_energy_fn, z):
    """``(U(z), ∇_z ΣU, aux)``."""
    def total(zz):
        e, aux = frame_energy_fn(zz)
        return jnp.sum(e), (e, aux)

    (_, (e, aux)), grad = jax.value_and_grad(total, has_aux=True)(z)
    return e, grad, aux


def langevin_update(key, z, grad, lr, *, optimizer: str = "sgld", v=None, alpha: float = 0.99,
                    eps: float = 1e-15, mask=None):
    """The Langevin move given ``grad`` = ∇ΣU(z); returns ``(z, v)``.

    ``"sgld"``: ``z − lr ∇U + sqrt(2 lr) ξ``. ``"psgld"``: ``v ← αv + (1−α)∇U²``, ``G = sqrt(v) + eps``,
    ``z − lr ∇U / G + sqrt(2 lr / G) ξ`` (``v`` is the preconditioner state, same shape as z).
    """
    xi = jax.random.normal(key, z.shape, z.dtype)
    if optimizer == "sgld":
        z_new = z - lr * grad + math.sqrt(2.0 * lr) * xi
    elif optimizer == "psgld":
        v = alpha * v + (1.0 - alpha) * grad**2
        pre = jnp.sqrt(v) + eps
        z_new = z - lr * grad / pre + jnp.sqrt(2.0 * lr / pre) * xi
    else:
        raise ValueError(f"unknown Langevin optimizer {optimizer!r}")
    if mask is not None:
        z_new = jnp.where(mask[..., None] > 0, z_new, z)
    return z_new, v


def langevin_step(key, z, frame_energy_fn, lr, *, optimizer: str = "sgld", v=None, alpha: float = 0.99,
                  eps: float = 1e-15, mask=None):
    """One unadjusted Langevin step on ``ΣU`` (:func:`langevin_update`); returns ``(z, v, aux at the old z)``."""
    _, grad, aux = energy_and_grad(frame_energy_fn, z)
    z, v = langevin_update(key, z, grad, lr, optimizer=optimizer, v=v, alpha=alpha, eps=eps, mask=mask)
    return z, v, aux


def _accept(key, log_a, mask):
    u = jax.random.uniform(key, log_a.shape, log_a.dtype)
    acc = jnp.log(u) < log_a
    if mask is not None:
        acc = jnp.logical_and(acc, mask > 0)
    return acc


def mh_step(key, z, e, frame_energy_fn, eta, mask=None):
    """Random-walk Metropolis–Hastings with one decision per entry of ``e``.

    ``z' = z + sqrt(eta) ξ``; entry n moves if ``log u_n < U_n(z) − U_n(z')``. ``e`` = U(z) (carried).
    Returns ``(z, U(z), aux(z), accepted)`` for the new state (its energy is recomputed: with a non-local energy
    the mixed state's energy is not the mix of the two energies).
    """
    kp, ku = jax.random.split(key)
    z_prop = z + math.sqrt(eta) * jax.random.normal(kp, z.shape, z.dtype)
    e_prop, _ = frame_energy_fn(z_prop)
    acc = _accept(ku, e - e_prop, mask)
    z = jnp.where(acc[..., None], z_prop, z)
    e, aux = frame_energy_fn(z)
    return z, e, aux, acc


def tamed(grad, lr):
    """``G / (1 + lr ‖G‖_F)``, the Frobenius norm over frames and latent dims of each chain (axes 0 and -1)."""
    norm = jnp.sqrt(jnp.sum(grad**2, axis=(0, grad.ndim - 1), keepdims=True))
    return grad / (1.0 + lr * norm)


def mala_step(key, z, e, grad, frame_energy_fn, lr, mask=None):
    """Metropolis-adjusted Langevin step with a tamed gradient and one decision per entry of ``e``.

    ``z' = z − lr T(∇U(z)) + sqrt(2 lr) ξ``; ``log a_n = U_n(z) − U_n(z') + (‖z' − z + lr T(z)‖²_n −
    ‖z − z' + lr T(z')‖²_n) / (4 lr)``. Returns ``(z, U(z), ∇ΣU(z), aux(z), accepted)`` for the new state.
    """
    kp, ku = jax.random.split(key)
    tg = tamed(grad, lr)
    z_prop = z - lr * tg + math.sqrt(2.0 * lr) * jax.random.normal(kp, z.shape, z.dtype)
    e_prop, g_prop, _ = energy_and_grad(frame_energy_fn, z_prop)
    fwd = jnp.sum((z_prop - z + lr * tg) ** 2, axis=-1)
    bwd = jnp.sum((z - z_prop + lr * tamed(g_prop, lr)) ** 2, axis=-1)
    acc = _accept(ku, e - e_prop + (fwd - bwd) / (4.0 * lr), mask)
    z = jnp.where(acc[..., None], z_prop, z)
    e, grad, aux = energy_and_grad(frame_energy_fn, z)
    return z, e, grad, aux, acc


# ----------------------------------------------------------------------------------- RVAE energies


def _decode(dec, z, m):
    return decode({"decoder": dec}, z, mask=m)


def _noise_var_t(w, h, m):
    """(WH)ᵀ (N, F), 1 on masked frames (keeps every masked term finite)."""
    return jnp.where(m[:, None] > 0, (w @ h).T, 1.0)


def rvae_frame_energy(dec_params, pt, m, w, h, g, prior_coef: float, var_floor: float = 0.0):
    """Per-frame energy of chains z (N, C, D): ``U_nc = Σ_f |X|²/Vx + log Vx + c‖z_nc‖²`` on real frames (0 on
    masked ones), ``Vx = max(g exp(dec(z)) + WH, var_floor)``; ``aux`` is ``log Vs`` (N, C, F)."""
    vb = _noise_var_t(w, h, m)[:, None, :]
    pt3 = pt[:, None, :]
    gg = g[:, None, None]
    mm = m[:, None]

    def fn(z):
        logv = _decode(dec_params, z, m)
        vx = _floor(gg * jnp.exp(logv) + vb, var_floor)
        nll = jnp.sum(pt3 / vx + jnp.log(vx), axis=-1)
        return (nll + prior_coef * jnp.sum(z**2, axis=-1)) * mm, logv

    return fn


def _vs_from_logv(logv):
    """(..., N, C, F) log-variances -> (R, F, N) variances, R = prod(...)·C."""
    n, f = logv.shape[-3], logv.shape[-1]
    v = jnp.exp(logv).reshape((-1, n, logv.shape[-2], f))  # (S, N, C, F)
    return jnp.transpose(v, (0, 2, 3, 1)).reshape(-1, f, n)


# ------------------------------------------------------------------------------------------- E-steps


def _perturb(key, z, eta, m):
    if eta <= 0:
        return z
    return z + math.sqrt(eta) * jax.random.normal(key, z.shape, z.dtype) * m[:, None, None]


def rvae_energy_grad(logv, vjp_fn, z, pt, m, w, h, g, prior_coef: float, var_floor: float = 0.0):
    """∇_z ΣU of :func:`rvae_frame_energy` from a decoder pass already made: ``logv = dec(z)`` and its
    ``vjp_fn`` (``jax.vjp``), so that the forward pass that gives the M-step's Vs serves the next gradient."""
    gvs = g[:, None, None] * jnp.exp(logv)
    vx = gvs + _noise_var_t(w, h, m)[:, None, :]
    live = m[:, None, None] * (vx > var_floor) if var_floor > 0 else m[:, None, None]
    vx = _floor(vx, var_floor)
    (grad,) = vjp_fn(gvs * (1.0 / vx - pt[:, None, :] / vx**2) * live)
    mm = m[:, None, None]
    return grad + 2.0 * prior_coef * z * mm


def _ld_moves(key, params, cfg, data, z, v, grad, w, h, g):
    """The LDEM E-step after its first gradient: ``ld_steps`` Langevin moves, then ``z += sqrt(ld_eta)·ξ``."""
    keys = jax.random.split(key, cfg.ld_steps + 1)
    mask = data["m"][:, None]
    kw = dict(optimizer=cfg.ld_optimizer, alpha=cfg.psgld_alpha, eps=cfg.psgld_eps, mask=mask)
    if cfg.ld_steps > 0:
        z, v = langevin_update(keys[0], z, grad, cfg.ld_lr, v=v, **kw)
    if cfg.ld_steps > 1:
        fe = rvae_frame_energy(params["decoder"], data["pt"], data["m"], w, h, g, cfg.prior_coef, cfg.var_floor)

        def body(carry, k):
            z, v = carry
            z, v, _ = langevin_step(k, z, fe, cfg.ld_lr, v=v, **kw)
            return (z, v), None

        (z, v), _ = jax.lax.scan(body, (z, v), keys[1:-1])
    return _perturb(keys[-1], z, cfg.ld_eta, data["m"]), v


def _ldem_first_estep(key, params, cfg, data, st, w, h, g):
    grad = None
    if cfg.ld_steps > 0:
        fe = rvae_frame_energy(params["decoder"], data["pt"], data["m"], w, h, g, cfg.prior_coef, cfg.var_floor)
        _, grad, _ = energy_and_grad(fe, st["z"])
    z, v = _ld_moves(key, params, cfg, data, st["z"], st["v"], grad, w, h, g)
    return {"z": z, "v": v}


def _ldem_fused_iteration(params, cfg, data, carry, key):
    """M-step j (on the chains left by E-step j), then E-step j+1, sharing one decoder pass.

    The decoder output at the chains is both the M-step's Vs and, through its vjp, the first gradient of the
    next E-step (W, H and g change in between but not log Vs), so an LDEM iteration costs one forward and one
    backward pass of the decoder instead of two forwards and one backward.
    """
    w, h, g, st = carry
    m = data["m"]
    dec = params["decoder"]
    z = st["z"]
    if cfg.ld_steps > 0:
        logv, vjp_fn = jax.vjp(lambda zz: _decode(dec, zz, m), z)
    else:
        logv, vjp_fn = _decode(dec, z, m), None
    vs = _vs_from_logv(logv)
    w, h, g = m_step(w, h, g, data["p"], vs, m, cfg.floor, cfg.var_floor)
    stats = {"nll": neg_log_likelihood(data["p"], _vx(w, h, g, vs, cfg.var_floor), m) / vs.shape[0]}
    grad = None
    if cfg.ld_steps > 0:
        grad = rvae_energy_grad(logv, vjp_fn, z, data["pt"], m, w, h, g, cfg.prior_coef, cfg.var_floor)
    z, v = _ld_moves(key, params, cfg, data, z, st["v"], grad, w, h, g)
    return (w, h, g, {"z": z, "v": v}), stats


def _mc_chain(key, params, cfg, data, z, w, h, g):
    """K MH or MALA steps from z; returns ``(z, Vs of the last K − B states (R, F, N), acceptance rate)``."""
    fe = rvae_frame_energy(params["decoder"], data["pt"], data["m"], w, h, g, cfg.prior_coef, cfg.var_floor)
    mask = data["m"][:, None]
    keys = jax.random.split(key, cfg.mc_steps)
    if cfg.method == "mhem":
        e, _ = fe(z)

        def body(carry, k):
            z, e = carry
            z, e, logv, acc = mh_step(k, z, e, fe, cfg.mh_eta, mask)
            return (z, e), (logv, acc)

        (z, _), (logvs, accs) = jax.lax.scan(body, (z, e), keys)
    else:
        e, grad, _ = energy_and_grad(fe, z)

        def body(carry, k):
            z, e, grad = carry
            z, e, grad, logv, acc = mala_step(k, z, e, grad, fe, cfg.mala_lr, mask)
            return (z, e, grad), (logv, acc)

        (z, _, _), (logvs, accs) = jax.lax.scan(body, (z, e, grad), keys)
    vs = _vs_from_logv(logvs[cfg.mc_burn_in:])
    real = jnp.maximum(jnp.sum(data["m"]), 1.0) * accs.shape[0] * accs.shape[2]
    rate = jnp.sum(accs * mask) / real
    return z, vs, rate


def _mc_estep(key, params, cfg, data, st, w, h, g):
    k_chain, k_eta = jax.random.split(key)
    z, vs, rate = _mc_chain(k_chain, params, cfg, data, st["z"], w, h, g)
    if cfg.method == "malaem":
        z = _perturb(k_eta, z, cfg.mala_eta, data["m"])
    return {"z": z}, vs, {"accept_rate": rate}


def _vem_sample(key, enc, dec, data, num: int):
    n, f = data["pt"].shape
    xp = jnp.broadcast_to(data["pt"][:, None, :], (n, num, f))
    z, _, _ = encode({"encoder": enc, "decoder": dec}, xp, key, mask=data["m"])
    return _vs_from_logv(_decode(dec, z, data["m"]))


def vem_loss(enc, dec, key, data, w, h, g, var_floor: float = 0.0):
    """``Σ |X|²/Vx + log Vx + KL(q ‖ N(0, I))`` on real frames, one reparameterised sample (KL weight 1)."""
    m = data["m"]
    z, mu, logvar = encode({"encoder": enc, "decoder": dec}, data["pt"], key, mask=m)
    vx = _floor(g[:, None] * jnp.exp(_decode(dec, z, m)) + _noise_var_t(w, h, m), var_floor)
    nll = jnp.sum((data["pt"] / vx + jnp.log(vx)) * m[:, None])
    kl = -0.5 * jnp.sum((logvar - mu**2 - jnp.exp(logvar) + 1.0) * m[:, None])
    return nll + kl


def _vem_estep(key, params, cfg, data, st, w, h, g):
    dec = params["decoder"]
    opt = optax.adam(cfg.vem_lr)
    k_steps, k_sample = jax.random.split(key)

    def body(carry, k):
        enc, opt_state = carry
        grads = jax.grad(vem_loss)(enc, dec, k, data, w, h, g, cfg.var_floor)
        updates, opt_state = opt.update(grads, opt_state, enc)
        return (optax.apply_updates(enc, updates), opt_state), None

    (enc, opt_state), _ = jax.lax.scan(body, (st["enc"], st["opt"]), jax.random.split(k_steps, cfg.vem_epochs))
    vs = _vem_sample(k_sample, enc, dec, data, cfg.vem_samples)
    return {"enc": enc, "opt": opt_state}, vs, {}


_E_STEPS = {"vem": _vem_estep, "mhem": _mc_estep, "malaem": _mc_estep}


# ------------------------------------------------------------------------------------------------ EM


def _prepare(x, mask):
    x = jnp.asarray(x)
    p = jnp.abs(x) ** 2
    m = _mask_or_ones(mask, x.shape[-1], p.dtype)
    p = p * m
    return {"x": x, "p": p, "pt": p.T, "m": m}


def _init_state(key, params, cfg, data):
    k_nmf, k_enc, k_z = jax.random.split(key, 3)
    f, n = data["p"].shape
    dt = data["p"].dtype
    w, h = init_rvae_nmf(k_nmf, f, n, cfg.nmf_rank, dt)
    g = jnp.ones((n,), dt)
    if cfg.method == "vem":
        enc = params["encoder"]
        return w, h, g, {"enc": enc, "opt": optax.adam(cfg.vem_lr).init(enc)}
    _, mu, _ = encode(params, data["pt"], k_enc, mask=data["m"])
    chains = cfg.ld_chains if cfg.method == "ldem" else cfg.mc_chains
    z = mu[:, None, :] + math.sqrt(cfg.init_eta) * jax.random.normal(k_z, (n, chains, mu.shape[-1]), dt)
    st = {"z": z}
    if cfg.method == "ldem":
        st["v"] = jnp.zeros_like(z)
    return w, h, g, st


def _final_vs(key, params, cfg, data, st, w, h, g):
    if cfg.method == "vem":
        return _vem_sample(key, st["enc"], params["decoder"], data, cfg.vem_wf_samples)
    return _mc_chain(key, params, cfg, data, st["z"], w, h, g)[1]


def _em_iteration(params, cfg, data, carry, key):
    w, h, g, st = carry
    st, vs, stats = _E_STEPS[cfg.method](key, params, cfg, data, st, w, h, g)
    w, h, g = m_step(w, h, g, data["p"], vs, data["m"], cfg.floor, cfg.var_floor)
    stats = {**stats, "nll": neg_log_likelihood(data["p"], _vx(w, h, g, vs, cfg.var_floor), data["m"]) / vs.shape[0]}
    return (w, h, g, st), stats


def rvae_posterior(key, params, cfg: RVAEPosteriorConfig, x, mask=None, *, debug_loop: bool = False):
    """Run the EM algorithm ``cfg.method`` on one utterance; returns ``(S_hat (F, N), aux)``.

    Args:
      key: PRNG key.
      params: RVAE parameters (``{"encoder", "decoder"}`` or Flax variables), e.g. from
        :func:`jaxse.rvae.convert.load_rvae`.
      x: complex STFT (F, N) of the peak-normalised mixture (:mod:`jaxse.rvae.spectral`).
      mask: optional (N,) frame mask (1: real frame, 0: padding).
      debug_loop: run the EM iterations as a Python loop over a jitted iteration (same result as the scan).
    Returns ``aux = {"W", "H", "g", "state", "stats"}``; ``stats`` holds per-iteration arrays (``nll`` after
    each M-step, per sample; ``accept_rate`` for MHEM/MALAEM).
    """
    params = params_of(params)
    data = _prepare(x, mask)
    k_init, k_em, k_final = jax.random.split(key, 3)
    w, h, g, st = _init_state(k_init, params, cfg, data)
    keys = jax.random.split(k_em, cfg.num_em)  # E-step j uses keys[j]
    if cfg.method == "ldem":
        st = _ldem_first_estep(keys[0], params, cfg, data, st, w, h, g)
        step = functools.partial(_ldem_fused_iteration, params, cfg, data)
        (w, h, g, st), stats = _loop(step, (w, h, g, st), keys[1:], debug_loop)
        # the last M-step; its Vs (the current chains) is also the final Wiener filter's
        vs = _vs_from_logv(_decode(params["decoder"], st["z"], data["m"]))
        w, h, g = m_step(w, h, g, data["p"], vs, data["m"], cfg.floor, cfg.var_floor)
        last = neg_log_likelihood(data["p"], _vx(w, h, g, vs, cfg.var_floor), data["m"]) / vs.shape[0]
        stats = {"nll": jnp.concatenate([stats["nll"], last[None]])}
    else:
        step = functools.partial(_em_iteration, params, cfg, data)
        (w, h, g, st), stats = _loop(step, (w, h, g, st), keys, debug_loop)
        vs = _final_vs(k_final, params, cfg, data, st, w, h, g)
    s_hat = wiener_estimate(data["x"], w, h, g, vs, data["m"])
    return s_hat, {"W": w, "H": h, "g": g, "state": st, "stats": stats}


def _loop(step, carry, keys, debug_loop: bool):
    """``lax.scan(step, carry, keys)``, or the same as a Python loop over the jitted ``step``."""
    n = keys.shape[0]
    if not debug_loop or n == 0:
        return jax.lax.scan(step, carry, keys)
    jstep = jax.jit(step)
    outs = []
    for i in range(n):
        carry, s = jstep(carry, keys[i])
        outs.append(s)
    return carry, jax.tree_util.tree_map(lambda *a: jnp.stack(a), *outs)


@functools.partial(jax.jit, static_argnames=("cfg",))
def _enhance_jit(key, params, cfg, x, mask):
    return rvae_posterior(key, params, cfg, x, mask)[0]


def enhance_spectrogram(key, params, cfg: RVAEPosteriorConfig, x, mask=None):
    """Compiled :func:`rvae_posterior`: ``(F, N)`` mixture STFT (+ optional (N,) mask) -> speech STFT ``(F, N)``.

    This is the per-row function ``fn(key, X_row, mask_row) -> S_row`` of a batched enhancer; batch rows with
    ``jax.vmap`` (one key per row).
    """
    return _enhance_jit(key, params_of(params), cfg, x, mask)


def peak_normalize(x, eps: float = 1e-12):
    """``(x / max|x|, max|x|)``; an all-zero input gives zeros (the peak is floored at ``eps``)."""
    x = jnp.asarray(x)
    peak = jnp.maximum(jnp.max(jnp.abs(x), axis=-1, keepdims=True), eps)
    return x / peak, peak


@functools.partial(jax.jit, static_argnames=("cfg", "spec", "rescale"))
def _enhance_wave_jit(key, params, x, cfg, spec, rescale):
    xn, peak = peak_normalize(x)
    s = istft(rvae_posterior(key, params, cfg, stft(xn, spec))[0], x.shape[-1], spec)
    return s * peak if rescale else s


def enhance_wave(key, params, cfg: RVAEPosteriorConfig, x, spec: RVAESpecConfig = RVAESpecConfig(),
                 rescale: bool = True):
    """Enhance one waveform (L,) at ``spec.sample_rate``: peak-normalise, STFT, EM, Wiener filter, iSTFT to L.

    ``rescale=True`` multiplies the result back by the input peak; ``False`` returns it at the normalised scale,
    as the reference writes it.
    """
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.float32)
    return _enhance_wave_jit(key, params_of(params), x, cfg, spec, rescale)
