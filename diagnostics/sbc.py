"""Simulation-based calibration: does a sampler (or a variational family) give calibrated
posteriors on a model at all?

Draw parameters from the prior, simulate data from the model, fit each simulated data set,
and rank each true parameter among the posterior draws. A fit that targets the right
posterior gives ranks uniform on ``0..L``; any other shape is a bug in the sampler, in its
tuning, or in the model used for fitting (Talts et al. 2018). A chunk of simulations is
one compiled program: with a sampler, a ``vmap`` of independent fits (each with its own
chains and warmup, through the kernel protocol of ``inferax.kernel``); with a variational
family, one ``inferax.variational.fit`` of a target that stacks the simulations side by
side. Chunks are saved to a run directory as they finish, through ``inferax.checkpoint``'s
run store (atomic writes, checksums, a manifest), so an interrupted check resumes where it
stopped.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Callable, Sequence
from typing import Any, final

import jax
import jax.numpy as jnp
import numpy as np
from numpyro import handlers
from numpyro.infer import Predictive
from numpyro.infer.util import potential_energy

from inferax.checkpoint import MANIFEST, CheckpointError, CheckpointStore
from inferax.diagnostics.sbc_result import SBCResult, rank_uniformity_p_values
from inferax.fingerprint import target_fingerprint
from inferax.kernel import AbstractKernel
from inferax.numpyro_bridge import from_numpyro
from inferax.progress import ProgressBar, progress_enabled
from inferax.target import Target
from inferax.typing import PRNGKey
from inferax.validation import check_count, check_key

SBC_PHASE = "sbc"
"""The phase name of an SBC run's saved states."""


def sbc(
    model: Callable,
    sampler_or_family,
    rng_key: PRNGKey,
    num_simulations: int,
    *,
    observed: Sequence[str],
    model_args: tuple = (),
    model_kwargs: dict[str, Any] | None = None,
    fit_model: Callable | None = None,
    var_names: Sequence[str] | None = None,
    num_chains: int = 1,
    num_warmup: int = 200,
    num_samples: int = 100,
    thinning: int = 1,
    fit_kwargs: dict[str, Any] | None = None,
    chunk_size: int | None = None,
    num_bins: int | None = None,
    run_dir: str | pathlib.Path | None = None,
    progress: bool | None = None,
) -> SBCResult:
    """Simulation-based calibration of a sampler or variational family on a NumPyro model.

    Each simulation draws the latent sites from the prior and the ``observed`` sites given
    them (NumPyro's ``Predictive``), conditions the model on the simulated observations,
    fits it, and ranks each true latent value among the ``L`` posterior draws. Under a
    calibrated fit every rank is uniform on ``0..L``; each scalar component gets a
    chi-square test over ``num_bins`` bins. Draws should be close to independent, as Talts
    et al. prescribe: raise ``thinning`` for a sampler whose draws are autocorrelated.

    A sampler fits every simulation independently, with its own ``num_chains`` chains and
    its own warmup; a chunk of ``chunk_size`` simulations is one compiled program (a
    ``vmap`` over simulations and chains). Chains start uniformly within 2 of the model's
    example position in unconstrained space, as ``inferax.sample``'s do. A variational
    family is fitted once per chunk to a target that stacks the chunk's simulations side by
    side (the sum of their log densities): a mean-field family then fits each one
    independently; a full-rank one would couple them.

    Args:
      model: the NumPyro model. Its ``observed`` sites are drawn when ``model_args`` and
        ``model_kwargs`` leave them unobserved (``y=None``).
      sampler_or_family: a kernel from ``inferax.samplers`` (run with ``inferax.sample``) or
        a family from ``inferax.variational`` (fitted with ``inferax.variational.fit``;
        ``fit_kwargs`` must give ``optimizer`` and ``num_steps``).
      rng_key: the key, such as ``jax.random.key(0)``.
      num_simulations: simulated data sets.
      observed: the names of the observed sites.
      model_args: the model's positional arguments.
      model_kwargs: the model's keyword arguments.
      fit_model: the model fitted to each simulation, by default ``model``; a different one
        (misspecified on purpose) shows what SBC catches.
      var_names: the latent sites to rank; by default every latent sample site.
      num_chains: chains per simulation (sampler).
      num_warmup: warmup steps per chain (sampler).
      num_samples: draws kept per chain (sampler), or draws from the fitted family.
      thinning: steps per kept draw (sampler).
      fit_kwargs: keyword arguments for ``variational.fit`` (a family only).
      chunk_size: simulations fitted together; by default all of them.
      num_bins: bins of the chi-square test; by default ``min(20, L + 1, S // 5)``.
      run_dir: a directory to save finished chunks in; a call with the same directory and
        arguments skips the chunks saved there, and one with other arguments is refused.
      progress: a progress bar over simulations (``None``: on an interactive terminal).

    Returns:
      An ``SBCResult``: ranks, p-values, ``rejects(alpha)``, ``to_datatree()``, ``plot()``.

    Examples:
      >>> import jax, jax.numpy as jnp, numpyro, numpyro.distributions as dist, inferax
      >>> def model(y=None):
      ...     mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
      ...     numpyro.sample("y", dist.Normal(mu, 1.0).expand([5]).to_event(1), obs=y)
      >>> result = inferax.diagnostics.sbc(
      ...     model, inferax.samplers.mala(step_size=0.3), jax.random.key(0), 40,
      ...     observed=["y"], num_warmup=100, num_samples=50, progress=False)
      >>> result.ranks["mu"].shape
      (40,)

    References:
      Talts, Betancourt, Simpson, Vehtari, Gelman, "Validating Bayesian inference algorithms
      with simulation-based calibration", arXiv:1804.06788, 2018.
      Säilynoja, Bürkner, Vehtari, "Graphical test for discrete uniformity and its
      applications in goodness-of-fit evaluation and multiple sample comparison",
      Statistics and Computing 2022.
    """
    rng_key = check_key(rng_key)
    check_count("num_simulations", num_simulations, minimum=2)
    for name, value in (("num_chains", num_chains), ("num_samples", num_samples)):
        check_count(name, value, minimum=1)
    check_count("num_warmup", num_warmup, minimum=0)
    check_count("thinning", thinning, minimum=1)
    chunk_size = num_simulations if chunk_size is None else chunk_size
    check_count("chunk_size", chunk_size, minimum=1)
    if not callable(model):
        raise TypeError(f"model must be a NumPyro model function, got {type(model).__name__}")
    if isinstance(observed, str):
        observed = (observed,)
    observed = tuple(observed)
    if not observed:
        raise ValueError("observed: name at least one observed site")
    model_kwargs = dict(model_kwargs or {})
    fit_kwargs = dict(fit_kwargs or {})
    is_kernel = isinstance(sampler_or_family, AbstractKernel)
    if is_kernel and fit_kwargs:
        raise ValueError(
            "fit_kwargs: only for a variational family; a sampler is set by num_chains, "
            "num_warmup, num_samples and thinning"
        )
    if not is_kernel and not {"optimizer", "num_steps"} <= set(fit_kwargs):
        raise ValueError(
            "fit_kwargs: a variational family is fitted with inferax.variational.fit, which "
            "needs optimizer and num_steps; pass them in fit_kwargs (or pass a kernel from "
            "inferax.samplers)"
        )
    num_draws = num_chains * num_samples
    if num_bins is None:
        num_bins = max(2, min(20, num_draws + 1, num_simulations // 5))
    check_count("num_bins", num_bins, minimum=2)
    if num_bins > num_draws + 1:
        raise ValueError(f"num_bins must be at most L + 1 = {num_draws + 1}, got {num_bins}")

    latent, sites = _latent_sites(model, model_args, model_kwargs, observed)
    missing = [name for name in observed if name not in sites]
    if missing:
        raise ValueError(f"observed: the model has no sites {missing}")
    var_names = tuple(latent if var_names is None else var_names)
    unknown = [name for name in var_names if name not in latent]
    if unknown:
        raise ValueError(f"var_names: {unknown} are not latent sample sites ({list(latent)})")
    simulate_key, fit_key = jax.random.split(rng_key)
    simulated = Predictive(model, num_samples=num_simulations)(
        simulate_key, *model_args, **model_kwargs
    )
    observations = {name: jnp.asarray(simulated[name]) for name in observed}
    truth = {name: np.asarray(simulated[name]) for name in var_names}
    simulations = _Simulations(fit_model or model, model_args, model_kwargs, observations)
    settings = {
        "num_chains": num_chains,
        "num_warmup": num_warmup,
        "num_samples": num_samples,
        "thinning": thinning,
    }
    program = None
    if is_kernel:
        sampler_or_family.check_target(
            simulations.single({name: values[0] for name, values in observations.items()})
        )
        program = _sampler_program(simulations, sampler_or_family, settings)

    starts = list(range(0, num_simulations, chunk_size))
    manifest = {
        "settings": {
            "kind": "sbc",
            "num_simulations": num_simulations,
            "chunk_size": chunk_size,
            **settings,
            "var_names": list(var_names),
            "fit_kwargs": repr(sorted(fit_kwargs.items())),
        },
        "key": [int(v) for v in np.asarray(jax.random.key_data(rng_key)).ravel()],
        "kernel": repr(sampler_or_family),
        "fingerprint": None,
        "x64": bool(jax.config.jax_enable_x64),
    }
    store, draw_files, chunks_ranks, chunks_stats = None, [], [], []
    if run_dir is not None:
        manifest["fingerprint"] = target_fingerprint(
            simulations.stacked(0, min(2, num_simulations))
        )
        store, draw_files, chunks_ranks, chunks_stats = _open_run(pathlib.Path(run_dir), manifest)
    bar = ProgressBar(num_simulations, progress_enabled(progress), "sbc")
    bar.advance(min(num_simulations, len(chunks_ranks) * chunk_size))
    try:
        for index in range(len(chunks_ranks), len(starts)):
            first = starts[index]
            last = min(first + chunk_size, num_simulations)
            draws, stats = _fit_chunk(
                program,
                simulations,
                sampler_or_family,
                jax.random.fold_in(fit_key, index),
                first,
                last,
                chunk_size,
                settings,
                fit_kwargs,
            )
            ranks = {name: _ranks(draws[name], truth[name][first:last]) for name in var_names}
            chunks_ranks.append(ranks)
            chunks_stats.append(stats)
            if store is not None:
                draw_files = store.save(
                    SBC_PHASE,
                    index + 1,
                    [],
                    {},
                    draw_files,
                    new_draws=(first, last, _as_chain(ranks), _as_chain(stats)),
                )
            bar.advance(last - first)
    finally:
        bar.close()
        if store is not None:
            store.release()
    ranks = {name: np.concatenate([c[name] for c in chunks_ranks]) for name in var_names}
    fit_stats = {name: np.concatenate([c[name] for c in chunks_stats]) for name in chunks_stats[0]}
    return SBCResult(
        ranks=ranks,
        true_values=truth,
        num_draws=num_draws,
        p_values={
            name: rank_uniformity_p_values(values, num_draws, num_bins)
            for name, values in ranks.items()
        },
        num_bins=num_bins,
        fit_stats=fit_stats,
    )


def _latent_sites(model, model_args, model_kwargs, observed):
    """The latent sample sites (the observed ones left out), and every site's name."""
    trace = handlers.trace(handlers.seed(model, jax.random.key(0))).get_trace(
        *model_args, **model_kwargs
    )
    latent = tuple(
        name
        for name, site in trace.items()
        if site["type"] == "sample" and not site["is_observed"] and name not in observed
    )
    return latent, tuple(trace)


@final
class _Simulations:
    """The fitted model's log density as pieces that take one simulation's observations as
    data: ``single(observation)`` is one simulation's ``Target`` (built inside a ``vmap``
    over simulations), ``stacked(first, last)`` the simulations ``first..last`` side by side
    as one ``Target``, the sum of their independent log densities."""

    def __init__(self, model, model_args, model_kwargs, observations: dict):
        self.observations = observations
        first = {name: values[0] for name, values in observations.items()}
        one = from_numpyro(handlers.condition(model, data=first), *model_args, **model_kwargs)
        self.init = one.init
        self.constrain = one.constrain
        self.stacked_constrain = jax.vmap(one.constrain)
        names = tuple(observations)
        # Observed sites are given a value (so that nothing is drawn) and hidden.
        prior_part = handlers.block(
            handlers.condition(model, data=first), hide_fn=lambda site: site.get("name") in names
        )

        def log_prior(position):
            return -potential_energy(prior_part, model_args, model_kwargs, position)

        def log_joint(position, observation):
            conditioned = handlers.condition(model, data=observation)
            return -potential_energy(conditioned, model_args, model_kwargs, position)

        def single_joint(position, rows):
            # One simulation's observations are one row of data.
            return log_joint(position, jax.tree.map(lambda leaf: leaf[0], rows))

        def stacked_prior(positions):
            return jnp.sum(jax.vmap(log_prior)(positions))

        def stacked_likelihood(positions, rows):
            count = jax.tree.leaves(positions)[0].shape[0]
            if jax.tree.leaves(rows)[0].shape[0] != count:
                raise ValueError(
                    "sbc: the stacked simulations' target takes all of its data at once, "
                    "one row per simulation; it cannot be minibatched"
                )
            values = jax.vmap(log_joint)(positions, rows) - jax.vmap(log_prior)(positions)
            return jnp.sum(values)

        self.log_prior = log_prior
        self.single_joint = single_joint
        self.stacked_prior = stacked_prior
        self.stacked_likelihood = stacked_likelihood

    def single(self, observation: dict) -> Target:
        # Only the sum matters for fitting: the joint is traced once, as the likelihood
        # term, rather than prior and joint apart.
        return Target(
            log_prior=_zero,
            init=self.init,
            log_likelihood=self.single_joint,
            data=jax.tree.map(lambda leaf: leaf[None], observation),
            constrain=self.constrain,
        )

    def stacked(self, first: int, last: int) -> Target:
        count = last - first
        return Target(
            log_prior=self.stacked_prior,
            init=jax.tree.map(
                lambda leaf: jnp.broadcast_to(leaf, (count, *leaf.shape)), self.init
            ),
            log_likelihood=self.stacked_likelihood,
            data={name: values[first:last] for name, values in self.observations.items()},
            constrain=self.stacked_constrain,
        )


def _zero(position):
    return jnp.zeros((), jnp.result_type(*jax.tree.leaves(position)))


def _sampler_program(simulations: _Simulations, kernel, settings: dict):
    """One compiled program that fits a chunk of simulations, each independently with
    ``num_chains`` chains: the kernel's own warmup (as ``AbstractKernel.warmup`` runs it), then
    ``num_samples`` draws, every ``thinning``-th step. Chains start uniformly within 2 of
    the target's example position in every unconstrained coordinate, as
    ``inferax.sample``'s do."""
    num_chains, num_warmup = settings["num_chains"], settings["num_warmup"]
    num_samples, thinning = settings["num_samples"], settings["thinning"]
    # The schedule is made outside the compiled program: some kernels build it with NumPy.
    schedule = jnp.asarray(kernel.warmup_schedule(num_warmup))

    def chain(target, rng_key):
        init_key, warmup_key, draw_key = jax.random.split(rng_key, 3)
        leaves, treedef = jax.tree.flatten(target.init)
        keys = jax.random.split(init_key, len(leaves))
        position = treedef.unflatten(
            [
                leaf + jax.random.uniform(key, jnp.shape(leaf), jnp.result_type(leaf), -2, 2)
                for leaf, key in zip(leaves, keys, strict=True)
            ]
        )
        warmup = kernel.warmup_algorithm(target)

        def warmup_step(warmup_state, xs):
            step_index, entry = xs
            key = jax.random.fold_in(warmup_key, step_index)
            return warmup.step(key, warmup_state, entry), None

        warmup_state, _ = jax.lax.scan(
            warmup_step, warmup.init(position), (jnp.arange(num_warmup), schedule)
        )
        state, tuned = warmup.final(warmup_state)
        algorithm = kernel.build(target, **tuned)

        def one_step(state, step_index):
            new_state, info = algorithm.step(jax.random.fold_in(draw_key, step_index), state)
            stats = kernel.sample_stats(new_state, info, tuned)
            return new_state, stats.get("diverging", jnp.zeros((), bool))

        def one_draw(state, draw_index):
            steps = draw_index * thinning + jnp.arange(thinning)
            state, diverging = jax.lax.scan(one_step, state, steps)
            return state, (target.constrain(state.position), jnp.any(diverging))

        _, (draws, diverging) = jax.lax.scan(one_draw, state, jnp.arange(num_samples))
        return draws, jnp.sum(diverging)

    def simulation(rng_key, observation):
        target = simulations.single(observation)
        draws, diverging = jax.vmap(chain, in_axes=(None, 0))(
            target, jax.random.split(rng_key, num_chains)
        )
        return draws, jnp.sum(diverging)

    return jax.jit(jax.vmap(simulation))


def _fit_chunk(
    program, simulations, sampler_or_family, rng_key, first, last, chunk_size, settings, fit_kwargs
):
    """Draws ``(chain, draw, simulation, ...)`` by site, and per-simulation fault counts."""
    count = last - first
    if program is not None:
        # The last chunk is padded to the chunk size, so that it runs the same program.
        index = np.minimum(np.arange(first, first + chunk_size), last - 1)
        observations = {name: v[index] for name, v in simulations.observations.items()}
        keys = jax.random.split(rng_key, chunk_size)
        draws, diverging = jax.device_get(program(keys, observations))
        # (simulation, chain, draw, ...) -> (chain, draw, simulation, ...)
        draws = {name: np.moveaxis(np.asarray(v)[:count], 0, 2) for name, v in draws.items()}
        stats = {"diverging": np.asarray(diverging)[:count].astype(int)}
    else:
        from inferax.variational import fit

        target = simulations.stacked(first, last)
        fit_key, draw_key = jax.random.split(rng_key)
        approximation = fit(target, sampler_or_family, fit_key, progress=False, **fit_kwargs)
        points = approximation.sample(draw_key, settings["num_samples"])
        draws = {
            name: np.asarray(values)[None]
            for name, values in jax.vmap(target.constrain)(points).items()
        }
        stats = {"diverging": np.zeros(count, int)}
    nonfinite = [
        ~np.isfinite(v.reshape(*v.shape[:3], -1)).all(axis=-1).any(axis=(0, 1))
        for v in map(np.asarray, draws.values())
        if np.issubdtype(v.dtype, np.floating)
    ]
    stats["nonfinite_draws"] = np.sum(nonfinite, axis=0).astype(int)
    return draws, stats


def _ranks(draws: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """The rank of each true value among its simulation's draws, ``(chain, draw, sim, ...)``
    against ``(sim, ...)``."""
    return np.sum(np.asarray(draws) < np.asarray(truth)[None, None], axis=(0, 1))


def _as_chain(arrays: dict) -> dict:
    return {name: np.asarray(values)[None, None] for name, values in arrays.items()}


def _open_run(run_dir: pathlib.Path, manifest: dict):
    """The run directory's store and the chunks already saved in it (none for a new run)."""
    if not (run_dir / MANIFEST).exists():
        return CheckpointStore.create(run_dir, json.loads(json.dumps(manifest)), 0), [], [], []
    store = CheckpointStore.open(run_dir)
    if store.manifest != json.loads(json.dumps(manifest)):
        store.release()
        raise CheckpointError(
            f"run_dir: '{run_dir}' holds an SBC run with other settings, model or key; give "
            "another directory or remove it"
        )
    store.check_manifest()
    point = store.latest()
    files = point.draw_files if point is not None else []
    ranks, stats = store.load_draws(files)
    return (
        store,
        list(files),
        [{name: values[0, 0] for name, values in chunk.items()} for chunk in ranks],
        [{name: values[0, 0] for name, values in chunk.items()} for chunk in stats],
    )
