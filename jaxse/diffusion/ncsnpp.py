"""NCSN++ U-Net on the complex spectrogram (the sgmse / UDiffSE / UDiffSE+ variant), in Flax linen.

One implementation, configured by :class:`NCSNppConfig`, reproduces both reference families:

* UDiffSE (``NCSNPP_65M``): nf 128, ch_mult (1,1,2,2,2,2,2), 2 res-blocks per level, attention at
  frequency size 16, output pyramid divided by the diffusion time ``t`` before the 1×1 output conv.
* NCSN++M of UDiffSE+ (``NCSNPPM_28M``): nf 128, ch_mult (1,2,2,2), 1 res-block, attention only in the
  middle block, no output scaling (the score is ``-out/σ(t)``, applied by :mod:`jaxse.diffusion.models`).

Layout: the network takes a complex array ``(B, F, T)`` and returns one of the same shape. Internally it
works in NHWC with H = frequency, W = frames, C = (Re, Im) on input. ``T`` must be divisible by
``2**(len(ch_mult) - 1)``.

Submodules are named ``all_modules_<i>`` after their index in the reference ``all_modules`` list (their
construction order), and their children after the reference attribute names (``Conv_0``, ``Dense_0``,
``GroupNorm_1``, ``NIN_2``, ...). This keeps the import of reference checkpoints a pure renaming
(:mod:`jaxse.diffusion.convert`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class NCSNppConfig:
    nf: int = 128
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 2, 2, 2)
    num_res_blocks: int = 2
    # Attention after the res-blocks of a level whose *frequency* size is listed (reference quirk:
    # the check is on the frequency axis, which works because F = 256 = image_size).
    attn_resolutions: tuple[int, ...] = (16,)
    fir_kernel: tuple[int, ...] = (1, 3, 3, 1)
    fourier_scale: float = 16.0
    # "1/t": divide the output pyramid by the diffusion time before the output conv (UDiffSE);
    # "none": no scaling (UDiffSE+ / noise prediction).
    output_scaling: str = "1/t"
    # 2: the network sees the state x alone (a prior; or the noisy y alone for the predictive baseline);
    # 4: it sees (x, y), the channels [Re x, Im x, Re y, Im y] (SGMSE+'s conditional score model).
    in_channels: int = 2
    # False: no time input at all (no Fourier/Dense modules, no Dense_0 in the res-blocks): the supervised
    # (predictive) baseline. It needs output_scaling "none".
    time_embedding: bool = True
    init_scale: float = 0.0
    # Max GroupNorm groups; groups = min(C // 4, group_cap).
    group_cap: int = 32
    # Compute dtype of convolutions/attention ("float32" or "bfloat16"); params stay float32.
    dtype: str = "float32"
    # Rematerialise each res-block in the backward pass (saves activation memory when training).
    remat: bool = False
    # > 0: an audio-visual prior (AV-UDiffSE): the network also takes conditioning frames (B, T_v, cond_dim)
    # (e.g. lip features at 25 fps), fused by light cross-attention blocks after the input conv, after each
    # downsampling res-block, at the bottleneck and after each decoder level (:class:`CrossAttnBlockLight`).
    cond_dim: int = 0
    # Cross-attention logits: False, the reference (no 1/sqrt(d_head) although it defines one); True: scaled.
    xattn_scaled: bool = False
    # Head size of the first cross-attention block (after the input conv): 128, the reference's hard-coded
    # value (with d_model 256 = F); 0: the block's d_model, as every other block.
    xattn_first_d_head: int = 128
    # Initialisation of the fusion blocks' GroupNorm scale: False, 1 as the reference (each block adds a
    # unit-variance signal to the audio features from the first step); True, 0, so that every block starts
    # as the identity and the prior starts as the audio-only network (trains far faster on a small budget).
    xattn_zero_init: bool = False
    # Temporal alignment of the fusion: 0.0, the reference (no positional information at all: an audio frame
    # can find "its" visual frames only by content); > 0, a fixed Gaussian window on the time distance added to
    # the cross-attention logits, -(t_audio - t_visual)^2 / (2 w^2) with w this many seconds, so that each
    # audio frame attends to the visual frames around its own time. Frame times: audio frame i (of the input
    # resolution) at i * xattn_audio_frame_s (centred STFT; at a level downsampled by k, the mean over its k
    # input frames), visual frame j at (j + 0.5) * xattn_visual_frame_s, both from the start of the row.
    xattn_time_window: float = 0.0
    xattn_audio_frame_s: float = 128 / 16000
    xattn_visual_frame_s: float = 1 / 25

    def __post_init__(self):
        object.__setattr__(self, "ch_mult", tuple(int(c) for c in self.ch_mult))
        object.__setattr__(self, "attn_resolutions", tuple(int(c) for c in self.attn_resolutions))
        object.__setattr__(self, "fir_kernel", tuple(int(c) for c in self.fir_kernel))
        if self.output_scaling not in ("1/t", "none"):
            raise ValueError(f"output_scaling must be '1/t' or 'none', got {self.output_scaling!r}")
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {self.dtype!r}")
        if self.in_channels not in (2, 4):
            raise ValueError(f"in_channels must be 2 (x) or 4 (x and the conditioning y), got {self.in_channels!r}")
        if not self.time_embedding and self.output_scaling != "none":
            raise ValueError("a network without time embedding needs output_scaling 'none'")
        if self.cond_dim < 0 or self.xattn_first_d_head < 0:
            raise ValueError(f"cond_dim and xattn_first_d_head must be >= 0, got {self.cond_dim}, "
                             f"{self.xattn_first_d_head}")
        if self.xattn_time_window < 0 or self.xattn_audio_frame_s <= 0 or self.xattn_visual_frame_s <= 0:
            raise ValueError("xattn_time_window must be >= 0 and the frame periods > 0, got "
                             f"{self.xattn_time_window}, {self.xattn_audio_frame_s}, {self.xattn_visual_frame_s}")
        if self.nf < 4 or not self.ch_mult or self.num_res_blocks < 1:
            raise ValueError(f"invalid NCSN++ size: nf={self.nf}, ch_mult={self.ch_mult}")

    @property
    def num_levels(self) -> int:
        return len(self.ch_mult)

    @property
    def frame_multiple(self) -> int:
        """The frame count T must be a multiple of this."""
        return 2 ** (self.num_levels - 1)

    @classmethod
    def from_dict(cls, d: dict) -> "NCSNppConfig":
        """Inverse of :meth:`to_dict` (lists back to tuples)."""
        return cls(**d)  # __post_init__ turns the lists into tuples

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for k in ("ch_mult", "attn_resolutions", "fir_kernel"):
            d[k] = list(d[k])
        return d


# The two reference models (parameter counts are asserted in the tests).
NCSNPP_65M = NCSNppConfig()
NCSNPPM_28M = NCSNppConfig(ch_mult=(1, 2, 2, 2), num_res_blocks=1, attn_resolutions=(), output_scaling="none")


def num_groups(channels: int, cap: int = 32) -> int:
    """Reference GroupNorm rule: ``min(C // 4, cap)`` groups."""
    return min(channels // 4, cap)


def default_init(scale: float = 1.0):
    """DDPM init: variance scaling, fan_avg, uniform; a zero scale becomes 1e-10."""
    scale = 1e-10 if scale == 0 else scale
    return nn.initializers.variance_scaling(scale, "fan_avg", "uniform")


def _torch_default_conv_init(fan_in: int):
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def _fir_taps(k: Sequence[int]) -> np.ndarray:
    """1-D taps of the separable FIR kernel outer(k, k)/sum(k)²."""
    k = np.asarray(k, dtype=np.float64)
    return k / k.sum()


def _fir1d(x, taps, axis: int, stride: int, pad: tuple[int, int]):
    """Correlate ``x`` with ``taps`` along ``axis`` after zero padding, keeping every ``stride``-th output.

    Written as a sum of shifted slices: on XLA:CPU this is ~100× faster than a grouped convolution.
    """
    n = x.shape[axis] + pad[0] + pad[1] - len(taps) + 1
    widths = [(0, 0)] * x.ndim
    widths[axis] = pad
    xp = jnp.pad(x, widths)
    out = 0.0
    for j, c in enumerate(taps):
        out = out + float(c) * jax.lax.slice_in_dim(xp, j, j + n, stride=stride, axis=axis)
    return out


def _interleave_zeros(x, axis: int):
    """[a, b, ...] -> [a, 0, b, 0, ...] along ``axis`` (zero insertion of ×2 upsampling)."""
    z = jnp.stack([x, jnp.zeros_like(x)], axis=axis + 1)
    shape = list(x.shape)
    shape[axis] *= 2
    return z.reshape(shape)


def fir_upsample(x, kernel: Sequence[int] = (1, 3, 3, 1)):
    """×2 FIR upsampling of H and W (``upfirdn2d`` with up=2, gain 1), per channel. NHWC.

    Zero insertion, zero padding (2 before, 1 after for a 4-tap kernel) as the reference,
    then correlation with 2·taps on each axis (gain 4 in 2-D).
    """
    taps = _fir_taps(kernel) * 2.0
    p = len(kernel) - 2
    pad = ((p + 1) // 2 + 1, p // 2)
    for axis in (1, 2):
        x = _fir1d(_interleave_zeros(x, axis), taps, axis, 1, pad)
    return x


def fir_downsample(x, kernel: Sequence[int] = (1, 3, 3, 1)):
    """×2 FIR downsampling of H and W (``upfirdn2d`` with down=2), per channel. NHWC."""
    taps = _fir_taps(kernel)
    p = len(kernel) - 2
    pad = ((p + 1) // 2, p // 2)
    for axis in (1, 2):
        x = _fir1d(x, taps, axis, 2, pad)
    return x


class _GroupNormStats(nn.Module):
    """Group normalisation of (B, ..., C) over all axes but the batch, per group of C // groups channels, with
    the parameters of ``nn.GroupNorm`` (``scale``, ``bias``; epsilon 1e-6; two-pass variance).

    The statistics are reduced per channel over the pixels first (a reduction along the contiguous channel
    rows) and then per group, instead of over a (…, groups, C // groups) view: the same numbers up to the
    summation order, and 1.1-2× faster on XLA:CPU at full resolution.
    """

    groups: int
    zero_scale: bool = False

    @nn.compact
    def __call__(self, x):
        b, c = x.shape[0], x.shape[-1]
        g, per = self.groups, x.shape[-1] // self.groups
        scale = self.param("scale", nn.initializers.zeros if self.zero_scale else nn.initializers.ones, (c,))
        bias = self.param("bias", nn.initializers.zeros, (c,))
        xr = x.reshape(b, -1, c)
        count = xr.shape[1] * per

        def per_group(v):  # (b, c) channel sums -> (b, 1, c) group means, repeated over each group's channels
            return jnp.repeat(v.reshape(b, g, per).sum(-1) / count, per, axis=1)[:, None, :]

        centred = xr - per_group(jnp.sum(xr, axis=1))
        inv = jax.lax.rsqrt(per_group(jnp.sum(jnp.square(centred), axis=1)) + 1e-6)
        return (centred * (inv * scale) + bias).reshape(x.shape)


class _GroupNorm(nn.Module):
    cap: int = 32
    zero_scale: bool = False  # initialise the scale at 0 (a residual branch that starts as nothing)

    @nn.compact
    def __call__(self, x):
        return _GroupNormStats(num_groups(x.shape[-1], self.cap), self.zero_scale, name="norm")(
            x.astype(jnp.float32)).astype(x.dtype)


class _Conv1x1(nn.Module):
    """A 1×1 convolution computed as one matrix product over the flattened pixels, with the parameters of
    ``nn.Conv(features, (1, 1))`` (``kernel`` (1, 1, C_in, C_out), ``bias``; same initialisation).

    Same result as the convolution (bit-identical on XLA:CPU), 2-3× faster there on full-resolution maps: the
    library convolution kernel handles a 1×1 window over 256×256 pixels far below the matrix-product speed.
    """

    features: int
    kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()
    bias_init: nn.initializers.Initializer = nn.initializers.zeros
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        c_in = x.shape[-1]
        kernel = self.param("kernel", self.kernel_init, (1, 1, c_in, self.features), jnp.float32)
        bias = self.param("bias", self.bias_init, (self.features,), jnp.float32)
        y = jnp.dot(x.astype(self.dtype).reshape(-1, c_in), kernel[0, 0].astype(self.dtype))
        return y.reshape(x.shape[:-1] + (self.features,)) + bias.astype(self.dtype)


_FEW_CHANNELS = 4  # "few" channels: at most this many in or out


class _Conv3x3FewChannels(nn.Module):
    """A 3×3 "SAME" convolution with at most :data:`_FEW_CHANNELS` input or output channels (the input conv,
    2 → nf, and the output-pyramid convs, C → 2), with the parameters of ``nn.Conv(features, (3, 3))``
    (``kernel`` (3, 3, C_in, C_out), ``bias``; same initialisation).

    Few input channels: 9·C_in broadcast multiply-adds of shifted input channels into the output, one fused
    loop. Few output channels: the input times the kernel as a (C_in, 9·C_out) matrix (each pixel's products
    for its nine neighbours), then the nine shifted slices of that summed. The same sums as the convolution in
    another order (outputs equal to float rounding); XLA:CPU's convolution kernels run such narrow convolutions
    at a few GFLOP/s: these are 2-7× faster at full resolution (README, "Speed on AVX2 and AVX-512 CPUs").
    """

    features: int
    kernel_init: nn.initializers.Initializer
    bias_init: nn.initializers.Initializer = nn.initializers.zeros
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        b, hh, ww, c_in = x.shape
        c_out = self.features
        kernel = self.param("kernel", self.kernel_init, (3, 3, c_in, c_out), jnp.float32).astype(self.dtype)
        out = self.param("bias", self.bias_init, (c_out,), jnp.float32).astype(self.dtype)
        x = x.astype(self.dtype)
        if c_in <= _FEW_CHANNELS:
            xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
            for i in range(3):
                for j in range(3):
                    for c in range(c_in):
                        out = out + xp[:, i:i + hh, j:j + ww, c:c + 1] * kernel[i, j, c]
            return out
        taps = jnp.transpose(kernel, (2, 0, 1, 3)).reshape(c_in, 9 * c_out)
        z = jnp.dot(x.reshape(-1, c_in), taps).reshape(b, hh, ww, 9, c_out)
        # out[p] = sum over the window offsets (i, j) of in[p + (i-1, j-1)] @ kernel[i, j] = z[p + (i-1, j-1), (i, j)],
        # a slice of the products zero-padded by one pixel (the SAME padding) starting at (i, j).
        zp = jnp.pad(z, ((0, 0), (1, 1), (1, 1), (0, 0), (0, 0)))
        for i in range(3):
            for j in range(3):
                out = out + zp[:, i:i + hh, j:j + ww, 3 * i + j, :]
        return out



def _conv(features, k, scale, name, dtype, few=False):
    """A k×k convolution module (1×1: :class:`_Conv1x1`; 3×3 with ``few`` channels in or out:
    :class:`_Conv3x3FewChannels`; else ``nn.Conv``), all with ``nn.Conv``'s parameters."""
    if k == 1:
        return _Conv1x1(features, default_init(scale), nn.initializers.zeros, dtype, name=name)
    if k == 3 and few:
        return _Conv3x3FewChannels(features, default_init(scale), nn.initializers.zeros, dtype, name=name)
    return nn.Conv(features, (k, k), padding="SAME", kernel_init=default_init(scale),
                   bias_init=nn.initializers.zeros, dtype=dtype, name=name)


class ResnetBlockBigGANpp(nn.Module):
    out_ch: int
    up: bool = False
    down: bool = False
    fir_kernel: tuple[int, ...] = (1, 3, 3, 1)
    init_scale: float = 0.0
    group_cap: int = 32
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, temb):
        in_ch = x.shape[-1]
        h = nn.silu(_GroupNorm(self.group_cap, name="GroupNorm_0")(x))
        if self.up:
            h, x = fir_upsample(h, self.fir_kernel), fir_upsample(x, self.fir_kernel)
        elif self.down:
            h, x = fir_downsample(h, self.fir_kernel), fir_downsample(x, self.fir_kernel)
        h = _conv(self.out_ch, 3, 1.0, "Conv_0", self.dtype)(h)
        if temb is not None:
            t = nn.Dense(self.out_ch, kernel_init=default_init(1.0), bias_init=nn.initializers.zeros,
                         dtype=self.dtype, name="Dense_0")(nn.silu(temb))
            h = h + t[:, None, None, :].astype(h.dtype)
        h = nn.silu(_GroupNorm(self.group_cap, name="GroupNorm_1")(h))
        h = _conv(self.out_ch, 3, self.init_scale, "Conv_1", self.dtype)(h)
        if in_ch != self.out_ch or self.up or self.down:
            x = _conv(self.out_ch, 1, 1.0, "Conv_2", self.dtype)(x)
        return (x + h) / math.sqrt(2.0)


class AttnBlockpp(nn.Module):
    """Single-head self-attention over all F·T positions, with skip rescale."""

    init_scale: float = 0.0
    group_cap: int = 32
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        b, hh, ww, c = x.shape
        h = _GroupNorm(self.group_cap, name="GroupNorm_0")(x)

        def nin(name, scale):
            return nn.Dense(c, kernel_init=default_init(scale), bias_init=nn.initializers.zeros,
                            dtype=self.dtype, name=name)

        q = nin("NIN_0", 0.1)(h).reshape(b, hh * ww, c)
        k = nin("NIN_1", 0.1)(h).reshape(b, hh * ww, c)
        v = nin("NIN_2", 0.1)(h).reshape(b, hh * ww, c)
        w = jnp.einsum("bic,bjc->bij", q, k) * (c ** -0.5)
        w = jax.nn.softmax(w.astype(jnp.float32), axis=-1).astype(v.dtype)
        h = jnp.einsum("bij,bjc->bic", w, v).reshape(b, hh, ww, c)
        h = nin("NIN_3", self.init_scale)(h)
        return (x + h) / math.sqrt(2.0)


class _CrossAttention(nn.Module):
    """One head: queries (…, T', d_model) attend to keys/values from (B, T_v, d_cond); ``v_mask`` (B, T_v) keeps
    padding frames out; ``bias`` (T', T_v), optional, is added to the logits (the time window)."""

    d_head: int
    scaled: bool = False
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, q_in, v, v_mask=None, bias=None):
        d_model, d_cond = q_in.shape[-1], v.shape[-1]

        def dense(n, fan_in, name, bias=False):
            init = _torch_default_conv_init(fan_in)
            return nn.Dense(n, use_bias=bias, kernel_init=init, bias_init=init, dtype=self.dtype, name=name)

        q = dense(self.d_head, d_model, "to_q")(q_in)  # (B, C, T', d)
        k = dense(self.d_head, d_cond, "to_k")(v)  # (B, T_v, d)
        val = dense(self.d_head, d_cond, "to_v")(v)
        logits = jnp.einsum("bctd,bsd->bcts", q, k).astype(jnp.float32)
        if self.scaled:
            logits = logits * (self.d_head ** -0.5)
        if bias is not None:
            logits = logits + bias
        if v_mask is not None:  # padding frames of a batch (the reference runs one unpadded stream)
            logits = jnp.where(v_mask[:, None, None, :], logits, -1e30)
        a = jax.nn.softmax(logits, axis=-1).astype(val.dtype)
        o = jnp.einsum("bcts,bsd->bctd", a, val)
        return dense(d_model, self.d_head, "to_out", bias=True)(o)


class CrossAttnBlockLight(nn.Module):
    """The AV prior's light fusion block: ``h + GroupNorm(cross-attention(h, v))``.

    Each time frame's frequency vector (length F' of the current level) is one query token, the channels
    act as a batch axis (weights shared over them); keys and values come from the conditioning frames
    ``v`` (B, T_v, d_cond); ``v_mask`` (B, T_v) bool, optional, marks the real frames of a padded batch
    (the others get no attention). ``h`` is (B, F', T', C) (this package's layout).
    """

    d_head: int = 0  # 0: d_model (= F')
    scaled: bool = False
    group_cap: int = 32
    dtype: jnp.dtype = jnp.float32
    zero_init: bool = False  # GroupNorm scale initialised at 0: the block starts as the identity
    # The time window (see NCSNppConfig.xattn_time_window): its width w (0: none), the audio frame period of
    # the input resolution, this level's downsampling factor of the frames, the visual frame period (seconds).
    time_window: float = 0.0
    audio_frame_s: float = 128 / 16000
    frame_stride: int = 1
    visual_frame_s: float = 1 / 25

    @nn.compact
    def __call__(self, h, v, v_mask=None):
        xp = jnp.transpose(h, (0, 3, 2, 1))  # (B, C, T', F')
        bias = None
        if self.time_window > 0:
            k = self.frame_stride
            t_a = (np.arange(h.shape[2]) * k + (k - 1) / 2.0) * self.audio_frame_s
            t_v = (np.arange(v.shape[1]) + 0.5) * self.visual_frame_s
            bias = jnp.asarray(-0.5 * ((t_a[:, None] - t_v[None, :]) / self.time_window) ** 2, jnp.float32)
        o = _CrossAttention(self.d_head or h.shape[1], self.scaled, self.dtype, name="cross_attention")(
            xp.astype(self.dtype), v.astype(self.dtype), v_mask, bias)
        o = jnp.transpose(o, (0, 3, 2, 1))  # (B, F', T', C)
        return h + _GroupNorm(self.group_cap, self.zero_init, name="groupnorm")(o).astype(h.dtype)


class NCSNpp(nn.Module):
    """NCSN++ network: ``(x complex (B,F,T), t (B,), y=None) -> complex (B,F,T)`` (the raw DNN output).

    ``y`` (complex (B,F,T)) is the conditioning of a 4-channel network (``in_channels=4``); ``t`` is ignored
    (may be ``None``) by a network without time embedding.
    """

    config: NCSNppConfig

    @nn.compact
    def __call__(self, x, t, y=None, cond=None, cond_mask=None):
        cfg = self.config
        dtype = jnp.bfloat16 if cfg.dtype == "bfloat16" else jnp.float32
        b, f, n_frames = x.shape
        if n_frames % cfg.frame_multiple or f % cfg.frame_multiple:
            raise ValueError(
                f"NCSN++ with {cfg.num_levels} levels needs F and T divisible by {cfg.frame_multiple}; "
                f"got F={f}, T={n_frames} (pad the frames, e.g. spectral.pad_frames)")
        if (y is not None) != (cfg.in_channels == 4):
            raise ValueError(f"an NCSN++ with {cfg.in_channels} input channels takes "
                             f"{'x and the conditioning y' if cfg.in_channels == 4 else 'x alone (no y)'}")
        if (cond is not None) != (cfg.cond_dim > 0):
            raise ValueError("an audio-visual NCSN++ (cond_dim > 0) needs the conditioning frames" if cfg.cond_dim
                             else "an audio-only NCSN++ (cond_dim 0) takes no conditioning frames")
        if cond is not None and (cond.ndim != 3 or cond.shape[0] != b or cond.shape[-1] != cfg.cond_dim):
            raise ValueError(f"conditioning frames must be (B={b}, T_v, {cfg.cond_dim}), got {tuple(cond.shape)}")
        idx = iter(range(10_000))

        def name():
            return f"all_modules_{next(idx)}"

        temb = None
        if cfg.time_embedding:
            t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), (b,))
            # Time embedding: fixed Gaussian Fourier features of log(t), then two dense layers.
            fourier_w = self.variable(
                "constants", "W",
                lambda: jax.random.normal(self.make_rng("params"), (cfg.nf,), jnp.float32) * cfg.fourier_scale)
            name()  # all_modules_0 is the Fourier projection (its W lives in the "constants" collection)
            proj = jnp.log(t)[:, None] * fourier_w.value[None, :] * 2.0 * np.pi
            temb = jnp.concatenate([jnp.sin(proj), jnp.cos(proj)], axis=-1)
            temb = nn.Dense(cfg.nf * 4, kernel_init=default_init(), bias_init=nn.initializers.zeros,
                            name=name())(temb)
            temb = nn.Dense(cfg.nf * 4, kernel_init=default_init(), bias_init=nn.initializers.zeros,
                            name=name())(nn.silu(temb))

        rb_kw = dict(fir_kernel=cfg.fir_kernel, init_scale=cfg.init_scale, group_cap=cfg.group_cap, dtype=dtype)
        block_cls = nn.remat(ResnetBlockBigGANpp) if cfg.remat else ResnetBlockBigGANpp

        def resblock(h, out_ch, **kw):
            return block_cls(out_ch=out_ch, name=name(), **rb_kw, **kw)(h, temb)

        def attn(h):
            return AttnBlockpp(init_scale=cfg.init_scale, group_cap=cfg.group_cap, dtype=dtype, name=name())(h)

        def fuse(h, d_head=0):  # cross-attention to the conditioning frames (audio-visual prior only)
            if cond is None:
                return h
            return CrossAttnBlockLight(d_head, cfg.xattn_scaled, cfg.group_cap, dtype, cfg.xattn_zero_init,
                                       cfg.xattn_time_window, cfg.xattn_audio_frame_s, n_frames // h.shape[2],
                                       cfg.xattn_visual_frame_s, name=name())(h, cond, cond_mask)

        parts = [x] if y is None else [x, y]
        x2 = jnp.stack([p for z in parts for p in (jnp.real(z), jnp.imag(z))], axis=-1).astype(jnp.float32)
        input_pyramid = x2
        hs = [fuse(_conv(cfg.nf, 3, 1.0, name(), dtype, few=True)(x2.astype(dtype)), cfg.xattn_first_d_head)]

        # Downsampling path.
        for level, mult in enumerate(cfg.ch_mult):
            for _ in range(cfg.num_res_blocks):
                h = resblock(hs[-1], cfg.nf * mult)
                if h.shape[1] in cfg.attn_resolutions:
                    h = attn(h)
                hs.append(h)
            if level != cfg.num_levels - 1:
                h = fuse(resblock(hs[-1], hs[-1].shape[-1], down=True))
                input_pyramid = fir_downsample(input_pyramid, cfg.fir_kernel)
                # Combine ("sum"): 1×1 conv of the input pyramid added to h.
                h = _CombineSum(h.shape[-1], dtype, name=name())(input_pyramid, h)
                hs.append(h)

        # Middle.
        h = hs[-1]
        h = resblock(h, h.shape[-1])
        h = fuse(attn(h))
        h = resblock(h, h.shape[-1])

        # Upsampling path with the output-skip pyramid.
        pyramid = None
        for level in reversed(range(cfg.num_levels)):
            out_ch = cfg.nf * cfg.ch_mult[level]
            for _ in range(cfg.num_res_blocks + 1):
                h = resblock(jnp.concatenate([h, hs.pop()], axis=-1), out_ch)
            if h.shape[1] in cfg.attn_resolutions:
                h = attn(h)
            h = fuse(h)
            p = nn.silu(_GroupNorm(cfg.group_cap, name=name())(h))
            p = _conv(x2.shape[-1], 3, cfg.init_scale, name(), dtype, few=True)(p)
            pyramid = p if pyramid is None else fir_upsample(pyramid, cfg.fir_kernel) + p
            if level != 0:
                h = resblock(h, h.shape[-1], up=True)
        assert not hs

        h = pyramid.astype(jnp.float32)
        if cfg.output_scaling == "1/t":
            h = h / t[:, None, None, None]
        h = _Conv1x1(2, _torch_default_conv_init(2), _torch_default_conv_init(2), name="output_layer")(h)
        return jax.lax.complex(h[..., 0], h[..., 1])


class _CombineSum(nn.Module):
    features: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, pyr, h):
        return _conv(self.features, 1, 1.0, "Conv_0", self.dtype)(pyr.astype(self.dtype)) + h
