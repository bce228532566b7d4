"""NumPyro models in: unconstrained positions, constrained output, data splits."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.infer.util import potential_energy

import inferax
from inferax import examples

DATA = examples.EIGHT_SCHOOLS


def test_constrain_gives_every_site_in_its_own_space():
    target = inferax.from_numpyro(
        examples.eight_schools_noncentered, DATA["J"], DATA["sigma"], y=DATA["y"]
    )
    position = {"mu": jnp.array(1.0), "tau": jnp.array(-10.0), "theta_tilde": jnp.ones(8)}
    sites = target.constrain(position)
    assert set(sites) == {"mu", "tau", "theta_tilde", "theta"}
    assert float(sites["tau"]) > 0.0  # unconstrained -10 maps into the positive reals
    np.testing.assert_allclose(sites["theta"], 1.0 + sites["tau"] * np.ones(8), rtol=1e-6)
    np.testing.assert_array_equal(target.observed_data["y"], DATA["y"])
    expected = -potential_energy(
        examples.eight_schools_noncentered, (DATA["J"], DATA["sigma"]), {"y": DATA["y"]}, position
    )
    np.testing.assert_allclose(target.logdensity(position), expected, rtol=1e-6)


def test_discrete_latent_site_is_named():
    def mixture(y):
        z = numpyro.sample("component", dist.Bernoulli(0.3))
        numpyro.sample("y", dist.Normal(z * 2.0, 1.0), obs=y)

    with pytest.raises(ValueError, match="latent site 'component' is discrete"):
        inferax.from_numpyro(mixture, jnp.array([0.1]))


def test_data_split_matches_the_full_model():
    X, y, _ = examples.synthetic_logistic_data(jax.random.key(0), 40, 3)
    full = inferax.from_numpyro(examples.logistic_regression, X, y=y)
    split = inferax.from_numpyro(examples.logistic_regression, X, y=y, data=("X", "y"))
    assert split.num_data == 40
    assert set(split.data) == {"X", "y"}
    params = {"w": jnp.array([0.3, -0.2, 0.5]), "b": jnp.array(0.1)}
    np.testing.assert_allclose(split.logdensity(params), full.logdensity(params), rtol=1e-5)
    # The prior alone is the normal log density of the weights and bias.
    expected_prior = dist.Normal(0.0, 1.0).log_prob(jnp.array([0.3, -0.2, 0.5, 0.1])).sum()
    np.testing.assert_allclose(split.log_prior(params), expected_prior, rtol=1e-5)
    batch = jax.tree.map(lambda leaf: leaf[:10], split.data)
    logits = X[:10] @ params["w"] + params["b"]
    expected_likelihood = dist.Bernoulli(logits=logits).log_prob(y[:10]).sum()
    np.testing.assert_allclose(split.log_likelihood(params, batch), expected_likelihood, rtol=1e-5)


def test_data_names_must_be_model_arguments():
    X, y, _ = examples.synthetic_logistic_data(jax.random.key(0), 10, 2)
    with pytest.raises(ValueError, match=r"data: \['labels'\] are not arguments"):
        inferax.from_numpyro(examples.logistic_regression, X, y=y, data=("labels",))


def test_numpyro_target_samples_with_a_data_split():
    X, y, _ = examples.synthetic_logistic_data(jax.random.key(0), 30, 2)
    target = inferax.from_numpyro(examples.logistic_regression, X, y=y, data=("X", "y"))
    post = inferax.sample(
        target,
        inferax.samplers.mala(step_size=0.02),
        jax.random.key(0),
        num_chains=2,
        num_warmup=50,
        num_samples=20,
    )
    assert post.draws["w"].shape == (2, 20, 2)
    assert post.observed_data["y"].shape == (30,)
