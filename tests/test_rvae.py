"""RVAE network: parity with golden/rvae_pretrained.npz, parameter count, masks, weight import, STFT."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxse.pytree import count_params
from jaxse.rvae import convert as rvae_convert

from jaxse.rvae import spectral as rvae_spectral
from jaxse.rvae import net as rvae
from tests.conftest import REPO, load_golden, rel_err

NUM_PARAMS = 1_026_849


@pytest.fixture(scope="module")
def g():
    return load_golden("rvae_pretrained.npz")


@pytest.fixture(scope="module")
def state(g):
    return {k: v for k, v in g.items() if k.startswith("param/")}


@pytest.fixture(scope="module")
def params(state):
    return jax.tree.map(jnp.asarray, rvae_convert.state_dict_to_params(state))


def test_fresh_model_has_the_reference_size():
    p = rvae.init_params(jax.random.PRNGKey(0))
    assert count_params(p) == NUM_PARAMS
    assert rvae.config_from_params(p) == rvae.RVAEConfig()
    # PyTorch LSTM initialisation: U(±1/sqrt(128))
    k = np.asarray(p["encoder"]["rnn_g_x"]["l0"]["kernel_ih"])
    assert k.shape == (513, 512) and np.abs(k).max() <= 1 / np.sqrt(128)
    causal = rvae.RVAEConfig(bidir_g_x=False, bidir_h=False)
    pc = rvae.init_params(jax.random.PRNGKey(0), causal)
    assert rvae.config_from_params(pc) == causal
    # g_x 513->128, g_z 16->128, two 256->16 heads, h 16->128, 128->513
    lstm = lambda i, h: 4 * h * (i + h) + 8 * h  # noqa: E731
    assert count_params(pc) == lstm(513, 128) + lstm(16, 128) + 2 * (256 * 16 + 16) + lstm(16, 128) + 128 * 513 + 513


def test_golden_import(g, params):
    cfg = rvae_convert.infer_config({k: g[k] for k in g if k.startswith("param/")})
    assert cfg == rvae.RVAEConfig(x_dim=int(g["cfg/x_dim"]), z_dim=int(g["cfg/z_dim"]),
                                  dim_rnn_g_x=int(g["cfg/dim_RNN_g_x"]), dim_rnn_g_z=int(g["cfg/dim_RNN_g_z"]),
                                  dim_rnn_h=int(g["cfg/dim_RNN_h"]), bidir_g_x=bool(g["cfg/bidir_g_x"]),
                                  bidir_h=bool(g["cfg/bidir_h"]))
    assert count_params(params) == NUM_PARAMS
    np.testing.assert_array_equal(params["encoder"]["rnn_g_x"]["l0_reverse"]["kernel_ih"],
                                  g["param/rnn_g_x.weight_ih_l0_reverse"].T)


def test_stft_matches_the_training_stft(g):
    np.testing.assert_array_equal(rvae_spectral.sine_window(), g["stft_window"])
    x = rvae_spectral.stft(g["waves"])  # (2, 513, 50)
    assert x.shape == (2, 513, 50)
    power = jnp.transpose(jnp.abs(x) ** 2, (2, 0, 1))
    assert rel_err(power, g["x_power"]) < 1e-5
    # constant padding only changes the two frames at each end
    pc = jnp.transpose(jnp.abs(rvae_spectral.stft(g["waves"], rvae_spectral.RVAESpecConfig(pad_mode="constant"))) ** 2,
                       (2, 0, 1))
    assert rel_err(pc[2:-2], g["x_power"][2:-2]) < 1e-5
    assert rel_err(pc[:2], g["x_power"][:2]) > 1e-3


def test_istft_inverts_stft():
    x = np.random.default_rng(0).standard_normal((2, 5000)).astype(np.float32)
    for mode in ("reflect", "constant"):
        spec = rvae_spectral.RVAESpecConfig(pad_mode=mode)
        y = rvae_spectral.istft(rvae_spectral.stft(x, spec), 5000, spec)
        np.testing.assert_allclose(y, x, atol=2e-5)


def _enc(params, g, dtype=jnp.float32):
    return jax.jit(lambda p, x, e: rvae.encode(p, x, eps=e, return_aux=True))(
        params, jnp.asarray(g["x_power"], dtype), jnp.asarray(g["eps"], dtype))


def test_encoder_parity_f32(g, params):
    z, mu, logvar, aux = _enc(params, g)
    assert rel_err(aux["g_x"], g["enc_gx"]) < 5e-5  # saturated gates on |X|² inputs up to ~1e5
    assert rel_err(aux["h"], g["enc_gz_h"]) < 1e-5
    assert rel_err(aux["c"], g["enc_gz_c"]) < 1e-5
    assert rel_err(mu, g["enc_z_mean"]) < 1e-5
    assert rel_err(logvar, g["enc_z_logvar"]) < 1e-5
    assert rel_err(z, g["enc_z"]) < 1e-5


def test_decoder_parity_f32(g, params):
    dec = jax.jit(lambda p, z: rvae.decode(p, z, return_aux=True))
    for z_key, suffix in (("enc_z", "z"), ("enc_z_mean", "zmean"), ("z_dec_in", "zin")):
        logv, aux = dec(params, jnp.asarray(g[z_key]))
        assert rel_err(logv, g[f"dec_logvar_from_{suffix}"]) < 1e-5, z_key
        if suffix != "zmean":
            assert rel_err(aux["h"], g[f"dec_h_from_{suffix}"]) < 1e-5, z_key


def test_parity_float64(g, params):
    with jax.enable_x64(True):
        p64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
        z, mu, logvar, aux = _enc(p64, g, jnp.float64)
        assert z.dtype == jnp.float64
        for name, a in (("enc_gx", aux["g_x"]), ("enc_gz_h", aux["h"]), ("enc_gz_c", aux["c"]),
                        ("enc_z_mean", mu), ("enc_z_logvar", logvar), ("enc_z", z)):
            assert rel_err(a, g[name + "_f64"]) < 1e-10, name
        dec = jax.jit(lambda p, z: rvae.decode(p, z, return_aux=True))
        for z_key, suffix in (("enc_z_f64", "z"), ("enc_z_mean_f64", "zmean"), ("z_dec_in", "zin")):
            logv, aux = dec(p64, jnp.asarray(g[z_key], jnp.float64))
            assert rel_err(logv, g[f"dec_logvar_from_{suffix}_f64"]) < 1e-10, z_key
            if suffix != "zmean":
                assert rel_err(aux["h"], g[f"dec_h_from_{suffix}_f64"]) < 1e-10, z_key


def test_flax_module_and_key_noise(g, params):
    x = jnp.asarray(g["x_power"][:8])
    eps = jnp.asarray(g["eps"][:8])
    log_v, z, mu, logvar = rvae.RVAE().apply({"params": params}, x, eps)
    z2, mu2, _ = rvae.encode({"params": params}, x, eps=eps)
    np.testing.assert_allclose(z, z2, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(log_v, rvae.decode(params, z2), rtol=1e-6, atol=1e-6)
    # a key draws eps of shape (T, *batch, z_dim), time first
    key = jax.random.PRNGKey(3)
    z3, _, _ = rvae.encode(params, x, key)
    z4, _, _ = rvae.encode(params, x, eps=jax.random.normal(key, (8, 2, 16)))
    np.testing.assert_array_equal(z3, z4)
    # batch axes are optional: one utterance (T, F) equals its row of the batch
    z5, _, _ = rvae.encode(params, x[:, 1], eps=eps[:, 1])
    np.testing.assert_allclose(z5, z2[:, 1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("x64", [False, True])
def test_mask_makes_padding_invisible(g, params, x64):
    """Zero frames appended with a mask leave every output on the real frames unchanged (up to rounding: the
    encoder's LSTM pre-activations reach ~1e6 on power spectra, so float32 rounding of the input projection
    shows at ~1e-4 in g_x; in float64 the outputs agree to ~1e-12)."""
    t, pad = 30, 12
    with jax.enable_x64(x64):
        dt = jnp.float64 if x64 else jnp.float32
        tol = 1e-10 if x64 else 2e-3
        p = jax.tree.map(lambda a: jnp.asarray(a, dt), params)
        x = jnp.asarray(g["x_power"][:t, 0], dt)
        eps = jnp.asarray(g["eps"][:t, 0], dt)
        xp = jnp.concatenate([x, jnp.zeros((pad, 513), dt)])
        ep = jnp.concatenate([eps, jnp.ones((pad, 16), dt)])
        mask = jnp.arange(t + pad) < t
        z, mu, _, aux = rvae.encode(p, x, eps=eps, return_aux=True)
        zp, mup, _, auxp = rvae.encode(p, xp, eps=ep, mask=mask, return_aux=True)
        assert rel_err(auxp["g_x"][:t], aux["g_x"]) < tol
        assert rel_err(zp[:t], z) < tol / 10
        zdec = jnp.concatenate([z, 5.0 * jnp.ones((pad, 16), dt)])
        assert rel_err(rvae.decode(p, zdec, mask=mask)[:t], rvae.decode(p, z)) < tol / 100
        # without the mask the backward recurrences see the padding
        assert rel_err(rvae.decode(p, zdec)[:t], rvae.decode(p, z)) > 1e-3
        zu, _, _ = rvae.encode(p, xp, eps=ep)
        assert rel_err(zu[:t], z) > 1e-3


def test_torch_state_dict_and_cli(tmp_path, g, state, params):
    torch = pytest.importorskip("torch")
    pt = tmp_path / "rvae.pt"
    torch.save({k[len("param/"):]: torch.from_numpy(np.array(v)) for k, v in state.items()}, pt)
    cfg, p = rvae_convert.load_rvae(pt)
    assert cfg == rvae.RVAEConfig()
    jax.tree.map(np.testing.assert_array_equal, p, jax.device_get(params))
    out = tmp_path / "converted"
    r = subprocess.run([sys.executable, "-m", "jaxse.rvae_convert", str(pt), "-o", str(out)], cwd=REPO,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "1,026,849 parameters" in r.stdout
    cfg2, p2 = rvae_convert.load_rvae(out)
    assert cfg2 == cfg
    jax.tree.map(np.testing.assert_array_equal, p2, p)
    cfg3, p3 = rvae_convert.load_rvae(out / rvae_convert.PARAMS_FILE)  # our own .npz, read directly
    jax.tree.map(np.testing.assert_array_equal, p3, p)


def test_converter_errors(tmp_path, state):
    partial = {k: v for k, v in state.items() if "gen_logvar" not in k}
    with pytest.raises(rvae_convert.ConversionError, match="missing"):
        rvae_convert.state_dict_to_params(partial)
    with pytest.raises(rvae_convert.ConversionError, match="do not belong"):
        rvae_convert.state_dict_to_params({**state, "param/extra.weight": np.zeros(3)})
    with pytest.raises(rvae_convert.ConversionError, match="dense layers"):
        rvae_convert.state_dict_to_params({**state, "param/mlp_x_gx.linear0.weight": np.zeros((3, 3))})
    bad = dict(state)
    bad["param/gen_logvar.bias"] = np.zeros(7, np.float32)
    with pytest.raises(rvae_convert.ConversionError, match="gen_logvar.bias"):
        rvae_convert.state_dict_to_params(bad)
    (tmp_path / "w.txt").write_text("x")
    for path in (tmp_path / "missing.pt", tmp_path / "w.txt", tmp_path):
        with pytest.raises(rvae_convert.ConversionError):
            rvae_convert.load_rvae(path)
    r = subprocess.run([sys.executable, "-m", "jaxse.rvae_convert", str(tmp_path / "w.txt"), "-o",
                        str(tmp_path / "o")], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and r.stderr.startswith("error:") and len(r.stderr.strip().splitlines()) == 1
