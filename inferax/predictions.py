"""What a NumPyro model adds to its posterior: pointwise log likelihoods, posterior and prior
predictive draws, and enumerated discrete sites drawn back from their conditional posterior.

Each is one compiled program over every draw: ``vmap`` over the draws of a chain, and
``lax.map`` over chains, so memory holds one chain's intermediate values at a time.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from numpyro import handlers
from numpyro.infer.util import log_likelihood
from numpyro.primitives import Messenger

from inferax.compile_cache import compiled
from inferax.numpyro_bridge import ENUM_EXTRA, NumPyroModel
from inferax.posterior import Posterior
from inferax.target import Target
from inferax.typing import PRNGKey
from inferax.validation import check_count, check_key, site_shapes

LOG_LIKELIHOOD_MEMORY_LIMIT = 2**30
"""Bytes above which ``inferax.sample`` skips the pointwise log likelihood unless asked for
it: it holds one value per draw and observation."""


def pointwise_log_likelihood(target: Target, posterior: Posterior) -> Posterior:
    """The posterior with its ``log_likelihood`` group: the log probability of each
    observation at each draw, per observed site, as ``az.from_numpyro(log_likelihood=True)``
    gives it. ``az.loo`` and ``az.compare`` read it.

    Args:
      target: the ``Target`` the posterior was drawn from, built by ``inferax.from_numpyro``.
      posterior: its draws.

    Returns:
      A copy of ``posterior`` with ``log_likelihood`` of shape ``(chain, draw, *site_shape)``
      per observed site.

    Raises:
      ValueError: the target has no NumPyro model, or its model enumerates discrete sites
        (whose per-observation likelihood NumPyro does not marginalise).

    Examples:
      >>> import jax, jax.numpy as jnp, numpyro, numpyro.distributions as dist, inferax
      >>> def model(y):
      ...     mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
      ...     with numpyro.plate("obs", y.shape[0]):
      ...         numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)
      >>> target = inferax.from_numpyro(model, jnp.array([0.5, 1.5, 1.0]))
      >>> post = inferax.sample(target, inferax.samplers.nuts(), jax.random.key(0),
      ...                       num_chains=2, num_warmup=100, num_samples=50,
      ...                       log_likelihood=False)
      >>> inferax.pointwise_log_likelihood(target, post).log_likelihood["y"].shape
      (2, 50, 3)
    """
    model = _numpyro_model(target, "pointwise_log_likelihood")
    if model.enumerated:
        raise ValueError(
            "pointwise_log_likelihood: the model enumerates the discrete sites "
            f"{list(model.enumerated)}; NumPyro's pointwise log likelihood does not sum them "
            "out, so there is none to give"
        )
    draws = _device_draws(posterior)
    program, _ = compiled(target, _log_likelihood, {"model": model}, draws)
    return dataclasses.replace(posterior, log_likelihood=jax.device_get(program(draws)))


def predictive(target: Target, posterior: Posterior, rng_key: PRNGKey) -> Posterior:
    """The posterior with its ``posterior_predictive`` group: one replicate of every observed
    site per draw, simulated from the model at that draw, for ``az.plot_ppc``.

    Discrete sites the model enumerates are drawn from their prior given the draw, as for
    new observations; ``infer_discrete`` first draws them from their posterior instead.

    Args:
      rng_key: the key for the simulation.
      target: the ``Target`` the posterior was drawn from, built by ``inferax.from_numpyro``.
      posterior: its draws.

    Returns:
      A copy of ``posterior`` with ``posterior_predictive`` of shape ``(chain, draw, ...)``.

    Examples:
      >>> import jax, jax.numpy as jnp, numpyro, numpyro.distributions as dist, inferax
      >>> def model(y):
      ...     mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
      ...     with numpyro.plate("obs", y.shape[0]):
      ...         numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)
      >>> target = inferax.from_numpyro(model, jnp.array([0.5, 1.5, 1.0]))
      >>> post = inferax.sample(target, inferax.samplers.nuts(), jax.random.key(0),
      ...                       num_chains=2, num_warmup=100, num_samples=50)
      >>> inferax.predictive(target, post, jax.random.key(1)).posterior_predictive["y"].shape
      (2, 50, 3)
    """
    model = _numpyro_model(target, "predictive")
    rng_key = check_key(rng_key)
    values = _predictive_program(model)(rng_key, _device_draws(posterior))
    return dataclasses.replace(posterior, posterior_predictive=jax.device_get(values))


def prior_predictive(
    target: Target, posterior: Posterior, rng_key: PRNGKey, *, num_samples: int = 500
) -> Posterior:
    """The posterior with its ``prior`` and ``prior_predictive`` groups: draws of every
    latent and deterministic site from the prior, and of the observed sites given them.

    Args:
      target: the ``Target``, built by ``inferax.from_numpyro``.
      posterior: the posterior to add the groups to.
      rng_key: the key for the simulation.
      num_samples: prior draws, stored as one chain.

    Returns:
      A copy of ``posterior`` with ``prior`` and ``prior_predictive`` of shape
      ``(1, num_samples, ...)``.

    Raises:
      ValueError: a latent site has an improper prior (``dist.ImproperUniform``), which
        has no draws; the message names it.
    """
    model = _numpyro_model(target, "prior_predictive")
    rng_key = check_key(rng_key)
    check_count("num_samples", num_samples, minimum=1)
    if model.improper:
        raise ValueError(
            f"prior_predictive: the latent sites {list(model.improper)} have improper "
            "priors, which have no draws; give them proper priors to simulate from the prior"
        )
    latent, observed = jax.device_get(_prior_program(model, num_samples)(rng_key))
    return dataclasses.replace(
        posterior,
        prior={name: values[None] for name, values in latent.items()},
        prior_predictive={name: values[None] for name, values in observed.items()},
    )


def infer_discrete(
    target: Target, posterior: Posterior, rng_key: PRNGKey, *, temperature: int = 1
) -> Posterior:
    """The posterior with the enumerated discrete sites added to its draws: each drawn from
    its conditional posterior given the continuous sites at that draw and the data, by
    NumPyro's ``infer_discrete`` (forward filtering, backward sampling).

    Args:
      target: the ``Target``, built by ``inferax.from_numpyro`` from a model that
        enumerates discrete sites.
      posterior: its draws.
      rng_key: the key for the discrete draws.
      temperature: 1 draws from the conditional posterior; 0 takes its mode (Viterbi).

    Returns:
      A copy of ``posterior`` whose draws include the discrete sites.

    Raises:
      ValueError: the model enumerates no site, or ``temperature`` is not 0 or 1.
    """
    model = _numpyro_model(target, "infer_discrete")
    rng_key = check_key(rng_key)
    if not model.enumerated:
        raise ValueError("infer_discrete: the model enumerates no discrete site")
    if temperature not in (0, 1):
        raise ValueError(f"infer_discrete: temperature must be 0 or 1, got {temperature}")
    try:
        import numpyro.contrib.funsor  # noqa: F401
    except ImportError as error:
        raise ValueError(f"infer_discrete needs funsor: {ENUM_EXTRA}") from error
    values = _infer_discrete_program(model, temperature)(rng_key, _device_draws(posterior))
    return dataclasses.replace(posterior, draws={**posterior.draws, **jax.device_get(values)})


def log_likelihood_groups(target: Target, posterior: Posterior, compute: bool | None) -> Posterior:
    """What ``inferax.sample`` adds for a NumPyro model: dims from its plates, its constant
    data, and the pointwise log likelihood where ``computes_log_likelihood`` says so (a
    warning gives the size when it is too large to compute unasked)."""
    model = target.model
    if not isinstance(model, NumPyroModel):
        if compute:
            _numpyro_model(target, "log_likelihood=True")
        return posterior
    posterior = dataclasses.replace(
        posterior, dims=dict(model.dims), constant_data=dict(model.constant_data)
    )
    if computes_log_likelihood(target, posterior.num_chains, posterior.num_draws, compute):
        return pointwise_log_likelihood(target, posterior)
    if compute is None and not model.enumerated:
        num_bytes = posterior.num_chains * posterior.num_draws * _bytes_per_draw(target)
        warnings.warn(
            f"the pointwise log likelihood would take {num_bytes / 2**30:.1f} GiB (one value "
            "per draw and observation), so it was not computed; pass log_likelihood=True to "
            "sample, or call inferax.pointwise_log_likelihood on fewer draws",
            stacklevel=4,
        )
    return posterior


def computes_log_likelihood(
    target: Target, num_chains: int, num_draws: int, compute: bool | None
) -> bool:
    """Whether ``inferax.sample(..., log_likelihood=compute)`` computes the pointwise log
    likelihood: for a NumPyro model, when ``compute`` is True, or when it is None, the
    model enumerates no site and the values fit in ``LOG_LIKELIHOOD_MEMORY_LIMIT`` bytes."""
    model = target.model
    if not isinstance(model, NumPyroModel) or compute is False:
        return False
    if compute:
        return True
    num_bytes = num_chains * num_draws * _bytes_per_draw(target)
    return not model.enumerated and num_bytes <= LOG_LIKELIHOOD_MEMORY_LIMIT


def log_likelihood_program(target: Target, num_chains: int, num_draws: int):
    """The pointwise log likelihood's program for ``num_chains`` chains of ``num_draws``
    draws, as ``(jitted, static, *argument shapes)`` for
    ``inferax.compile_cache.compile_ahead``: ``inferax.sample`` compiles it beside the
    run's own programs."""
    draws = {
        name: jax.ShapeDtypeStruct((num_chains, num_draws, *site.shape), site.dtype)
        for name, site in site_shapes(target).items()
    }
    return _log_likelihood, {"model": target.model}, draws


class _Unobserved(Messenger):
    """Turns observed sites into sampled ones, so that a seeded run simulates them."""

    def __init__(self, fn, sites: tuple[str, ...]):
        self.sites = sites
        super().__init__(fn)

    def process_message(self, msg):
        if msg["type"] == "sample" and msg["is_observed"] and msg["name"] in self.sites:
            msg["value"] = None
            msg["is_observed"] = False


def _numpyro_model(target: Target, caller: str) -> NumPyroModel:
    if not isinstance(target, Target):
        raise TypeError(f"{caller}: target must be an inferax.Target, got {type(target).__name__}")
    if not isinstance(target.model, NumPyroModel):
        raise ValueError(
            f"{caller}: the target has no NumPyro model to rerun; build it with "
            "inferax.from_numpyro"
        )
    return target.model


def _device_draws(posterior: Posterior) -> dict[str, jax.Array]:
    if not isinstance(posterior, Posterior):
        raise TypeError(f"posterior must be an inferax.Posterior, got {type(posterior).__name__}")
    return {name: jnp.asarray(values) for name, values in posterior.draws.items()}


def _bytes_per_draw(target: Target) -> int:
    return sum(
        np.asarray(target.observed_data[name]).size * jnp.dtype(jnp.result_type(float)).itemsize
        for name in target.model.observed
    )


def _over_chains(per_draw):
    """``per_draw(key, draw)`` over ``(chain, draw, ...)`` draws: vmap within a chain,
    lax.map across chains."""

    def per_chain(chain_key, chain_draws):
        num_draws = jax.tree.leaves(chain_draws)[0].shape[0]
        return jax.vmap(per_draw)(jax.random.split(chain_key, num_draws), chain_draws)

    def run(rng_key, draws):
        num_chains = jax.tree.leaves(draws)[0].shape[0]
        keys = jax.random.split(rng_key, num_chains)
        return jax.lax.map(lambda xs: per_chain(*xs), (keys, draws))

    return jax.jit(run)


@functools.partial(jax.jit, static_argnames=("model",))
def _log_likelihood(draws, model: NumPyroModel):
    """The pointwise log likelihood of ``(chain, draw, ...)`` draws, per observed site."""

    def per_draw(draw):
        # NumPyro's own; it also returns numpyro.factor terms, which are not observations.
        values = log_likelihood(model.model, draw, *model.args, batch_ndims=0, **model.kwargs)
        return {name: values[name] for name in model.observed}

    return jax.lax.map(jax.vmap(per_draw), draws)


def _predictive_program(model: NumPyroModel):
    def per_draw(rng_key, draw):
        simulated = handlers.seed(
            _Unobserved(handlers.substitute(model.model, data=draw), model.observed), rng_key
        )
        trace = handlers.trace(simulated).get_trace(*model.args, **model.kwargs)
        return {name: trace[name]["value"] for name in model.observed}

    return _over_chains(per_draw)


def _prior_program(model: NumPyroModel, num_samples: int):
    def per_draw(rng_key):
        simulated = handlers.seed(_Unobserved(model.model, model.observed), rng_key)
        trace = handlers.trace(simulated).get_trace(*model.args, **model.kwargs)
        latent = {
            name: site["value"]
            for name, site in trace.items()
            if site["type"] in ("sample", "deterministic")
            and name not in model.observed
            and not site.get("is_observed", False)
        }
        return latent, {name: trace[name]["value"] for name in model.observed}

    return jax.jit(lambda rng_key: jax.vmap(per_draw)(jax.random.split(rng_key, num_samples)))


def _infer_discrete_program(model: NumPyroModel, temperature: int):
    from numpyro.contrib.funsor import config_enumerate
    from numpyro.contrib.funsor import infer_discrete as numpyro_infer_discrete

    def per_draw(rng_key, draw):
        conditioned = handlers.condition(model.model, data=draw)
        discrete = numpyro_infer_discrete(
            config_enumerate(conditioned),
            first_available_dim=-1 - model.max_plate_nesting,
            temperature=temperature,
            rng_key=rng_key,
        )
        trace = handlers.trace(discrete).get_trace(*model.args, **model.kwargs)
        return {name: trace[name]["value"] for name in model.enumerated}

    return _over_chains(per_draw)


__all__ = [
    "LOG_LIKELIHOOD_MEMORY_LIMIT",
    "infer_discrete",
    "pointwise_log_likelihood",
    "predictive",
    "prior_predictive",
]
