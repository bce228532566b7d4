"""``variational.fit``: train any family on any ``Target`` in compiled chunks,
and the ``Approximation`` it returns."""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import final

import arviz_base
import jax
import jax.numpy as jnp
import numpy as np
import optax
import xarray as xr
from jax.flatten_util import ravel_pytree

from inferax.compile_cache import compiled
from inferax.progress import ProgressBar, progress_enabled
from inferax.validation import check_count, check_key, check_logdensity_shape
from inferax.target import Target
from inferax.typing import ArrayTree, PRNGKey
from inferax.variational.family import AbstractFamily
from inferax.variational.objectives import resolve_objective


def flat_logdensity(target: Target):
    """``target.logdensity`` of one flat unconstrained vector, and the map back to the
    target's pytree."""
    _, unravel = ravel_pytree(target.init)
    return (lambda x: target.logdensity(unravel(x))), unravel


def fit(
    target: Target,
    family: AbstractFamily,
    rng_key: PRNGKey,
    *,
    optimizer: optax.GradientTransformation,
    num_steps: int,
    objective="elbo",
    num_particles: int | tuple[int, int] = 1,
    estimator: str = "reparam",
    chunk_size: int = 500,
    progress: bool | None = None,
    num_khat_draws: int = 1000,
    **family_settings,
) -> Approximation:
    """Fits ``family`` to ``target`` by stochastic optimisation of a variational bound.

    The target's unconstrained position is flattened to one vector of ``dim``
    coordinates; the family is initialised there (``family.init``) unless it already has
    parameters. Steps run in a ``lax.fori_loop`` over compiled chunks of ``chunk_size`` steps with
    the progress bar of ``inferax.sample``; step ``t`` uses ``fold_in(key, t)``, so the
    result does not depend on ``chunk_size``; compiled chunks are kept per target, so a
    second fit with the same target, family structure, optimizer and objective objects
    does not compile again.

    Args:
      target: the log density.
      family: a variational family, such as ``variational.fullrank_gaussian()`` or
        ``flows.realnvp(8, (64, 64))``.
      rng_key: the key for everything random here.
      optimizer: an optax optimizer.
      num_steps: optimisation steps.
      objective: ``"elbo"``, ``"iwae"``, ``"miwae"``, ``"ciwae"``, ``"piwae"``, or any
        callable ``(family, rng_key, logdensity_fn) -> loss`` (see
        ``variational.objectives``).
      num_particles: draws per step for a named objective; ``(M, K)`` for ``"miwae"``
        and ``"piwae"``.
      estimator: ``"reparam"`` or ``"stl"`` (sticking the landing), for a named objective.
      chunk_size: steps per compiled chunk.
      progress: show a progress bar; ``None``: on an interactive terminal, not under CI.
      num_khat_draws: draws for the PSIS k-hat of the fitted approximation.
      **family_settings: settings for a family with its own ``fit_by_engine`` (a sparse
        GP's ``batch_size``, ``fixed``); refused for any other family.

    Returns:
      An ``Approximation``; for a family with its own ``fit_by_engine`` (a MixFlow, a
      FractionalSDE, whose target is ``sde.Observations``, a sparse GP, whose target is
      ``gp.Dataset``), what that returns.

    Examples:
      >>> import jax, jax.numpy as jnp, optax, inferax
      >>> from inferax import variational
      >>> target = inferax.Target.from_logdensity(lambda x: -0.5 * jnp.sum((x - 1) ** 2),
      ...                                         jnp.zeros(2))
      >>> approx = variational.fit(target, variational.meanfield_gaussian(),
      ...                          jax.random.key(0), optimizer=optax.adam(0.05),
      ...                          num_steps=300, num_particles=4, progress=False)
      >>> bool(jnp.allclose(approx.params.params["loc"], 1.0, atol=0.2))
      True

    References:
      Yao, Vehtari, Simpson, Gelman, "Yes, but Did It Work?: Evaluating Variational
      Inference", 2018 (the k-hat).
    """
    own_fit = getattr(family, "fit_by_engine", None)
    if own_fit is not None:
        # A family that says what fitting means for it: a MixFlow, whose only fitted part
        # is its reference; a FractionalSDE or a sparse GP, whose target is data, not a
        # density.
        return own_fit(target, rng_key, optimizer=optimizer, num_steps=num_steps,
                       num_particles=num_particles, progress=progress,
                       **family_settings)  # fmt: skip
    if family_settings:
        raise TypeError(f"fit got unexpected keyword argument(s) {sorted(family_settings)}")
    if not isinstance(target, Target):
        raise TypeError(f"target must be an inferax.Target, got {type(target).__name__}")
    if not isinstance(family, AbstractFamily):
        raise TypeError(f"family must be a variational family, got {type(family).__name__}")
    check_count("num_steps", num_steps, minimum=1)
    check_count("chunk_size", chunk_size, minimum=1)
    check_count("num_khat_draws", num_khat_draws, minimum=2)
    rng_key = check_key(rng_key)
    check_logdensity_shape(target)
    objective = resolve_objective(objective, num_particles, estimator)
    init_key, run_key, khat_key = jax.random.split(rng_key, 3)
    if not family.initialized:
        position, _ = ravel_pytree(target.init)
        family = family.init(init_key, position)
    opt_state = optimizer.init(family)
    static = {"optimizer": optimizer, "objective": objective, "chunk_size": chunk_size}
    timing = {"compile": 0.0, "optimization": 0.0}
    losses = []
    bar = ProgressBar(num_steps, progress_enabled(progress), "fit")
    bar.phase("optimization")
    try:
        for first in range(0, num_steps, chunk_size):
            count = min(chunk_size, num_steps - first)
            args = (target, family, opt_state, run_key, jnp.int32(first), jnp.int32(count))
            program, seconds = compiled(target, _fit_chunk, static, *args)
            timing["compile"] += seconds
            start = time.perf_counter()
            family, opt_state, chunk_losses = program(*args)
            chunk_losses = np.asarray(chunk_losses)[:count]
            timing["optimization"] += time.perf_counter() - start
            losses.append(chunk_losses)
            bar.advance(count)
    finally:
        bar.close()
    approx = Approximation(
        family=family, target=target, losses=np.concatenate(losses), timing=timing
    )
    log_w = approx.log_weights(khat_key, num_khat_draws)[1]
    return dataclasses.replace(approx, khat=psis_khat(log_w))


@functools.partial(jax.jit, static_argnames=("optimizer", "objective", "chunk_size"))
def _fit_chunk(target, family, opt_state, run_key, first, count, optimizer, objective,
               chunk_size):  # fmt: skip
    logdensity_fn, _ = flat_logdensity(target)
    loss_and_grad = jax.value_and_grad(objective)

    def one_step(offset, carry):
        family, opt_state, losses = carry
        key = jax.random.fold_in(run_key, first + offset)
        loss, grads = loss_and_grad(family, key, logdensity_fn)
        updates, opt_state = optimizer.update(grads, opt_state, family)
        losses = losses.at[offset].set(loss.astype(losses.dtype))
        return optax.apply_updates(family, updates), opt_state, losses

    # A loop with a traced trip count: XLA unrolls a scan of fixed length on CPU, and
    # compile time then grows with chunk_size (two minutes for 300 steps of a planar flow).
    losses = jnp.zeros(chunk_size, jnp.result_type(float))
    family, opt_state, losses = jax.lax.fori_loop(
        0, count, one_step, (family, opt_state, losses)
    )
    return family, opt_state, losses


def psis_khat(log_weights) -> float:
    """The Pareto k-hat of PSIS on importance log weights ``log p - log q``, by
    ``arviz_stats`` (Vehtari, Simpson, Gelman, Yao, Gabry, "Pareto Smoothed Importance
    Sampling", 2024). Above 0.7, the approximation misses mass the target has."""
    log_w = np.asarray(log_weights, dtype=np.float64).reshape(1, -1)
    if not np.all(np.isfinite(log_w)):
        return float("inf")
    data = xr.DataArray(log_w, dims=("chain", "draw"))
    # psislw takes log-likelihoods (PSIS-LOO's log weights are their negatives).
    _, value = (-data).azstats.psislw(dim=["chain", "draw"])
    return float(value)


@functools.partial(jax.jit, static_argnames=("num_draws",))
def _draws_and_log_weights(target, family, rng_key, num_draws):
    logdensity_fn, _ = flat_logdensity(target)
    keys = jax.random.split(rng_key, num_draws)
    x, log_w = jax.vmap(lambda k: family.sample_and_log_weight(k, logdensity_fn))(keys)
    return x, log_w, jax.vmap(logdensity_fn)(x)


@jax.jit
def _log_prob(family, flat):
    return jax.vmap(family.log_prob)(flat)


@functools.partial(jax.jit, static_argnames=("num_draws",))
def _sample_and_log_prob(family, rng_key, num_draws):
    return jax.vmap(family.sample_and_log_prob)(jax.random.split(rng_key, num_draws))


@final
@dataclasses.dataclass(frozen=True)
class Approximation:
    """The result of ``variational.fit``: a fitted family on a target.

    Attributes:
      family: the fitted family (its ``params`` are the parameters).
      target: the target it was fitted to.
      losses: the objective's loss at every step (the negative bound, estimated with the
        step's draws).
      timing: seconds spent compiling and optimising.
      khat: the PSIS Pareto k-hat of ``log p - log q`` on ``num_khat_draws`` fresh draws
        (Yao et al. 2018): above 0.7, do not trust the approximation.
    """

    family: AbstractFamily
    target: Target
    losses: np.ndarray
    timing: dict[str, float]
    khat: float = float("nan")

    @property
    def params(self) -> AbstractFamily:
        """The fitted family, a pytree of parameters."""
        return self.family

    def _unravel(self):
        return ravel_pytree(self.target.init)[1]

    def log_weights(self, rng_key: PRNGKey, n: int) -> tuple[jax.Array, jax.Array]:
        """``n`` flat draws and their importance log weights ``log p(x) - log q(x)``."""
        x, log_w, _ = _draws_and_log_weights(self.target, self.family, rng_key, n)
        return x, log_w

    def sample_and_log_prob(self, rng_key: PRNGKey, n: int) -> tuple[ArrayTree, jax.Array]:
        """``n`` draws in the target's unconstrained pytree (leading axis ``n``) and their
        ``log q``."""
        x, log_q = _sample_and_log_prob(self.family, rng_key, n)
        return jax.vmap(self._unravel())(x), log_q

    def sample(self, rng_key: PRNGKey, n: int) -> ArrayTree:
        """``n`` draws in the target's unconstrained pytree, with a leading axis ``n``."""
        x, _ = self.log_weights(rng_key, n)
        return jax.vmap(self._unravel())(x)

    def log_prob(self, x: ArrayTree) -> jax.Array:
        """``log q`` of draws in the target's unconstrained pytree, with a leading axis."""
        flat = jax.vmap(lambda point: ravel_pytree(point)[0])(x)
        return _log_prob(self.family, flat)

    def elbo(self, rng_key: PRNGKey, n: int) -> float:
        """A Monte Carlo estimate of the ELBO on ``n`` draws, and its standard error."""
        log_w = np.asarray(self.log_weights(rng_key, n)[1], dtype=np.float64)
        return float(log_w.mean()), float(log_w.std(ddof=1) / np.sqrt(n))

    def log_evidence(self, rng_key: PRNGKey, n: int) -> float:
        """The importance-sampling estimate of ``log Z``, ``log mean w``, on ``n`` draws."""
        log_w = np.asarray(self.log_weights(rng_key, n)[1], dtype=np.float64)
        top = log_w.max()
        return float(top + np.log(np.mean(np.exp(log_w - top))))

    def to_datatree(self, rng_key: PRNGKey, n: int) -> xr.DataTree:
        """``n`` draws as an ArviZ DataTree, one chain.

        Groups: ``posterior``, the draws in constrained space, dims ``(chain, draw, ...)``,
        with attrs ``khat`` (from ``fit``) and ``objective`` names; ``sample_stats`` with
        ``lp`` (``log p``), ``log_q`` and ``log_weight = lp - log_q``, from which
        ``inferax.diagnostics.check`` recomputes the PSIS k-hat of these draws; and
        ``optimization`` with the loss trace ``loss`` (dim ``step``).
        """
        x, log_w, lp = _draws_and_log_weights(self.target, self.family, rng_key, n)
        points = jax.vmap(self._unravel())(x)
        draws = jax.vmap(self.target.constrain)(points)
        draws = {name: np.asarray(value)[None] for name, value in draws.items()}
        lp = np.asarray(lp)[None]
        log_w = np.asarray(log_w)[None]
        stats = {"lp": lp, "log_q": lp - log_w, "log_weight": log_w}
        attrs = {
            "inference_library": "inferax",
            "variational_family": type(self.family).__name__,
            "khat": self.khat,
            "num_steps": int(self.losses.size),
            **{f"{name}_time": seconds for name, seconds in self.timing.items()},
        }
        tree = arviz_base.from_dict(
            {"posterior": draws, "sample_stats": stats},
            attrs={"posterior": attrs, "sample_stats": attrs},
        )
        tree["optimization"] = xr.Dataset(
            {"loss": ("step", np.asarray(self.losses))}, attrs=attrs
        )
        return tree


__all__ = ["Approximation", "fit", "flat_logdensity", "psis_khat"]
