"""Recurrent variational autoencoder (RVAE) of power spectrograms, as used for unsupervised speech enhancement.

The network is the "RVAE-NonCausal" of Bie et al. (TASLP 2022), whose pretrained WSJ0 weights are used by the
posterior-sampling EM algorithms of :mod:`jaxse.rvae.posterior`. Everything runs on *power* spectrograms |X|²
(F = 513 bins of a 1024-point STFT), not log-power.

Layout: **time-major** ``(T, *batch, dim)``. The batch axes are optional and arbitrary (none for one utterance,
one for the parallel chains of a sampler), every recurrence is a ``lax.scan`` over the leading axis.

Encoder q(z | x):

1. ``g_x``: an LSTM layer over the power spectrogram. As in the reference code the input is flipped in time
   before the layer and the output flipped back, so the PyTorch weights named ``*_l0`` (the "forward"
   direction) run *backward* in real time and fill output dims ``0..H-1``, and ``*_l0_reverse`` run forward in
   real time and fill dims ``H..2H-1``. Here no array is flipped twice: ``l0`` is simply scanned in reverse.
   With ``bidir_g_x=False`` only ``l0`` exists (and still runs backward in real time, as in the reference).
2. ``z`` recurrence over t = 0..T-1, carrying ``(h, c, z_{t-1})`` with ``z_{-1} = 0`` and zero state; the LSTM
   ``rnn_g_z`` is stepped at t = 0 too (with the zero input). ``u_t = [g_x_t, h_t]``, ``mu_t`` and
   ``logvar_t`` are linear in ``u_t`` and ``z_t = mu_t + exp(logvar_t / 2)·eps_t`` is fed back.

Decoder p(s | z): an LSTM layer over z (bidirectional when ``bidir_h``: ``l0`` forward, ``l0_reverse``
backward in time, outputs concatenated in that order), then a linear map to the log speech variance
``log v`` (F = 513).

LSTM cells follow PyTorch: gates in the order (i, f, g, o), input and recurrent biases kept as two parameters
(so the parameter count equals PyTorch's) and added together.

**Padding.** Every function takes an optional frame ``mask`` (``(T,)`` or ``(T, *batch)``, 1 on real frames).
At a masked frame the LSTM state is reset to its initial value (zero) in both directions. A layer that runs
backward in time therefore reaches the last real frame in the same state as without the padding, and the
outputs on real frames equal those of the unpadded sequence (the forward recurrences are not affected by
trailing padding anyway). Outputs on masked frames are meaningless.

Parameters live in a plain dict (``{"encoder": ..., "decoder": ...}``); :func:`encode` and :func:`decode` are
pure functions of it, and the Flax module :class:`RVAE` only declares the parameters (names, shapes and the
PyTorch initialisation) and calls the same functions.
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class RVAEConfig:
    """Sizes of the RVAE. Defaults: the pretrained non-causal model (1,026,849 parameters)."""

    x_dim: int = 513
    z_dim: int = 16
    dim_rnn_g_x: int = 128
    dim_rnn_g_z: int = 128
    dim_rnn_h: int = 128
    # The causal variant of the reference has both False (the encoder's g_x still runs backward in time).
    bidir_g_x: bool = True
    bidir_h: bool = True

    def __post_init__(self):
        for name in ("x_dim", "z_dim", "dim_rnn_g_x", "dim_rnn_g_z", "dim_rnn_h"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @property
    def g_x_dim(self) -> int:
        return self.dim_rnn_g_x * (2 if self.bidir_g_x else 1)

    @property
    def h_dim(self) -> int:
        return self.dim_rnn_h * (2 if self.bidir_h else 1)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ------------------------------------------------------------------------------------------ pure functions


def lstm_cell(kernel_hh, x_proj, h, c):
    """One LSTM step. ``x_proj`` = x·W_ih + b_ih + b_hh (precomputed), gates (i, f, g, o) as in PyTorch."""
    gates = x_proj + h @ kernel_hh
    i, f, g, o = jnp.split(gates, 4, axis=-1)
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    h = jax.nn.sigmoid(o) * jnp.tanh(c)
    return h, c


def _expand_mask(mask, ndim: int):
    """(T,) or (T, *batch) -> broadcastable against (T, *batch, features), as bool."""
    m = jnp.asarray(mask) > 0
    return m.reshape(m.shape + (1,) * (ndim - m.ndim))


def run_lstms(directions, xs, mask=None):
    """Run single-layer LSTM directions over ``xs`` (T, *batch, in) in one scan.

    ``directions``: sequence of ``(params, reverse)``; ``reverse=True`` runs from the last frame to the first.
    Returns one output ``(T, *batch, H)`` per direction, in time order. See the module doc for ``mask``.
    """
    m = None if mask is None else _expand_mask(mask, xs.ndim)
    inputs, carry = [], []
    for p, reverse in directions:
        xp = xs @ p["kernel_ih"] + (p["bias_ih"] + p["bias_hh"])
        mp = m
        if reverse:
            xp = xp[::-1]
            mp = None if m is None else m[::-1]
        inputs.append((xp, mp))
        zero = jnp.zeros(xs.shape[1:-1] + (p["kernel_hh"].shape[0],), xp.dtype)
        carry.append((zero, zero))
    kernels = [p["kernel_hh"] for p, _ in directions]

    def step(carry, inp):
        new, outs = [], []
        for k, (h, c), (x_t, m_t) in zip(kernels, carry, inp):
            h, c = lstm_cell(k, x_t, h, c)
            if m_t is not None:
                h, c = jnp.where(m_t, h, 0.0), jnp.where(m_t, c, 0.0)
            new.append((h, c))
            outs.append(h)
        return new, outs

    _, outs = jax.lax.scan(step, carry, inputs)
    return [o[::-1] if rev else o for o, (_, rev) in zip(outs, directions)]


def encoder_forward(p, x_power, eps, mask=None):
    """Encoder on raw parameters ``p`` (the ``"encoder"`` subtree): see :func:`encode`.

    Returns ``(z, mu, logvar, aux)`` with ``aux = {"g_x", "h", "c"}`` (the g_x features and the state of
    ``rnn_g_z`` after each step).
    """
    gxp = p["rnn_g_x"]
    if "l0_reverse" in gxp:
        # flip -> BiLSTM -> flip: "l0" runs backward in real time (dims 0..H-1), "l0_reverse" forward.
        g_x = jnp.concatenate(run_lstms([(gxp["l0"], True), (gxp["l0_reverse"], False)], x_power, mask), -1)
    else:
        (g_x,) = run_lstms([(gxp["l0"], True)], x_power, mask)
    gz = p["rnn_g_z"]["l0"]
    wm, bm = p["inf_mean"]["kernel"], p["inf_mean"]["bias"]
    wl, bl = p["inf_logvar"]["kernel"], p["inf_logvar"]["bias"]
    bias_z = gz["bias_ih"] + gz["bias_hh"]
    batch = x_power.shape[1:-1]
    dt = g_x.dtype
    h0 = jnp.zeros(batch + (gz["kernel_hh"].shape[0],), dt)
    z0 = jnp.zeros(batch + (wm.shape[1],), dt)

    def step(carry, inp):
        h, c, z_prev = carry
        gx_t, eps_t = inp
        h, c = lstm_cell(gz["kernel_hh"], z_prev @ gz["kernel_ih"] + bias_z, h, c)
        u = jnp.concatenate([gx_t, h], axis=-1)
        mu = u @ wm + bm
        logvar = u @ wl + bl
        z = mu + jnp.exp(0.5 * logvar) * eps_t
        return (h, c, z), (z, mu, logvar, h, c)

    _, (z, mu, logvar, h, c) = jax.lax.scan(step, (h0, h0, z0), (g_x, eps.astype(dt)))
    return z, mu, logvar, {"g_x": g_x, "h": h, "c": c}


def decoder_forward(p, z, mask=None):
    """Decoder on raw parameters ``p`` (the ``"decoder"`` subtree): ``(log_v, {"h": rnn_h output})``."""
    hp = p["rnn_h"]
    dirs = [(hp["l0"], False)]
    if "l0_reverse" in hp:
        dirs.append((hp["l0_reverse"], True))
    h = jnp.concatenate(run_lstms(dirs, z, mask), -1)
    log_v = h @ p["gen_logvar"]["kernel"] + p["gen_logvar"]["bias"]
    return log_v, {"h": h}


def params_of(params):
    """Accept ``{"params": {...}}`` (Flax variables) or the params dict itself."""
    if "encoder" not in params and "params" in params:
        params = params["params"]
    return params


def encode(params, x_power, key=None, *, eps=None, mask=None, return_aux: bool = False):
    """q(z | x): ``x_power`` (T, *batch, x_dim) power spectrogram -> ``(z, mu, logvar)``, each (T, *batch, z_dim).

    The noise of the reparameterised samples is ``eps`` (T, *batch, z_dim) when given (parity tests), else a
    standard normal draw from ``key`` of that shape (time is the leading axis of the draw). ``eps_t`` is used at
    step t: ``z_t = mu_t + exp(logvar_t / 2)·eps_t``, and ``z_t`` is fed back to step t+1, so ``mu`` itself
    depends on the noise. With ``return_aux`` a fourth output holds the intermediate features.
    """
    p = params_of(params)["encoder"]
    if eps is None:
        if key is None:
            raise ValueError("encode needs a PRNG key or explicit noise eps")
        z_dim = p["inf_mean"]["kernel"].shape[1]
        eps = jax.random.normal(key, x_power.shape[:-1] + (z_dim,), x_power.dtype)
    z, mu, logvar, aux = encoder_forward(p, x_power, eps, mask)
    return (z, mu, logvar, aux) if return_aux else (z, mu, logvar)


def decode(params, z, *, mask=None, return_aux: bool = False):
    """p(s | z): ``z`` (T, *batch, z_dim) -> log speech variance ``log_v`` (T, *batch, x_dim)."""
    log_v, aux = decoder_forward(params_of(params)["decoder"], z, mask)
    return (log_v, aux) if return_aux else log_v


def config_from_params(params) -> RVAEConfig:
    """The :class:`RVAEConfig` a parameter dict was made for (from its shapes)."""
    p = params_of(params)
    enc, dec = p["encoder"], p["decoder"]
    return RVAEConfig(
        x_dim=int(enc["rnn_g_x"]["l0"]["kernel_ih"].shape[0]),
        z_dim=int(enc["inf_mean"]["kernel"].shape[1]),
        dim_rnn_g_x=int(enc["rnn_g_x"]["l0"]["kernel_hh"].shape[0]),
        dim_rnn_g_z=int(enc["rnn_g_z"]["l0"]["kernel_hh"].shape[0]),
        dim_rnn_h=int(dec["rnn_h"]["l0"]["kernel_hh"].shape[0]),
        bidir_g_x="l0_reverse" in enc["rnn_g_x"],
        bidir_h="l0_reverse" in dec["rnn_h"],
    )


# ------------------------------------------------------------------------------------------ Flax modules


def _uniform(bound: float):
    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


class LSTMParams(nn.Module):
    """One LSTM direction: ``kernel_ih`` (in, 4H), ``kernel_hh`` (H, 4H), ``bias_ih``, ``bias_hh`` (4H,).

    PyTorch initialisation: every tensor U(-1/sqrt(H), 1/sqrt(H)).
    """

    in_dim: int
    features: int

    @nn.compact
    def __call__(self):
        init = _uniform(1.0 / math.sqrt(self.features))
        g = 4 * self.features
        return {
            "kernel_ih": self.param("kernel_ih", init, (self.in_dim, g)),
            "kernel_hh": self.param("kernel_hh", init, (self.features, g)),
            "bias_ih": self.param("bias_ih", init, (g,)),
            "bias_hh": self.param("bias_hh", init, (g,)),
        }


class LSTMLayerParams(nn.Module):
    """A one-layer (optionally bidirectional) LSTM: submodules ``l0`` and ``l0_reverse`` (PyTorch names)."""

    in_dim: int
    features: int
    bidirectional: bool

    @nn.compact
    def __call__(self):
        out = {"l0": LSTMParams(self.in_dim, self.features, name="l0")()}
        if self.bidirectional:
            out["l0_reverse"] = LSTMParams(self.in_dim, self.features, name="l0_reverse")()
        return out


class LinearParams(nn.Module):
    """``kernel`` (in, out), ``bias`` (out,), PyTorch ``nn.Linear`` initialisation (U(±1/sqrt(in)) for both)."""

    in_dim: int
    features: int

    @nn.compact
    def __call__(self):
        init = _uniform(1.0 / math.sqrt(self.in_dim))
        return {"kernel": self.param("kernel", init, (self.in_dim, self.features)),
                "bias": self.param("bias", init, (self.features,))}


class RVAEEncoder(nn.Module):
    cfg: RVAEConfig = RVAEConfig()

    @nn.compact
    def __call__(self, x_power, eps, mask=None):
        c = self.cfg
        p = {
            "rnn_g_x": LSTMLayerParams(c.x_dim, c.dim_rnn_g_x, c.bidir_g_x, name="rnn_g_x")(),
            "rnn_g_z": LSTMLayerParams(c.z_dim, c.dim_rnn_g_z, False, name="rnn_g_z")(),
            "inf_mean": LinearParams(c.g_x_dim + c.dim_rnn_g_z, c.z_dim, name="inf_mean")(),
            "inf_logvar": LinearParams(c.g_x_dim + c.dim_rnn_g_z, c.z_dim, name="inf_logvar")(),
        }
        z, mu, logvar, _ = encoder_forward(p, x_power, eps, mask)
        return z, mu, logvar


class RVAEDecoder(nn.Module):
    cfg: RVAEConfig = RVAEConfig()

    @nn.compact
    def __call__(self, z, mask=None):
        c = self.cfg
        p = {"rnn_h": LSTMLayerParams(c.z_dim, c.dim_rnn_h, c.bidir_h, name="rnn_h")(),
             "gen_logvar": LinearParams(c.h_dim, c.x_dim, name="gen_logvar")()}
        return decoder_forward(p, z, mask)[0]


class RVAE(nn.Module):
    """The whole model: ``(x_power, eps) -> (log_v, z, mu, logvar)`` (the reference ``forward``)."""

    cfg: RVAEConfig = RVAEConfig()

    def setup(self):
        self.encoder = RVAEEncoder(self.cfg)
        self.decoder = RVAEDecoder(self.cfg)

    def __call__(self, x_power, eps, mask=None):
        z, mu, logvar = self.encoder(x_power, eps, mask)
        return self.decoder(z, mask), z, mu, logvar


def init_params(key, cfg: RVAEConfig = RVAEConfig()):
    """Fresh parameters (PyTorch initialisation) ``{"encoder": ..., "decoder": ...}``."""
    x = jnp.zeros((2, 1, cfg.x_dim), jnp.float32)
    eps = jnp.zeros((2, 1, cfg.z_dim), jnp.float32)
    return jax.jit(RVAE(cfg).init)(key, x, eps)["params"]


def abstract_params(cfg: RVAEConfig = RVAEConfig()):
    """Shapes and dtypes of the parameters, without allocating them."""
    return jax.eval_shape(lambda k: init_params(k, cfg), jax.random.PRNGKey(0))
