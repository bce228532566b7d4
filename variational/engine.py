"""``variational.fit``: train a variational family on a ``Target`` with the core's one
training loop, and the ``Approximation`` it returns."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import warnings
from collections.abc import Callable
from typing import final

import arviz_base
import arviz_stats  # noqa: F401  (registers the `.azstats` accessor that psis_khat uses)
import jax
import jax.numpy as jnp
import numpy as np
import optax
import xarray as xr
from jax.flatten_util import ravel_pytree
from numpyro import handlers
from numpyro.distributions import biject_to
from numpyro.infer import init_to_median

from inferax.flows.flow import AbstractFlow
from inferax.target import Target
from inferax.training import train
from inferax.tree_math import all_finite
from inferax.typing import ArrayTree, PRNGKey
from inferax.validation import check_count, check_key, check_logdensity_shape
from inferax.variational.family import AbstractFamily
from inferax.variational.flow import as_family
from inferax.variational.objectives import resolve_objective


def flat_logdensity(target: Target):
    """``target.logdensity`` of one flat unconstrained vector, and the map back to the
    target's pytree."""
    _, unravel = ravel_pytree(target.init)
    return (lambda x: target.logdensity(unravel(x))), unravel


def precision(family: AbstractFamily):
    """The context the family's programs run in: ``jax.enable_x64`` for a family that
    computes in float64 (``family.float64``), none otherwise."""
    return jax.enable_x64(True) if family.float64 else contextlib.nullcontext()


@final
@dataclasses.dataclass(frozen=True)
class ObjectiveStep:
    """One optimiser step on a variational objective, the step ``inferax.training.train``
    runs: ``state = (family, optimizer state)``, ``data`` the target.

    A step whose loss or gradient is not finite (a draw where the log density overflows)
    leaves the family's parameters as they were, and says so in its ``"nonfinite"``
    metric; ``fit`` counts these steps and warns. The optimiser sees a zero gradient that
    step, so its state (Adam's moments) stays finite: one such draw would otherwise turn
    every parameter, and the moments, into NaN for good. ``guarded=False`` leaves out
    that guard: the step ``fit`` runs first, with the guarded one as ``train``'s fallback.

    Args:
      optimizer: an optax optimizer.
      objective: ``(family, rng_key, logdensity_fn) -> loss``.
      guarded: keep a step with a non-finite loss or gradient out of the state.
    """

    optimizer: optax.GradientTransformation
    objective: Callable
    guarded: bool = True

    def __call__(self, state, rng_key: PRNGKey, target: Target):
        family, opt_state = state
        logdensity_fn, _ = flat_logdensity(target)
        loss, grads = jax.value_and_grad(self.objective)(family, rng_key, logdensity_fn)
        if not self.guarded:
            updates, opt_state = self.optimizer.update(grads, opt_state, family)
            new_state = (optax.apply_updates(family, updates), opt_state)
            return new_state, {"loss": loss, "nonfinite": ~jnp.isfinite(loss)}
        finite = all_finite((loss, grads))
        # The guard zeroes the gradient and the update, never selects between the new and
        # the old state: XLA then fused the optimiser's update into the select, and the step
        # took up to twice as long.
        grads = jax.tree.map(lambda g: jnp.where(finite, g, jnp.zeros_like(g)), grads)
        updates, opt_state = self.optimizer.update(grads, opt_state, family)
        updates = jax.tree.map(lambda u: jnp.where(finite, u, jnp.zeros_like(u)), updates)
        return (optax.apply_updates(family, updates), opt_state), {
            "loss": loss,
            "nonfinite": ~finite,
        }


def initial_location(rng_key: PRNGKey, target: Target) -> ArrayTree:
    """Where ``fit`` centres a family that has no parameters yet, as NumPyro's autoguides
    do: for a target from ``inferax.from_numpyro``, the prior median in unconstrained space
    (NumPyro's ``init_to_median``: the median of 15 prior draws of each latent site, moved
    to unconstrained space); for a plain log density, or where the log density or its
    gradient is not finite at the median, ``target.init``.

    Args:
      rng_key: the key for the prior draws.
      target: an ``inferax.Target``.

    Returns:
      A position in the target's unconstrained pytree.

    Examples:
      >>> import jax, jax.numpy as jnp, numpyro, numpyro.distributions as dist, inferax
      >>> from inferax import variational
      >>> def model():
      ...     numpyro.sample("sigma", dist.LogNormal(1.0, 0.1))
      >>> target = inferax.from_numpyro(model)
      >>> position = variational.initial_location(jax.random.key(0), target)
      >>> bool(jnp.abs(position["sigma"] - 1.0) < 0.1)
      True
    """
    model = target.model
    if model is None:
        return target.init
    # NumPyro's prior draws broadcast ranks; a session that raises on that is the user's
    # setting for their own code, not NumPyro's.
    with jax.numpy_rank_promotion("allow"):
        seeded = handlers.seed(model.model, jax.random.key_data(rng_key))
        median = handlers.substitute(seeded, substitute_fn=init_to_median(num_samples=15))
        trace = handlers.trace(median).get_trace(*model.args, **model.kwargs)
    position = {}
    for name, leaf in target.init.items() if isinstance(target.init, dict) else ():
        site = trace.get(name)
        if site is None or site["type"] != "sample" or np.shape(site["value"]) != np.shape(leaf):
            return target.init
        unconstrained = biject_to(site["fn"].support).inv(site["value"])
        position[name] = jnp.asarray(unconstrained, jnp.result_type(leaf))
    if not position:
        return target.init
    value, grad = target.logdensity_and_grad(position)
    finite = bool(jnp.isfinite(value)) and all(
        bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(grad)
    )
    return position if finite else target.init


NOT_A_TARGET = (
    "sparse GPs and fractional SDEs have their own fit: inferax.variational.gp.fit / "
    "inferax.variational.sde.fit"
)


def fit(
    target: Target,
    family: AbstractFamily | AbstractFlow,
    rng_key: PRNGKey,
    *,
    optimizer: optax.GradientTransformation,
    num_steps: int,
    objective="elbo",
    num_particles: int | tuple[int, int] = 1,
    estimator: str = "reparam",
    chunk_size: int | None = None,
    progress: bool | None = None,
    num_khat_draws: int = 1000,
    init: ArrayTree | None = None,
) -> Approximation:
    """Fits ``family`` to ``target`` by stochastic optimisation of a variational bound.

    The target's unconstrained position is flattened to one vector of ``dim``
    coordinates. A family without parameters is initialised (``family.init``) at ``init``
    when given, else where NumPyro's autoguides start, ``initial_location(target)``: the
    prior median in unconstrained space for a NumPyro model, ``target.init`` for a plain
    log density. The Gaussian families then start with standard deviations ``init_scale``
    (0.1 by default, as ``AutoNormal``), a flow as the identity around that point.
    A flow's recipe (``flows.realnvp(...)`` and the other builders,
    ``flows.stochastic(...)``) is first wrapped in its family, ``normalizing_flow`` or
    ``stochastic_flow``. A MixFlow's only trained part is its mean-field reference, which
    is fitted here; its step size is not (see ``MixFlow.tune``).

    Steps run on ``inferax.training.train``: compiled chunks of ``chunk_size`` steps, the
    progress bar, step ``t`` keyed by ``fold_in(key, t)`` (so the result does not depend
    on ``chunk_size``), and compiled chunks kept per target, so a second fit with the same
    target, family structure, optimizer and objective objects does not compile again.
    A step whose loss or gradient is not finite leaves the parameters as they were (the
    optimiser sees a zero gradient); ``fit`` counts such steps
    (``Approximation.num_nonfinite``; their losses stay in the trace) and warns. The steps
    run without that guard; a chunk that went non-finite runs again with it, as does the
    rest of the fit.

    Args:
      target: the log density, an ``inferax.Target``.
      family: a variational family, such as ``variational.fullrank_gaussian()`` or
        ``variational.mixflow(target)``, or a flow, such as ``flows.realnvp(8, (64, 64))``.
      rng_key: the key for everything random here.
      optimizer: an optax optimizer.
      num_steps: optimisation steps.
      objective: ``"elbo"``, ``"iwae"``, ``"miwae"``, ``"ciwae"``, ``"piwae"``, or any
        callable ``(family, rng_key, logdensity_fn) -> loss`` (see
        ``variational.objectives``).
      num_particles: draws per step for a named objective; ``(M, K)`` for ``"miwae"``
        and ``"piwae"``.
      estimator: ``"reparam"`` or ``"stl"`` (sticking the landing), for a named objective.
      chunk_size: steps per compiled chunk; ``None``: picked by ``inferax.training.train``
        (see ``inferax.chunking``).
      progress: show a progress bar; ``None``: on an interactive terminal, not under CI.
      num_khat_draws: draws for the PSIS k-hat of the fitted approximation.
      init: where to centre the family, a position in the target's unconstrained pytree;
        ``None``: ``initial_location(target)``. Ignored for a family that has parameters.

    Returns:
      An ``Approximation``.

    Raises:
      TypeError: when ``target`` is not a ``Target`` (sparse GPs and fractional SDEs
        have their own ``fit``) or ``family`` is neither a family nor a flow.

    Examples:
      >>> import jax, jax.numpy as jnp, optax, inferax
      >>> from inferax import variational
      >>> target = inferax.Target.from_logdensity(lambda x: -0.5 * jnp.sum((x - 1) ** 2),
      ...                                         jnp.zeros(2))
      >>> approx = variational.fit(target, variational.meanfield_gaussian(),
      ...                          jax.random.key(0), optimizer=optax.adam(0.05),
      ...                          num_steps=300, num_particles=4, progress=False)
      >>> bool(jnp.allclose(approx.params["loc"], 1.0, atol=0.2))
      True

    References:
      Yao, Vehtari, Simpson, Gelman, "Yes, but Did It Work?: Evaluating Variational
      Inference", 2018 (the k-hat).
    """
    if not isinstance(target, Target):
        raise TypeError(
            f"target must be an inferax.Target, got {type(target).__name__}: {NOT_A_TARGET}"
        )
    family = as_family(family)
    family.check_target(target)
    check_count("num_steps", num_steps, minimum=1)
    check_count("num_khat_draws", num_khat_draws, minimum=2)
    rng_key = check_key(rng_key)
    check_logdensity_shape(target)
    objective_name = objective if isinstance(objective, str) else "custom"
    objective = resolve_objective(objective, num_particles, estimator)
    init_key, run_key, khat_key = jax.random.split(rng_key, 3)
    if not family.initialized:
        start = flat_start(jax.random.fold_in(init_key, 1), target, init)
        family = family.init(init_key, start)
    part = family.trained_part()
    result = train(
        ObjectiveStep(optimizer, objective, guarded=False),
        (part, optimizer.init(part)),
        run_key,
        target,
        num_steps=num_steps,
        chunk_size=chunk_size,
        progress=progress,
        owner=target,
        fallback=ObjectiveStep(optimizer, objective),
    )
    num_nonfinite = int(np.sum(result.trace["nonfinite"]))
    if num_nonfinite:
        warnings.warn(
            f"fit: {num_nonfinite} of {num_steps} steps had a non-finite objective or "
            "gradient and were skipped (see Approximation.num_nonfinite and the NaNs in "
            "losses); the family may start too wide for the target, or the learning rate "
            "be too large",
            RuntimeWarning,
            stacklevel=2,
        )
    approx = Approximation(
        family=family.with_trained_part(result.state[0]),
        target=target,
        losses=result.trace["loss"],
        timing=result.timing,
        objective=objective_name,
        num_nonfinite=num_nonfinite,
    )
    log_w = approx.log_weights(khat_key, num_khat_draws)[1]
    return dataclasses.replace(approx, khat=psis_khat(log_w))


def flat_start(rng_key: PRNGKey, target: Target, init) -> jax.Array:
    """The flat position a family is centred on: ``init`` checked against the target's
    pytree, or ``initial_location``."""
    flat_init, _ = ravel_pytree(target.init)
    if init is None:
        return ravel_pytree(initial_location(rng_key, target))[0].astype(flat_init.dtype)
    if jax.tree.structure(init) != jax.tree.structure(target.init):
        raise ValueError(
            "init must have the pytree structure of target.init, "
            f"{jax.tree.structure(target.init)}, got {jax.tree.structure(init)}"
        )
    flat = ravel_pytree(jax.tree.map(jnp.asarray, init))[0].astype(flat_init.dtype)
    if flat.shape != flat_init.shape or not bool(jnp.all(jnp.isfinite(flat))):
        raise ValueError(
            f"init must be finite with the shapes of target.init ({flat_init.size} "
            f"coordinates), got {flat.size}"
        )
    return flat


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

    Methods that have no meaning for the family raise ``NotImplementedError``: a
    stochastic flow or a MixFlow has no tractable ``log q`` of ``x``, so no ``log_prob``
    nor ``sample_and_log_prob``; its draws, importance weights, ELBO and k-hat work.

    Attributes:
      family: the fitted family.
      target: the target it was fitted to.
      losses: the objective's loss at every step (the negative bound, estimated with the
        step's draws).
      timing: seconds spent compiling and optimising.
      khat: the PSIS Pareto k-hat of ``log p - log q`` on ``num_khat_draws`` fresh draws
        (Yao et al. 2018): above 0.7, do not trust the approximation.
      objective: the objective's name (``"elbo"``, ``"iwae"``, ...; ``"custom"`` for a
        callable).
      num_nonfinite: the steps whose loss or gradient was not finite, which ``fit``
        skipped (their losses are in ``losses``, NaN or infinite).
    """

    family: AbstractFamily
    target: Target
    losses: np.ndarray
    timing: dict[str, float]
    khat: float = float("nan")
    objective: str = "elbo"
    num_nonfinite: int = 0

    @property
    def bound_trace(self) -> np.ndarray:
        """The bound at every step, ``-losses``: the ELBO trace for ``objective="elbo"``,
        the IWAE bound's for ``"iwae"``, each estimated with that step's draws."""
        return -np.asarray(self.losses)

    @property
    def params(self):
        """The fitted family's parameters, a pytree of arrays."""
        return self.family.params

    def unravel(self, x: jax.Array) -> ArrayTree:
        """Flat draws (leading axis) in the target's unconstrained pytree."""
        return jax.vmap(ravel_pytree(self.target.init)[1])(x)

    def log_weights(self, rng_key: PRNGKey, n: int) -> tuple[jax.Array, jax.Array]:
        """``n`` flat draws and their importance log weights ``log p(x) - log q(x)``."""
        with precision(self.family):
            x, log_w, _ = _draws_and_log_weights(self.target, self.family, rng_key, n)
        return x, log_w

    def sample_and_log_prob(self, rng_key: PRNGKey, n: int) -> tuple[ArrayTree, jax.Array]:
        """``n`` draws in the target's unconstrained pytree (leading axis ``n``) and their
        ``log q``."""
        with precision(self.family):
            x, log_q = _sample_and_log_prob(self.family, rng_key, n)
        return self.unravel(x), log_q

    def sample(self, rng_key: PRNGKey, n: int) -> ArrayTree:
        """``n`` draws in the target's unconstrained pytree, with a leading axis ``n``."""
        return self.unravel(self.log_weights(rng_key, n)[0])

    def log_prob(self, x: ArrayTree) -> jax.Array:
        """``log q`` of draws in the target's unconstrained pytree, with a leading axis."""
        flat = jax.vmap(lambda point: ravel_pytree(point)[0])(x)
        with precision(self.family):
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
        with attrs ``khat``, the PSIS k-hat of these ``n`` draws (what
        ``inferax.diagnostics.check`` finds from them), ``fit_khat``, ``fit``'s own on its
        ``num_khat_draws``, and ``objective``; ``sample_stats`` with
        ``lp`` (``log p``), ``log_q`` and ``log_weight = lp - log_q``, from which
        ``inferax.diagnostics.check`` recomputes the PSIS k-hat of these draws; and
        ``optimization`` with the trace of the fit, dim ``step``: ``loss`` and ``elbo``
        (``-loss``, the bound the objective estimates at each step; for ``"iwae"`` and the
        other objectives their bound), read by the HTML report's fit section.
        """
        with precision(self.family):
            x, log_w, lp = _draws_and_log_weights(self.target, self.family, rng_key, n)
        points = self.unravel(x)
        draws = jax.vmap(self.target.constrain)(points)
        draws = {name: np.asarray(value)[None] for name, value in draws.items()}
        # In float64, so the k-hat ``diagnostics.check`` recomputes from them is the one
        # stored: PSIS on the nearly equal weights of a close fit is sensitive to rounding.
        lp = np.asarray(lp, np.float64)[None]
        log_w = np.asarray(log_w, np.float64)[None]
        stats = {"lp": lp, "log_q": lp - log_w, "log_weight": log_w}
        attrs = {
            "inference_library": "inferax",
            "variational_family": type(self.family).__name__,
            "khat": psis_khat(log_w),
            "fit_khat": self.khat,
            "objective": self.objective,
            "num_steps": int(self.losses.size),
            "num_nonfinite": self.num_nonfinite,
            **{f"{name}_time": seconds for name, seconds in self.timing.items()},
        }
        tree = arviz_base.from_dict(
            {"posterior": draws, "sample_stats": stats},
            attrs={"posterior": attrs, "sample_stats": attrs},
        )
        trace = {"loss": ("step", np.asarray(self.losses)), "elbo": ("step", self.bound_trace)}
        tree["optimization"] = xr.Dataset(trace, attrs=attrs)
        return tree


__all__ = [
    "Approximation",
    "ObjectiveStep",
    "fit",
    "flat_logdensity",
    "flat_start",
    "initial_location",
    "precision",
    "psis_khat",
]
