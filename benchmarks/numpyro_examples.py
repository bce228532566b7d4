"""Models users bring, written as NumPyro's own examples write them, and NumPyro's NUTS
posterior of each as the reference `tests/test_numpyro_models.py` checks inferax against.

The models cover improper priors, enumerated discrete sites, a reparametrisation, scan with
condition, and a hierarchical model. `python benchmarks/numpyro_examples.py` runs NumPyro's
NUTS on each (4 chains of 1,000 warmup and 10,000 draws) and writes the posterior mean and
sd of every site, with their Monte Carlo standard errors from ArviZ, to
`numpyro_examples.json` beside this file. The tests read that file instead of running
NumPyro, whose compiling was half of their time.
"""

import json
import os

import arviz_stats
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.contrib.control_flow import scan
from numpyro.distributions import constraints
from numpyro.infer import MCMC, NUTS
from numpyro.infer.reparam import LocScaleReparam

REFERENCE_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "numpyro_examples.json")
NUM_CHAINS, NUM_WARMUP, NUM_SAMPLES = 4, 1000, 10_000


def flat_regression(x, y=None):
    """Stan's unstated priors, as NumPyro writes them: flat on the line, flat on sigma > 0."""
    beta = numpyro.sample("beta", dist.ImproperUniform(constraints.real, (), (2,)))
    sigma = numpyro.sample("sigma", dist.ImproperUniform(constraints.positive, (), ()))
    with numpyro.plate("obs", x.shape[0]):
        numpyro.sample("y", dist.Normal(beta[0] + beta[1] * x, sigma), obs=y)


def mixture(data):
    """NumPyro's discrete-enumeration mixture: the assignments are summed out."""
    weights = numpyro.sample("weights", dist.Dirichlet(jnp.ones(2)))
    locs = numpyro.sample("locs", dist.Normal(jnp.array([-2.0, 2.0]), 1.0).to_event(1))
    with numpyro.plate("data", data.shape[0]):
        assignment = numpyro.sample(
            "assignment", dist.Categorical(weights), infer={"enumerate": "parallel"}
        )
        numpyro.sample("obs", dist.Normal(locs[assignment], 1.0), obs=data)


# Efron and Morris (1975): hits in the first 45 at-bats of the 1970 season, 18 players.
BASEBALL_HITS = jnp.array([18, 17, 16, 15, 14, 14, 13, 12, 11, 11, 10, 10, 10, 10, 10, 9, 8, 7])
BASEBALL_AT_BATS = jnp.full(18, 45)


def baseball(at_bats, hits=None):
    """NumPyro's baseball example, partially pooled on the logit scale."""
    loc = numpyro.sample("loc", dist.Normal(-1.0, 1.0))
    scale = numpyro.sample("scale", dist.HalfCauchy(1.0))
    with numpyro.plate("num_players", at_bats.shape[0]):
        alpha = numpyro.sample("alpha", dist.Normal(loc, scale))
        numpyro.sample("obs", dist.Binomial(at_bats, logits=alpha), obs=hits)


def funnel(dim=5):
    """Neal's funnel, as NumPyro's funnel example writes it."""
    y = numpyro.sample("y", dist.Normal(0.0, 3.0))
    numpyro.sample("x", dist.Normal(jnp.zeros(dim - 1), jnp.exp(y / 2)).to_event(1))


reparam_funnel = numpyro.handlers.reparam(funnel, config={"x": LocScaleReparam(0)})


def ar2(y):
    """NumPyro's ar2 example with scan, the observations given by condition."""
    alpha_1 = numpyro.sample("alpha_1", dist.Normal(0.0, 1.0))
    alpha_2 = numpyro.sample("alpha_2", dist.Normal(0.0, 1.0))
    const = numpyro.sample("const", dist.Normal(0.0, 1.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))

    def transition(carry, _):
        y_prev, y_prev_prev = carry
        mean = const + alpha_1 * y_prev + alpha_2 * y_prev_prev
        y_t = numpyro.sample("y", dist.Normal(mean, sigma))
        return (y_t, y_prev), None

    with numpyro.handlers.condition(data={"y": y[2:]}):
        scan(transition, (y[1], y[0]), jnp.arange(y.shape[0] - 2))


def regression_data():
    x = jnp.linspace(-1.0, 1.0, 20)
    return x, 0.5 + 1.5 * x + 0.4 * jax.random.normal(jax.random.key(3), (20,))


def ar2_data():
    rng = np.random.default_rng(0)
    y = np.zeros(60)
    for t in range(2, 60):
        y[t] = 0.3 + 0.5 * y[t - 1] - 0.3 * y[t - 2] + 0.5 * rng.normal()
    return jnp.asarray(y, dtype=jnp.float32)


MODELS = {
    "flat_regression": (flat_regression, regression_data, {}),
    "mixture": (mixture, lambda: (jnp.array([-2.1, -1.7, -2.4, 1.8, 2.2, 2.5, 1.9, 2.3]),), {}),
    "baseball": (baseball, lambda: (BASEBALL_AT_BATS, BASEBALL_HITS), {}),
    "reparam_funnel": (reparam_funnel, lambda: (), {}),
    "ar2": (ar2, lambda: (ar2_data(),), {}),
}


def numpyro_reference(name):
    """NumPyro's NUTS posterior of one model: per site, its mean and sd with their MCSEs."""
    model, make_args, kwargs = MODELS[name]
    mcmc = MCMC(
        NUTS(model),
        num_warmup=NUM_WARMUP,
        num_samples=NUM_SAMPLES,
        num_chains=NUM_CHAINS,
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.run(jax.random.key(1), *make_args(), **kwargs)
    sites = {}
    for site, values in mcmc.get_samples(group_by_chain=True).items():
        draws = np.asarray(values, dtype=np.float64)
        sites[site] = {
            "mean": draws.mean(axis=(0, 1)).tolist(),
            "mean_mcse": np.asarray(arviz_stats.mcse(draws, method="mean")).tolist(),
            "sd": draws.std(axis=(0, 1)).tolist(),
            "sd_mcse": np.asarray(arviz_stats.mcse(draws, method="sd")).tolist(),
        }
    divergent = int(np.sum(mcmc.get_extra_fields()["diverging"]))
    return {"sites": sites, "divergent": divergent}


def main():
    references = {}
    # funsor's enumeration broadcasts by rank promotion.
    with jax.numpy_rank_promotion("allow"):
        for name in sorted(MODELS):
            references[name] = numpyro_reference(name)
            print(f"{name:16s} divergent {references[name]['divergent']}")
    settings = {"num_chains": NUM_CHAINS, "num_warmup": NUM_WARMUP, "num_samples": NUM_SAMPLES}
    with open(REFERENCE_FILE, "w") as f:
        json.dump({"numpyro": numpyro.__version__, **settings, "models": references}, f, indent=1)
        f.write("\n")
    print(f"wrote {REFERENCE_FILE}")


if __name__ == "__main__":
    main()
