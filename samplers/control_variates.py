"""SGLD with control variates: the minibatch gradient centred on a mode found by optax's
L-BFGS (``find_mode``), so its noise shrinks with the distance to the mode."""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from blackjax.base import SamplingAlgorithm

from inferax.kernel import WarmupAlgorithm
from inferax.minibatch import draw_minibatch, first_points
from inferax.samplers.stochastic_gradient import (
    AbstractSGMCMCKernel,
    SGLDState,
    langevin_algorithm,
    step_size_fn,
)
from inferax.target import Target
from inferax.typing import ArrayTree

CENTRES = ("mode", "init")
"""Where ``sgld_cv`` puts its centre: a mode found from ``target.init``, or ``target.init``."""


def find_mode(target: Target, max_num_steps: int = 200, gtol: float = 1e-6) -> ArrayTree:
    """A mode of ``target.logdensity``, by optax's L-BFGS on the full data from ``target.init``.

    Stops when ``|grad| <= gtol (1 + |log p|)`` or after ``max_num_steps`` iterations.

    Args:
      target: the target.
      max_num_steps: the iteration cap.
      gtol: the relative gradient tolerance.

    Returns:
      The mode, with the structure of ``target.init``.
    """
    objective = lambda params: -target.logdensity(params)  # noqa: E731
    optimizer = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(objective)

    def step(carry):
        params, state = carry
        value, grad = value_and_grad(params, state=state)
        updates, state = optimizer.update(
            grad, state, params, value=value, grad=grad, value_fn=objective
        )
        return optax.apply_updates(params, updates), state

    def unfinished(carry):
        _, state = carry
        count = optax.tree.get(state, "count")
        grad = optax.tree.get(state, "grad")
        value = optax.tree.get(state, "value")
        converged = optax.tree.norm(grad) <= gtol * (1.0 + jnp.abs(value))
        return (count == 0) | ((count < max_num_steps) & ~converged)

    init = target.init
    mode, _ = jax.lax.while_loop(unfinished, step, (init, optimizer.init(init)))
    return mode


class SGLDCVWarmupState(NamedTuple):
    """SGLD-CV's warmup: the chain, and the centre with the full-data log density and
    gradient there, found once when warmup starts."""

    chain: SGLDState
    centre: ArrayTree
    centre_logdensity: jax.Array
    centre_grad: ArrayTree


def sgld_cv_algorithm(
    target: Target,
    step_size,
    batch_size: int,
    centre: ArrayTree,
    centre_logdensity: jax.Array,
    centre_grad: ArrayTree,
    schedule=None,
) -> SamplingAlgorithm:
    """SGLD with control variates as a blackjax ``SamplingAlgorithm``.

    The gradient estimate is ``grad log p(c) + g_B(x) - g_B(c)``, with ``c`` the centre,
    ``grad log p(c)`` its full-data gradient and ``g_B`` the minibatch estimate on the
    step's batch; the step is ``x + h * estimate + sqrt(2 h) * noise``.

    Args:
      target: a target with a data split.
      step_size: ``h``, a number or an optax schedule.
      batch_size: data points per minibatch.
      centre: the centre ``c``, a position.
      centre_logdensity: ``log p(c)`` on the full data.
      centre_grad: ``grad log p(c)`` on the full data.
      schedule: an optional optax schedule that multiplies ``step_size``.

    Returns:
      ``SamplingAlgorithm(init, step)`` with ``SGLDState`` and ``SGMCMCInfo``; the state's
      log density is the matching control-variate estimate.
    """

    def difference(position, at_centre, batch):
        return target.minibatch_logdensity(position, batch) - target.minibatch_logdensity(
            at_centre, batch
        )

    # One backward pass gives g_B(x) and -g_B(c).
    difference_and_grads = jax.value_and_grad(difference, argnums=(0, 1))

    def logdensity_and_grad(position, batch):
        value, (grad, minus_centre_grad) = difference_and_grads(position, centre, batch)
        grad = jax.tree.map(lambda c, g, m: c + g + m, centre_grad, grad, minus_centre_grad)
        return centre_logdensity + value, grad

    return langevin_algorithm(
        logdensity_and_grad,
        step_size_fn(step_size, schedule),
        lambda rng_key: (draw_minibatch(rng_key, target.data, batch_size),),
        (first_points(target.data, batch_size),),
    )


@dataclasses.dataclass(frozen=True)
class sgld_cv(AbstractSGMCMCKernel):  # noqa: N801  (lower case, like blackjax's kernels)
    """SGLD with control variates: the minibatch gradient is centred on a mode.

    The gradient estimate at ``x`` is ``grad log p(c) + g_B(x) - g_B(c)``: the full-data
    gradient at a fixed centre ``c`` plus the minibatch estimate of the difference between
    ``x`` and ``c``. It is unbiased for any ``c``; near a mode its variance is of the order
    of ``|x - c|^2`` instead of ``num_data^2 / batch_size``, so at the same step the chain
    carries far less gradient noise than SGLD. A step moves
    ``x + h * grad log p(x) + sqrt(2 h) * noise`` (blackjax's convention) with the estimate
    in place of ``grad log p(x)``, and costs two minibatch gradients.

    The centre is a tuned value, not a setting. With ``centre="mode"`` (the default)
    optax's L-BFGS finds a mode from ``target.init`` on the full data; with
    ``centre="init"`` the centre is ``target.init`` itself, so a centre of your own goes in
    as the target's ``init`` (``dataclasses.replace(target, init=c)``). The centre and its
    full-data gradient are computed once, when warmup starts (for all chains at once), and
    warmup then burns in. ``Posterior.tuned`` holds the centre. Outside ``inferax.sample``,
    ``build(target, centre=c)`` takes any centre.

    Args:
      step_size: ``h`` > 0, or an optax schedule ``n -> h_n``.
      batch_size: data points per minibatch, at most ``target.num_data``.
      centre: ``"mode"`` or ``"init"``, as above.
      schedule: an optional optax schedule that multiplies ``step_size``.
      max_opt_steps: the cap on L-BFGS iterations when the kernel finds the mode.

    Examples:
      >>> import jax, jax.numpy as jnp, numpy as np, inferax
      >>> kernel = inferax.samplers.sgld_cv(step_size=1e-4, batch_size=50)
      >>> y = np.random.default_rng(0).normal(1.0, 1.0, size=1000)
      >>> target = inferax.Target(
      ...     log_prior=lambda mu: -0.5 * mu**2, init=jnp.zeros(()),
      ...     log_likelihood=lambda mu, batch: -0.5 * jnp.sum((batch - mu) ** 2), data=y)
      >>> post = inferax.sample(target, kernel, jax.random.key(0), num_chains=2,
      ...                       num_warmup=200, num_samples=200, progress=False)
      >>> bool(abs(post.tuned["centre"][0] - y.sum() / (1 + len(y))) < 1e-3)
      True

    References:
      Baker, Fearnhead, Fox, Nemeth, "Control variates for stochastic gradient MCMC",
      Statistics and Computing 2019.
    """

    step_size: Any
    batch_size: int
    centre: str = "mode"
    schedule: Any = None
    max_opt_steps: int = 200

    name = "sgld_cv"

    def __post_init__(self):
        self._check_config()
        if not isinstance(self.centre, str):
            raise TypeError(
                f"sgld_cv: centre must be one of {CENTRES}, got {type(self.centre).__name__}; "
                "the centre is a tuned value, not a setting: to centre on a position c, give "
                "the target init=c (dataclasses.replace(target, init=c)) and centre='init', "
                "or call build(target, centre=c)"
            )
        if self.centre not in CENTRES:
            raise ValueError(f"sgld_cv: centre must be one of {CENTRES}, got {self.centre!r}")
        steps = self.max_opt_steps
        if not isinstance(steps, int | np.integer) or isinstance(steps, bool) or steps < 1:
            raise ValueError(f"sgld_cv: max_opt_steps must be an integer >= 1, got {steps}")

    def find_centre(self, target: Target) -> tuple[ArrayTree, jax.Array, ArrayTree]:
        """The centre as the setting ``centre`` says, with the full-data log density and
        gradient there."""
        if self.centre == "mode":
            centre = find_mode(target, self.max_opt_steps)
        else:
            centre = target.init
        logdensity, grad = target.logdensity_and_grad(centre)
        return centre, logdensity, grad

    def build(
        self, target: Target, centre=None, centre_logdensity=None, centre_grad=None
    ) -> SamplingAlgorithm:
        """The algorithm, centred on ``centre`` (a position like ``target.init``). Without
        one, the centre is found as ``find_centre`` does; without its full-data log density
        and gradient, they are computed here."""
        if centre is None:
            centre, centre_logdensity, centre_grad = self.find_centre(target)
        else:
            centre = _as_position(self.name, "the centre", centre, target)
            if centre_logdensity is None or centre_grad is None:
                centre_logdensity, centre_grad = target.logdensity_and_grad(centre)
        return sgld_cv_algorithm(
            target,
            self.step_size,
            int(self.batch_size),
            centre,
            centre_logdensity,
            centre_grad,
            self.schedule,
        )

    def warmup_algorithm(self, target: Target) -> WarmupAlgorithm:
        def algorithm(warmup_state):
            return self.build(
                target,
                warmup_state.centre,
                warmup_state.centre_logdensity,
                warmup_state.centre_grad,
            )

        def init(position):
            # Nothing here depends on the chain's position, so under the driver's vmap the
            # mode search and the full-data gradient run once, not once per chain.
            centre, logdensity, grad = self.find_centre(target)
            chain = self.build(target, centre, logdensity, grad).init(position)
            return SGLDCVWarmupState(chain, centre, logdensity, grad)

        def step(rng_key, warmup_state, schedule_entry):
            del schedule_entry
            chain, _ = algorithm(warmup_state).step(rng_key, warmup_state.chain)
            return warmup_state._replace(chain=chain)

        def final(warmup_state):
            tuned = {
                "centre": warmup_state.centre,
                "centre_logdensity": warmup_state.centre_logdensity,
                "centre_grad": warmup_state.centre_grad,
            }
            return warmup_state.chain, tuned

        return WarmupAlgorithm(init, step, final)


def _as_position(name: str, what: str, value: Any, target: Target) -> ArrayTree:
    """``value`` as a position like ``target.init`` (same structure, shapes and dtypes).

    Raises:
      ValueError: another structure or shape; messages start with ``name``.
    """
    structure, want = jax.tree.structure(value), jax.tree.structure(target.init)
    shapes = [np.shape(leaf) for leaf in jax.tree.leaves(value)]
    want_shapes = [np.shape(leaf) for leaf in jax.tree.leaves(target.init)]
    if structure != want or shapes != want_shapes:
        raise ValueError(
            f"{name}: {what} must be a position like target.init ({want}, shapes "
            f"{want_shapes}); got {structure}, shapes {shapes}"
        )
    return jax.tree.map(lambda v, leaf: jnp.asarray(v, jnp.result_type(leaf)), value, target.init)


__all__ = [
    "CENTRES",
    "SGLDCVWarmupState",
    "find_mode",
    "sgld_cv",
    "sgld_cv_algorithm",
]
