"""Eight schools, non-centred, through from_numpyro: inferax NUTS against NumPyro's NUTS."""

import jax
import numpy as np
from mcse_helpers import mean_and_mcse, min_ess
from numpyro.infer import MCMC, NUTS

import inferax
from inferax import examples, samplers

DATA = examples.EIGHT_SCHOOLS
MODEL = examples.eight_schools_noncentered


def test_nuts_agrees_with_numpyro():
    target = inferax.from_numpyro(MODEL, DATA["J"], DATA["sigma"], y=DATA["y"])
    post = inferax.sample(
        target, samplers.nuts(), jax.random.key(1), num_chains=4, num_warmup=1000, num_samples=1000
    )
    mcmc = MCMC(
        NUTS(MODEL),
        num_warmup=1000,
        num_samples=1000,
        num_chains=4,
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.run(jax.random.key(2), DATA["J"], DATA["sigma"], y=DATA["y"])
    reference = mcmc.get_samples(group_by_chain=True)
    for site in ("mu", "tau"):
        ours, ours_mcse = mean_and_mcse(post.draws[site])
        theirs, theirs_mcse = mean_and_mcse(np.asarray(reference[site]))
        assert min_ess(post.draws[site]) > 400 and min_ess(np.asarray(reference[site])) > 400
        tolerance = 4 * np.hypot(ours_mcse, theirs_mcse)
        assert abs(ours - theirs) <= tolerance, (
            f"{site}: inferax {ours:.3f} vs NumPyro {theirs:.3f}, tolerance {tolerance:.3f}"
        )
    # Every site of the model, deterministic ones included, is in the draws.
    assert post.stats["diverging"].shape == (4, 1000)
    assert set(post.draws) == {"mu", "tau", "theta_tilde", "theta"}
    assert post.draws["theta"].shape == (4, 1000, 8)
    np.testing.assert_allclose(
        post.draws["theta"],
        post.draws["mu"][..., None] + post.draws["tau"][..., None] * post.draws["theta_tilde"],
        rtol=1e-5,
        atol=1e-5,
    )
