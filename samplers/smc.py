"""Adaptive tempered sequential Monte Carlo, with an estimate of the log evidence.

Particles start from the prior and are carried through the tempered densities
``p_b(x) ∝ prior(x) L(x)^b`` from ``b = 0`` to ``b = 1``. Each stage picks the next ``b`` by
bisection so that the effective sample size of the incremental weights ``L(x)^(b' - b)``
stays at a fraction of the particles, resamples, and moves each particle with a few steps
of MALA, HMC or NUTS that leave ``p_b`` invariant. The mean incremental weights multiply
to an unbiased estimate of the evidence ``Z = ∫ prior(x) L(x) dx``. The stage kernel is
blackjax's ``adaptive_tempered`` SMC; this module supplies the prior/likelihood split of a
``Target``, prior draws, the tuning of the move between stages from the particle cloud, and
independent runs whose spread gives the estimate's standard error.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import blackjax
import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
from blackjax.smc import adaptive_tempered, resampling
from numpyro import handlers
from numpyro.distributions import Distribution
from numpyro.infer.util import potential_energy, unconstrain_fn

from inferax.numpyro_bridge import NumPyroModel
from inferax.posterior import Posterior
from inferax.samplers.hmc import hmc, nuts
from inferax.samplers.langevin import mala
from inferax.target import Target
from inferax.typing import ArrayTree, PRNGKey
from inferax.validation import check_count, check_key

RESAMPLING = {
    "systematic": resampling.systematic,
    "stratified": resampling.stratified,
    "multinomial": resampling.multinomial,
    "residual": resampling.residual,
}
"""blackjax's resampling schemes by name."""

_VARIANCE_FLOOR = 1e-10


class TemperingSplit(NamedTuple):
    """What tempering needs from a target: the prior's log density, the log likelihood,
    and ``sample_prior(rng_key, n)`` for ``n`` prior draws (a pytree with a leading axis),
    all in the target's unconstrained space."""

    logprior_fn: Callable[[ArrayTree], jax.Array]
    loglikelihood_fn: Callable[[ArrayTree], jax.Array]
    sample_prior: Callable[[PRNGKey, int], ArrayTree]


def tempering_split(target: Target, prior: Any = None) -> TemperingSplit:
    """The prior/likelihood split that tempered SMC runs on.

    A NumPyro target (``inferax.from_numpyro``) gives its own: the prior is the model with
    its observed sites hidden, drawn by running the model and mapped to unconstrained space;
    with ``data=`` the target's own ``log_prior`` and ``log_likelihood`` are used. A plain
    log density needs ``prior``; its likelihood is then ``logdensity - log prior``.

    Args:
      target: the ``Target``.
      prior: for a target that is not a NumPyro model: a NumPyro ``Distribution`` whose draws
        have the shape of ``target.init`` (a single array), or a pair
        ``(sample_fn, log_prob_fn)`` with ``sample_fn(rng_key) -> position`` and
        ``log_prob_fn(position) -> scalar``. Its support must cover the target's.

    Returns:
      A ``TemperingSplit``.
    """
    if target.nonsmooth is not None:
        raise ValueError("target: tempered_smc needs a smooth target; this one has nonsmooth")
    model = target.model
    if isinstance(model, NumPyroModel):
        if prior is not None:
            raise ValueError("prior: a NumPyro target brings its own prior; drop prior=")
        return _numpyro_split(target, model)
    if prior is None:
        raise ValueError(
            "prior: a plain log density has no prior to start from; pass prior= a NumPyro "
            "distribution or a pair (sample_fn, log_prob_fn)"
        )
    sample_fn, log_prob_fn = _prior_functions(target, prior)
    if target.log_likelihood is not None:
        logprior_fn = target.log_prior

        def loglikelihood_fn(position):
            return target.log_likelihood(position, target.data)
    else:
        logprior_fn = log_prob_fn

        def loglikelihood_fn(position):
            return target.logdensity(position) - log_prob_fn(position)

    def sample_prior(rng_key, num):
        return jax.vmap(sample_fn)(jax.random.split(rng_key, num))

    return TemperingSplit(logprior_fn, loglikelihood_fn, sample_prior)


def _prior_functions(target: Target, prior):
    if isinstance(prior, Distribution):
        init = target.init
        if not isinstance(init, jax.Array | np.ndarray):
            raise TypeError(
                "prior: a Distribution prior needs a target whose position is one array; "
                "pass (sample_fn, log_prob_fn) for a pytree position"
            )
        shape = tuple(prior.batch_shape) + tuple(prior.event_shape)
        if shape != tuple(jnp.shape(init)):
            raise ValueError(
                f"prior: draws have shape {shape}, the target's position {jnp.shape(init)}"
            )
        dtype = jnp.result_type(init)
        return (
            lambda key: jnp.asarray(prior.sample(key), dtype=dtype),
            lambda x: jnp.sum(prior.log_prob(x)),
        )
    if isinstance(prior, tuple) and len(prior) == 2 and all(map(callable, prior)):
        return prior
    raise TypeError(
        "prior: expected a NumPyro Distribution or a pair (sample_fn, log_prob_fn), "
        f"got {type(prior).__name__}"
    )


def _numpyro_split(target: Target, model: NumPyroModel) -> TemperingSplit:
    if model.enumerated or model.improper:
        raise ValueError(
            "target: tempered_smc starts from prior draws; the sites "
            f"{list(model.enumerated + model.improper)} are enumerated or improper"
        )
    latent_only = handlers.block(model.model, hide_fn=lambda site: site.get("is_observed", False))
    sites = tuple(target.init)

    def sample_one(rng_key):
        trace = handlers.trace(handlers.seed(latent_only, rng_key)).get_trace(
            *model.args, **model.kwargs
        )
        values = {name: trace[name]["value"] for name in sites}
        return unconstrain_fn(model.model, model.args, model.kwargs, values)

    def sample_prior(rng_key, num):
        return jax.vmap(sample_one)(jax.random.split(rng_key, num))

    if target.log_likelihood is not None:
        logprior_fn = target.log_prior

        def loglikelihood_fn(position):
            return target.log_likelihood(position, target.data)
    else:

        def logprior_fn(position):
            return -potential_energy(latent_only, model.args, model.kwargs, position)

        def loglikelihood_fn(position):
            return target.logdensity(position) - logprior_fn(position)

    return TemperingSplit(logprior_fn, loglikelihood_fn, sample_prior)


class _Move(NamedTuple):
    step_fn: Callable
    init_fn: Callable
    uses_mass_matrix: bool
    initial_step_size: float
    target_acceptance_rate: float


def _move_of(move) -> _Move:
    if isinstance(move, mala):
        return _Move(
            blackjax.mala.build_kernel(), blackjax.mala.init, False, move.step_size, 0.574
        )
    if isinstance(move, hmc):
        kernel = blackjax.hmc.build_kernel(divergence_threshold=move.divergence_threshold)
        steps = int(move.num_integration_steps)

        def hmc_step(rng_key, state, logdensity_fn, step_size, inverse_mass_matrix):
            return kernel(rng_key, state, logdensity_fn, step_size, inverse_mass_matrix, steps)

        return _Move(
            hmc_step, blackjax.hmc.init, True, move.initial_step_size, move.target_acceptance_rate
        )
    if isinstance(move, nuts):
        kernel = blackjax.nuts.build_kernel(divergence_threshold=move.divergence_threshold)
        depth = move.max_num_doublings

        def nuts_step(rng_key, state, logdensity_fn, step_size, inverse_mass_matrix):
            return kernel(rng_key, state, logdensity_fn, step_size, inverse_mass_matrix, depth)

        return _Move(
            nuts_step,
            blackjax.nuts.init,
            True,
            move.initial_step_size,
            move.target_acceptance_rate,
        )
    raise TypeError(
        "move: expected inferax.samplers.mala, hmc or nuts, got "
        f"{type(move).__name__}; the move is tuned from the particle cloud between stages"
    )


class _Carry(NamedTuple):
    state: Any
    step_size: jax.Array
    inverse_mass_matrix: jax.Array
    stage: jax.Array
    log_evidence: jax.Array
    history: dict[str, jax.Array]


def _weighted_variance(particles, weights):
    rows = jax.vmap(lambda x: jax.flatten_util.ravel_pytree(x)[0])(particles)
    mean = weights @ rows
    variance = weights @ (rows - mean[None]) ** 2
    return jnp.maximum(variance, _VARIANCE_FLOOR)


def _one_run(split: TemperingSplit, move: _Move, settings: dict):
    """The whole SMC run from one key: prior draws, stages until ``b = 1``, and a last
    resampling so that the particles are equally weighted draws of the posterior."""
    num_particles = settings["num_particles"]
    max_stages = settings["max_stages"]
    resample_fn = RESAMPLING[settings["resampling"]]
    kernel = adaptive_tempered.build_kernel(
        split.logprior_fn,
        split.loglikelihood_fn,
        move.step_fn,
        move.init_fn,
        resample_fn,
        settings["target_ess"],
    )
    batched_loglikelihood = jax.vmap(split.loglikelihood_fn)

    def parameters(carry: _Carry) -> dict:
        params = {"step_size": carry.step_size[None]}
        if move.uses_mass_matrix:
            params["inverse_mass_matrix"] = carry.inverse_mass_matrix[None]
        return params

    def stage(carry: _Carry, rng_key) -> _Carry:
        state, info = kernel(rng_key, carry.state, settings["num_mcmc_steps"], parameters(carry))
        acceptance = jnp.mean(info.update_info.acceptance_rate)
        nonfinite = jnp.sum(~jnp.isfinite(batched_loglikelihood(state.particles)))
        record = {
            "temperature": state.tempering_param,
            "ess": 1.0 / jnp.sum(state.weights**2),
            "acceptance_rate": acceptance,
            "step_size": carry.step_size,
            "log_evidence_increment": info.log_likelihood_increment,
            "nonfinite": nonfinite.astype(carry.step_size.dtype),
        }
        history = {
            name: values.at[carry.stage].set(record[name].astype(values.dtype))
            for name, values in carry.history.items()
        }
        # The move's step follows its acceptance (blackjax's
        # update_scale_from_acceptance_rate, on one shared scale); the mass matrix follows
        # the weighted cloud.
        step_size = carry.step_size * jnp.exp(acceptance - move.target_acceptance_rate)
        return _Carry(
            state=state,
            step_size=jnp.where(jnp.isfinite(step_size), step_size, carry.step_size),
            inverse_mass_matrix=_weighted_variance(state.particles, state.weights),
            stage=carry.stage + 1,
            log_evidence=carry.log_evidence + info.log_likelihood_increment,
            history=history,
        )

    def run(rng_key):
        prior_key, stages_key, final_key = jax.random.split(rng_key, 3)
        particles = split.sample_prior(prior_key, num_particles)
        state = adaptive_tempered.init(particles)
        dtype = jnp.result_type(*jax.tree.leaves(particles))
        state = state._replace(
            weights=state.weights.astype(dtype), tempering_param=jnp.asarray(0.0, dtype)
        )
        uniform = jnp.full((num_particles,), 1.0 / num_particles, dtype)
        names = (
            "temperature",
            "ess",
            "acceptance_rate",
            "step_size",
            "log_evidence_increment",
            "nonfinite",
        )
        carry = _Carry(
            state=state,
            step_size=jnp.asarray(move.initial_step_size, dtype),
            inverse_mass_matrix=_weighted_variance(particles, uniform),
            stage=jnp.asarray(0),
            log_evidence=jnp.asarray(0.0, dtype),
            history={name: jnp.full((max_stages,), jnp.nan, dtype) for name in names},
        )
        carry = jax.lax.while_loop(
            lambda c: (c.state.tempering_param < 1.0) & (c.stage < max_stages),
            lambda c: stage(c, jax.random.fold_in(stages_key, c.stage)),
            carry,
        )
        index = resample_fn(final_key, carry.state.weights, num_particles)
        final = jax.tree.map(lambda leaf: leaf[index], carry.state.particles)
        draws = jax.vmap(settings["constrain"])(final)
        lp = jax.vmap(split.logprior_fn)(final) + batched_loglikelihood(final)
        return (
            draws,
            lp,
            carry.log_evidence,
            carry.stage,
            carry.state.tempering_param,
            carry.history,
        )

    return run


def tempered_smc(
    target: Target,
    rng_key: PRNGKey,
    *,
    num_particles: int = 1000,
    num_runs: int = 4,
    move=None,
    num_mcmc_steps: int = 10,
    target_ess: float = 0.5,
    resampling: str = "systematic",
    prior: Any = None,
    max_stages: int = 200,
) -> Posterior:
    """Adaptive tempered SMC from the prior to the posterior, with the log evidence.

    Each of ``num_runs`` independent runs draws ``num_particles`` from the prior and moves
    them through ``prior(x) L(x)^b``, each stage raising ``b`` by bisection so that the
    effective sample size of the incremental weights is ``target_ess * num_particles``,
    resampling (systematic by default), and applying ``num_mcmc_steps`` steps of ``move``.
    Between stages the move is tuned from the cloud: its inverse mass matrix is the particles'
    weighted variance, and its step size grows or shrinks with the last stage's acceptance
    rate. The log evidence of a run is the sum over stages of the log mean incremental
    weight; its spread over the runs gives the Monte Carlo standard error. All runs are one
    compiled program (a ``vmap`` over runs).

    Args:
      target: the ``Target``, with a prior/likelihood split: a NumPyro model
        (``inferax.from_numpyro``, with or without ``data=``), or a plain log density with
        ``prior``.
      rng_key: the key, such as ``jax.random.key(0)``.
      num_particles: particles per run.
      num_runs: independent runs; each is one chain of the result.
      move: the MCMC move, ``inferax.samplers.hmc(...)`` (default, 10 leapfrog steps),
        ``nuts()`` or ``mala(step_size=...)``; its initial step size starts the tuning.
      num_mcmc_steps: move steps per particle per stage.
      target_ess: the fraction of particles the incremental weights' ESS is held at, in
        (0, 1).
      resampling: ``"systematic"``, ``"stratified"``, ``"multinomial"`` or ``"residual"``.
      prior: the prior of a plain log density (see ``tempering_split``).
      max_stages: the most stages a run may take; a run that does not reach ``b = 1`` within
        them is reported in a warning and its log evidence is NaN.

    Returns:
      A ``Posterior`` whose chains are the runs and whose draws are the final, equally
      weighted particles; ``log_evidence`` and ``log_evidence_mcse`` hold the estimate, and
      ``evidence_stats`` the per-run log evidence and, per stage, the temperature, ESS,
      acceptance rate, step size, and the count of particles with a non-finite log
      likelihood.

    Examples:
      >>> import jax, jax.numpy as jnp, numpyro.distributions as dist, inferax
      >>> target = inferax.Target.from_logdensity(
      ...     lambda x: -0.5 * jnp.sum((x - 1.0) ** 2), jnp.zeros(2))
      >>> post = inferax.samplers.tempered_smc(
      ...     target, jax.random.key(0), num_particles=200, num_runs=2,
      ...     prior=dist.Normal(jnp.zeros(2), 3.0))
      >>> post.draws["x"].shape
      (2, 200, 2)

    References:
      Del Moral, Doucet, Jasra, "Sequential Monte Carlo samplers", JRSS B 2006.
      Jasra, Stephens, Doucet, Tsagaris, "Inference for Lévy-driven stochastic volatility
      models via adaptive sequential Monte Carlo", Scand. J. Stat. 2011.
      Buchholz, Chopin, Jacob, "Adaptive tuning of Hamiltonian Monte Carlo within
      sequential Monte Carlo", Bayesian Analysis 2021.
    """
    if not isinstance(target, Target):
        raise TypeError(f"target must be an inferax.Target, got {type(target).__name__}")
    rng_key = check_key(rng_key)
    check_count("num_particles", num_particles, minimum=2)
    check_count("num_runs", num_runs, minimum=1)
    check_count("num_mcmc_steps", num_mcmc_steps, minimum=1)
    check_count("max_stages", max_stages, minimum=1)
    if isinstance(target_ess, bool) or not isinstance(target_ess, int | float):
        raise TypeError(f"target_ess must be a number in (0, 1), got {target_ess!r}")
    if not 0.0 < target_ess < 1.0:
        raise ValueError(f"target_ess must lie in (0, 1), got {target_ess}")
    if resampling not in RESAMPLING:
        raise ValueError(f"resampling must be one of {sorted(RESAMPLING)}, got {resampling!r}")
    move = hmc(num_integration_steps=10) if move is None else move
    split = tempering_split(target, prior)
    settings = {
        "num_particles": num_particles,
        "num_mcmc_steps": num_mcmc_steps,
        "target_ess": float(target_ess),
        "resampling": resampling,
        "max_stages": max_stages,
        "constrain": target.constrain,
    }
    run = jax.jit(jax.vmap(_one_run(split, _move_of(move), settings)))
    keys = jax.random.split(rng_key, num_runs)
    start = time.perf_counter()
    program = run.lower(keys).compile()
    compile_seconds = time.perf_counter() - start
    start = time.perf_counter()
    draws, lp, log_evidence, stages, reached, history = jax.block_until_ready(program(keys))
    sampling_seconds = time.perf_counter() - start
    return _posterior(
        target,
        move,
        draws,
        lp,
        np.asarray(log_evidence),
        np.asarray(stages),
        np.asarray(reached),
        jax.device_get(history),
        {"compile": compile_seconds, "sampling": sampling_seconds},
    )


def _posterior(target, move, draws, lp, log_evidence, stages, reached, history, timing):
    unfinished = np.flatnonzero(reached < 1.0)
    if unfinished.size:
        warnings.warn(
            f"tempered_smc: runs {unfinished.tolist()} did not reach temperature 1 within "
            "max_stages; their log evidence is NaN. Raise max_stages or target_ess.",
            stacklevel=3,
        )
        log_evidence = log_evidence.copy()
        log_evidence[unfinished] = np.nan
    nonfinite = np.nansum(history["nonfinite"])
    if nonfinite:
        warnings.warn(
            f"tempered_smc: {int(nonfinite)} particle-stages had a non-finite log likelihood",
            stacklevel=3,
        )
    used = max(int(stages.max()), 1)
    evidence_stats = {name: values[:, :used] for name, values in history.items()}
    evidence_stats["log_evidence"] = log_evidence
    evidence_stats["num_stages"] = stages
    model = target.model if isinstance(target.model, NumPyroModel) else None
    return Posterior(
        draws={name: np.asarray(values) for name, values in draws.items()},
        stats={"lp": np.asarray(lp)},
        timing=timing,
        observed_data=dict(target.observed_data),
        sampler=f"tempered_smc({move!r})",
        dims=dict(model.dims) if model else {},
        constant_data=dict(model.constant_data) if model else {},
        evidence_stats=evidence_stats,
    )
