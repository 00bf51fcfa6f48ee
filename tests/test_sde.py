"""OUVE SDE: parity with golden/sde_ouve.npz and the closed-form table of the spec."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxse.diffusion.sde import OUVESDE, complex_normal
from tests.conftest import cplx, load_golden

SDE = OUVESDE()


@pytest.fixture(scope="module")
def g():
    return load_golden("sde_ouve.npz")


def test_constants(g):
    assert (SDE.theta, SDE.sigma_min, SDE.sigma_max, SDE.t_eps) == (1.5, 0.05, 0.5, 0.03)
    assert SDE.logsig == pytest.approx(float(g["logsig"]), rel=1e-15)
    np.testing.assert_allclose(SDE.prior_std(), g["prior_std"][0], rtol=1e-6)


@pytest.mark.parametrize("fn,key", [("mean_coeff", "mean_factor"), ("std", "std"), ("diffusion", "g")])
def test_scalar_functions(g, fn, key):
    np.testing.assert_allclose(getattr(SDE, fn)(g["t"]), g[key], rtol=1e-6)
    with jax.enable_x64(True):
        np.testing.assert_allclose(getattr(SDE, fn)(jnp.asarray(g["t_f64"])), g[key + "_f64"], rtol=1e-12)


def test_marginal_drift_discretize(g):
    x, t = jnp.asarray(cplx(g, "x")), jnp.asarray(g["t"])
    mean, std = SDE.marginal(x, t)
    np.testing.assert_allclose(mean, cplx(g, "marginal_mean"), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(std, g["std"], rtol=1e-6)
    np.testing.assert_allclose(SDE.drift(x, t), cplx(g, "drift"), rtol=1e-6)
    f, G = jax.jit(SDE.discretize)(x, t, 1.0 / int(g["N"]))
    np.testing.assert_allclose(f, cplx(g, "discretize_f"), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(G, g["discretize_G"], rtol=1e-6)


def test_table_from_spec():
    t = np.array([0.03, 0.1, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(SDE.mean_coeff(t), [0.955997, 0.860708, 0.687289, 0.472367, 0.324652, 0.223130], atol=2e-6)
    np.testing.assert_allclose(SDE.std(t), [0.018830, 0.035746, 0.063813, 0.121657, 0.218431, 0.388983], atol=2e-6)
    np.testing.assert_allclose(SDE.diffusion(t), [0.114972, 0.135081, 0.190806, 0.339307, 0.603383, 1.072983], atol=2e-6)


def test_variance_ode_consistency():
    # For dx = -θx dt + g dw the marginal variance obeys dσ²/dt = -2θσ² + g².
    t = jnp.linspace(0.05, 1.0, 50)
    with jax.enable_x64(True):
        t = t.astype(jnp.float64)
        dvar = jax.vmap(jax.grad(lambda s: SDE.std(s) ** 2))(t)
        np.testing.assert_allclose(dvar, -2 * SDE.theta * SDE.std(t) ** 2 + SDE.diffusion(t) ** 2, rtol=1e-10)


def test_complex_normal_and_perturb_statistics():
    z = complex_normal(jax.random.PRNGKey(0), (200_000,))
    assert z.dtype == jnp.complex64
    assert float(jnp.mean(jnp.abs(z) ** 2)) == pytest.approx(1.0, abs=0.01)
    assert float(jnp.var(z.real)) == pytest.approx(0.5, abs=0.01)
    assert abs(float(jnp.mean(z.real * z.imag))) < 0.01
    x0 = jnp.ones((4, 50_000), jnp.complex64)
    t = jnp.array([0.03, 0.3, 0.6, 1.0])
    xt, zz, std = SDE.perturb(jax.random.PRNGKey(1), x0, t)
    np.testing.assert_allclose(xt, SDE.mean_coeff(t)[:, None] * x0 + std[:, None] * zz, rtol=1e-6)
    np.testing.assert_allclose(jnp.mean(xt, axis=1).real, SDE.mean_coeff(t), atol=0.01)
    np.testing.assert_allclose(jnp.std(xt, axis=1), std, rtol=0.02)
    prior = SDE.prior_sample(jax.random.PRNGKey(2), (100_000,))
    assert float(jnp.std(prior)) == pytest.approx(0.388983, rel=0.02)
