"""The audio-visual prior (AV-UDiffSE): the light cross-attention fusion block and the whole NCSN++M AV network
against the reference (``../shared/golden/av_ncsnppm_small.npz``, golden README §9), with the reference's quirks
(unscaled logits, the first block's hard-coded head size, no positions) and the principled options beside them."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.conftest import cplx, load_golden, rel_err
from jaxse.diffusion import convert
from jaxse.diffusion.models import ScoreModel
from jaxse.diffusion.ncsnpp import CrossAttnBlockLight, NCSNppConfig

AV_SMALL = ScoreModel(net=NCSNppConfig(nf=16, ch_mult=(1, 2, 2, 2), num_res_blocks=1, attn_resolutions=(),
                                       output_scaling="none", cond_dim=768), parameterization="noise")


@pytest.fixture(scope="module")
def golden():
    return load_golden("av_ncsnppm_small.npz")


def _block_params(d: dict) -> dict:
    p = {k[len("blk_param/"):]: v for k, v in d.items() if k.startswith("blk_param/")}
    lin = lambda n: {"kernel": p[f"cross_attention.{n}.weight"].T}  # noqa: E731  (torch Linear: (out, in))
    return {"cross_attention": {"to_q": lin("to_q"), "to_k": lin("to_k"), "to_v": lin("to_v"),
                                "to_out": {"kernel": p["cross_attention.to_out.0.weight"].T,
                                           "bias": p["cross_attention.to_out.0.bias"]}},
            "groupnorm": {"norm": {"scale": p["groupnorm.weight"], "bias": p["groupnorm.bias"]}}}


def test_cross_attention_block_matches_reference(golden, fast_compile):
    d = golden
    h = jnp.asarray(d["blk_h"].transpose(0, 2, 3, 1))  # torch (B, C, F', T') -> (B, F', T', C)
    block = CrossAttnBlockLight(d_head=32)
    out = jax.jit(block.apply)({"params": _block_params(d)}, h, jnp.asarray(d["blk_v"]))
    assert rel_err(np.asarray(out).transpose(0, 3, 1, 2), d["blk_out_f64"]) < 1e-5
    # the attention probabilities, read back through a hook-free re-derivation of the logits
    q = np.einsum("bctf,df->bctd", d["blk_h"].transpose(0, 1, 3, 2), d["blk_param/cross_attention.to_q.weight"])
    k = d["blk_v"] @ d["blk_param/cross_attention.to_k.weight"].T
    logits = np.einsum("bctd,bsd->bcts", q, k)
    a = np.exp(logits - logits.max(-1, keepdims=True))
    assert rel_err(a / a.sum(-1, keepdims=True), d["blk_attn_f64"]) < 1e-5  # unscaled logits, as the reference


def test_scaled_logits_option_changes_only_the_logit_scale(golden, fast_compile):
    d = golden
    h, v = jnp.asarray(d["blk_h"].transpose(0, 2, 3, 1)), jnp.asarray(d["blk_v"])
    params = {"params": _block_params(d)}
    scaled = CrossAttnBlockLight(d_head=32, scaled=True).apply(params, h, v)
    # scaling the logits by 1/sqrt(32) equals the unscaled block with W_q / sqrt(32)
    p2 = jax.tree_util.tree_map(lambda x: x, params)
    p2["params"]["cross_attention"]["to_q"]["kernel"] = params["params"]["cross_attention"]["to_q"]["kernel"] / np.sqrt(32)
    unscaled = CrossAttnBlockLight(d_head=32).apply(p2, h, v)
    np.testing.assert_allclose(np.asarray(scaled), np.asarray(unscaled), rtol=1e-5, atol=1e-5)
    assert rel_err(np.asarray(scaled).transpose(0, 3, 1, 2), d["blk_out_f64"]) > 1e-3


def test_av_network_matches_reference(golden, fast_compile):
    d = golden
    variables = convert.state_dict_to_variables(AV_SMALL, convert.load_npz_state_dict_from(d))
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(variables))
    assert n_params == 2_053_646  # the reference's count, its fixed Fourier weights (our "constants") included
    x = jnp.asarray(cplx(d, "x", squeeze_channel=True), jnp.complex64)
    t, v = jnp.asarray(d["t"]), jnp.asarray(d["vfeat"])
    out = jax.jit(AV_SMALL.apply_net)(variables, x, t, v)
    assert rel_err(out, cplx(d, "dnn_out_f64", squeeze_channel=True)) < 1e-4
    score = jax.jit(AV_SMALL.score)(variables, x, t, v)
    ref_score = -cplx(d, "dnn_out_f64", squeeze_channel=True) / d["sigma_t"][:, None, None]
    assert rel_err(score, ref_score) < 1e-4


def test_av_network_needs_its_conditioning_and_audio_only_refuses_it(fast_compile):
    small = NCSNppConfig(nf=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), output_scaling="none")
    av = ScoreModel(net=NCSNppConfig(**{**small.to_dict(), "cond_dim": 12}), parameterization="noise")
    ao = ScoreModel(net=small, parameterization="noise")
    x = jnp.zeros((1, 256, 8), jnp.complex64)
    t = jnp.full((1,), 0.5)
    v = jnp.ones((1, 3, 12))
    var_av = av.init(jax.random.PRNGKey(0))
    var_ao = jax.eval_shape(ao.init, jax.random.PRNGKey(0))  # the checks run at trace time
    with pytest.raises(ValueError, match="needs the conditioning frames"):
        jax.eval_shape(av.score, var_av, x, t)
    with pytest.raises(ValueError, match="takes no conditioning frames"):
        jax.eval_shape(ao.score, var_ao, x, t, v)
    with pytest.raises(ValueError, match=r"must be \(B=1, T_v, 12\)"):
        jax.eval_shape(av.score, var_av, x, t, jnp.ones((1, 3, 7)))
    # any number of conditioning frames (no positions, no mask); the output depends on them
    score = jax.jit(av.score)
    a = score(var_av, x + 0.1, t, v)
    b = score(var_av, x + 0.1, t, jnp.ones((1, 5, 12)) * 0.3)
    assert a.shape == b.shape == x.shape and not np.allclose(a, b)
    # 2 fusion blocks per level boundary + bottleneck + decoder levels: 1 + 1 + 1 + 2 = 5 blocks
    names = [k for k in var_av["params"] if "cross_attention" in var_av["params"][k]]
    assert len(names) == 5


def test_reference_av_layout_is_recognised_and_imported(golden, tmp_path, fast_compile):
    from jaxse.av.models import AVScoreModel

    state = convert.load_npz_state_dict_from(golden)
    state["param/feature_extractor.proj.weight"] = np.zeros((3, 3), np.float32)  # the reference's extractor: dropped
    np.savez(tmp_path / "av.npz", **state)
    model, variables = convert.import_reference(tmp_path / "av.npz")
    assert isinstance(model, AVScoreModel) and model.net.cond_dim == 768 and model.net.xattn_first_d_head == 128
    assert model.net == AV_SMALL.net and model.parameterization == AV_SMALL.parameterization
    x = jnp.asarray(cplx(golden, "x", squeeze_channel=True), jnp.complex64)
    out = jax.jit(model.apply_net)(variables, x, jnp.asarray(golden["t"]), jnp.asarray(golden["vfeat"]))
    assert rel_err(out, cplx(golden, "dnn_out_f64", squeeze_channel=True)) < 1e-4


def test_zero_initialised_fusion_blocks_start_as_the_identity(fast_compile):
    h = jax.random.normal(jax.random.PRNGKey(0), (2, 16, 8, 8))
    v = jax.random.normal(jax.random.PRNGKey(1), (2, 5, 12))
    block = CrossAttnBlockLight(d_head=4, zero_init=True)
    params = block.init(jax.random.PRNGKey(2), h, v)
    np.testing.assert_array_equal(np.asarray(block.apply(params, h, v)), np.asarray(h))
    reference_init = CrossAttnBlockLight(d_head=4)
    assert not np.allclose(reference_init.apply(reference_init.init(jax.random.PRNGKey(2), h, v), h, v), h)


def test_time_window_keeps_each_audio_frame_on_the_visual_frames_of_its_time(fast_compile):
    from jaxse.diffusion.ncsnpp import _CrossAttention

    # A level downsampled by 2: 32 query frames of 16 ms = 0.512 s; 13 visual frames of 40 ms (0.52 s).
    q = jax.random.normal(jax.random.PRNGKey(0), (1, 4, 32, 16))  # (B, C, T', F')
    v = jax.random.normal(jax.random.PRNGKey(1), (1, 13, 8))
    block = CrossAttnBlockLight(d_head=0, scaled=True, time_window=0.04, frame_stride=2)
    h = jnp.transpose(q, (0, 3, 2, 1))  # (B, F', T', C)
    params = block.init(jax.random.PRNGKey(2), h, v)
    attn = _CrossAttention(16, True)
    attn_params = {"params": params["params"]["cross_attention"]}
    k = 2
    t_a = (np.arange(32) * k + (k - 1) / 2) * 0.008
    t_v = (np.arange(13) + 0.5) * 0.04
    bias = jnp.asarray(-0.5 * ((t_a[:, None] - t_v[None, :]) / 0.04) ** 2, jnp.float32)
    out = attn.apply(attn_params, q, v, None, bias)
    # Perturbing the first visual frame (centre 20 ms) moves the audio frames near 20 ms, not those near 0.5 s.
    moved = np.abs(np.asarray(attn.apply(attn_params, q, v.at[0, 0].add(3.0), None, bias) - out)).max(axis=(0, 1, 3))
    near, far = moved[:3].min(), moved[-8:].max()
    assert near > 1e-2 and far < 1e-6 * near
    # Without the window every frame sees the change; the window is what the block applies.
    free = np.abs(np.asarray(attn.apply(attn_params, q, v.at[0, 0].add(3.0)) - attn.apply(attn_params, q, v)))
    assert free.max(axis=(0, 1, 3))[-8:].min() > 1e-4
    # The block computes exactly this windowed attention (its cross_attention output, before the GroupNorm).
    _, inter = block.apply(params, h, v, capture_intermediates=True)
    np.testing.assert_allclose(np.asarray(inter["intermediates"]["cross_attention"]["__call__"][0]),
                               np.asarray(out), rtol=1e-5, atol=1e-6)
    window0 = NCSNppConfig(cond_dim=8)
    assert window0.xattn_time_window == 0.0  # the reference (no positions) stays the default
    with pytest.raises(ValueError, match="xattn_time_window"):
        NCSNppConfig(cond_dim=8, xattn_time_window=-1.0)
