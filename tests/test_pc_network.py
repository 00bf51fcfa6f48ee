"""One UDiffSE predictor-corrector step with the real (reference-weight) NCSN++ as the score:
golden/udiffse_step.npz part (c'), i.e. the network, its score parameterisation and the PC step together."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxse.diffusion import convert

from jaxse.diffusion import samplers
from tests.conftest import GOLDEN, cplx, load_golden, rel_err


def test_pc_step_with_network_matches_reference():
    g = load_golden("udiffse_step.npz")
    model, variables = convert.import_reference(GOLDEN / "ncsnpp_small.npz")
    x = jnp.asarray(cplx(g, "pc_St_in", squeeze_channel=True), jnp.complex64)
    t = jnp.asarray(g["pcnet_t"])
    assert int(g["pcnet_step_idx"]) == 10
    np.testing.assert_allclose(samplers.timesteps(30)[10], t[0], rtol=1e-6)

    @jax.jit
    def step(variables, x, t, z_corr, z_pred):
        return samplers.pc_step(model.score_fn(variables), model.sde, samplers.UDIFFSE_PC, x, t,
                                jnp.float32(1.0 / 30), z_corr, z_pred, False)

    out, aux = step(variables, x, t, jnp.asarray(cplx(g, "pcnet_z_corr", True), jnp.complex64),
                    jnp.asarray(cplx(g, "pcnet_z_pred", True), jnp.complex64))
    assert rel_err(aux["x_corrected"], cplx(g, "pcnet_St_corrected", True)) < 1e-4
    assert rel_err(aux["score"], cplx(g, "pcnet_score_pred", True)) < 1e-4
    assert rel_err(out, cplx(g, "pcnet_St_out", True)) < 1e-4
    np.testing.assert_allclose(aux["std"], g["pcnet_std"], rtol=1e-5)
    np.testing.assert_allclose(aux["g"], g["pcnet_g"], rtol=1e-5)
