"""Structured SGLD: Langevin steps whose gradient for each group of coordinates is taken at a
composite of the chain's current group and past draws of the other groups.

``group_assignment`` parses the groups (site names or flat indices) into one group index
per coordinate of the flattened position.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
from blackjax.base import SamplingAlgorithm

from inferax.kernel import WarmupAlgorithm
from inferax.minibatch import draw_minibatch, first_points
from inferax.samplers.guarded import guarded
from inferax.samplers.integrators import DiffusionState, overdamped_langevin
from inferax.samplers.stochastic_gradient import AbstractSGMCMCKernel, SGMCMCInfo, step_size_fn
from inferax.target import Target, site_name
from inferax.tree_math import tree_norm
from inferax.typing import ArrayLikeTree, ArrayTree, PRNGKey


class StructuredSGLDState(NamedTuple):
    """A structured SGLD chain: position, the minibatch log density there, the structured
    gradient (each group's at its composite), the step count, and a ring buffer of the
    chain's past positions (flattened, ``(buffer_size, dim)``) with the number of pushes."""

    position: ArrayTree
    logdensity: jax.Array
    logdensity_grad: ArrayTree
    step: jax.Array
    buffer: jax.Array
    buffer_count: jax.Array


def group_assignment(groups: Sequence, example_position: ArrayLikeTree) -> np.ndarray:
    """Which group each coordinate of the flattened position belongs to.

    Args:
      groups: one entry per group; an entry is a site name (a leaf of the position, named
        as in ``Target.constrain``'s default: ``"w"``, ``"layer.0"``), an integer index into
        the flattened position, or a sequence of these.
      example_position: a position, such as ``target.init``.

    Returns:
      An int array with one group index per flattened coordinate.

    Raises:
      ValueError: an unknown name or index, or a coordinate in no group or in two.
    """
    leaves = jax.tree_util.tree_flatten_with_path(example_position)[0]
    offsets, start = {}, 0
    for path, leaf in leaves:
        size = int(np.size(leaf))
        offsets[site_name(path)] = range(start, start + size)
        start += size
    dim = start
    owner = np.full(dim, -1, dtype=np.int32)
    for index, group in enumerate(groups):
        members = group if isinstance(group, tuple | list) else (group,)
        for member in members:
            if isinstance(member, str):
                if member not in offsets:
                    raise ValueError(
                        f"structured_sgld: group {index} names '{member}', which is not a "
                        f"site of the position; sites are {sorted(offsets)}"
                    )
                coordinates = list(offsets[member])
            elif isinstance(member, int | np.integer) and not isinstance(member, bool):
                if not 0 <= member < dim:
                    raise ValueError(
                        f"structured_sgld: group {index} has index {member}, outside the "
                        f"flattened position of size {dim}"
                    )
                coordinates = [int(member)]
            else:
                raise TypeError(
                    f"structured_sgld: a group holds site names or integer indices, got "
                    f"{type(member).__name__}"
                )
            if np.any(owner[coordinates] >= 0):
                raise ValueError(f"structured_sgld: group {index} overlaps an earlier group")
            owner[coordinates] = index
    if np.any(owner < 0):
        missing = np.flatnonzero(owner < 0).tolist()
        raise ValueError(
            f"structured_sgld: flattened coordinates {missing} are in no group; every "
            "coordinate must be in exactly one"
        )
    return owner


def structured_sgld_algorithm(
    target: Target,
    step_size,
    batch_size: int,
    groups: Sequence,
    buffer_size: int,
    dropout: int | None = None,
    schedule=None,
    update_buffer: bool = True,
) -> SamplingAlgorithm:
    """Structured SGLD as a blackjax ``SamplingAlgorithm``; see ``structured_sgld``.

    Args:
      target: a target with a data split.
      step_size: ``h``, a number or an optax schedule.
      batch_size: data points per minibatch.
      groups: the groups, as ``group_assignment`` reads them.
      buffer_size: past positions kept per chain.
      dropout: ``None``, one composite per group; or ``L``, the number of composites,
        with each group owned by one of them drawn at random every step.
      schedule: an optional optax schedule that multiplies ``step_size``.
      update_buffer: push each new position into the buffer (True), or keep the buffer
        as it is (False).

    Returns:
      ``SamplingAlgorithm(init, step)`` with ``StructuredSGLDState`` and ``SGMCMCInfo``.
    """
    flat_init, unravel = jax.flatten_util.ravel_pytree(target.init)
    dim = flat_init.shape[0]
    owner = jnp.asarray(group_assignment(groups, target.init))
    num_groups = len(groups)
    num_composites = num_groups if dropout is None else int(dropout)
    coordinates = jnp.arange(dim)

    def flat_logdensity(flat, batch):
        return target.minibatch_logdensity(unravel(flat), batch)

    flat_value_and_grad = jax.vmap(jax.value_and_grad(flat_logdensity), in_axes=(0, None))

    def structured_logdensity_and_grad(position, batch, buffer, buffer_count, rng_key):
        """The log density at ``position`` on ``batch``, and the structured gradient: the
        gradient of group ``k`` is taken at the composite that owns ``k``, whose other
        groups come from one past draw in ``buffer``."""
        slot_key, owner_key = jax.random.split(rng_key)
        flat, _ = jax.flatten_util.ravel_pytree(position)
        filled = jnp.minimum(buffer_count, buffer.shape[0])
        slots = jax.random.randint(slot_key, (num_composites,), 0, filled)
        if dropout is None:
            composite_of_group = jnp.arange(num_groups)
        else:
            composite_of_group = jax.random.randint(owner_key, (num_groups,), 0, num_composites)
        composite_of_coordinate = composite_of_group[owner]
        owns = composite_of_coordinate[None, :] == jnp.arange(num_composites)[:, None]
        composites = jnp.where(owns, flat[None, :], buffer[slots])
        _, grads = flat_value_and_grad(composites, batch)
        grad = grads[composite_of_coordinate, coordinates]
        logdensity = target.minibatch_logdensity(position, batch)
        return logdensity, unravel(grad)

    integrator = overdamped_langevin(structured_logdensity_and_grad)
    step_size_at = step_size_fn(step_size, schedule)

    def init(position: ArrayLikeTree, rng_key=None) -> StructuredSGLDState:
        del rng_key
        flat, _ = jax.flatten_util.ravel_pytree(position)
        buffer = jnp.broadcast_to(flat, (buffer_size, dim))
        count = jnp.ones((), jnp.int32)
        batch = first_points(target.data, batch_size)
        # Every composite is the position itself while the buffer holds only it, so the
        # key that picks buffer slots and owners changes nothing here.
        logdensity, grad = structured_logdensity_and_grad(
            position, batch, buffer, count, jax.random.key(0)
        )
        return StructuredSGLDState(
            position, logdensity, grad, jnp.zeros((), jnp.int32), buffer, count
        )

    def step(rng_key: PRNGKey, state: StructuredSGLDState):
        batch_key, noise_key, composite_key = jax.random.split(rng_key, 3)
        h = step_size_at(state.step)
        batch = draw_minibatch(batch_key, target.data, batch_size)
        diffusion = DiffusionState(state.position, state.logdensity, state.logdensity_grad)
        # The composites at the end point draw from the buffer of earlier positions; the end
        # point joins the buffer after.
        moved = integrator(
            noise_key, diffusion, h, (batch, state.buffer, state.buffer_count, composite_key)
        )
        position, logdensity, grad = moved
        if update_buffer:
            flat, _ = jax.flatten_util.ravel_pytree(position)
            buffer = state.buffer.at[state.buffer_count % buffer_size].set(flat)
            count = state.buffer_count + 1
        else:
            buffer, count = state.buffer, state.buffer_count
        moved = StructuredSGLDState(position, logdensity, grad, state.step, buffer, count)
        new_state, diverging = guarded(moved, state, (logdensity, grad))
        new_state = new_state._replace(step=state.step + 1)
        return new_state, SGMCMCInfo(h, tree_norm(grad), diverging)

    return SamplingAlgorithm(init, step)


def _freeze_groups(groups) -> tuple:
    if isinstance(groups, str | int) or not isinstance(groups, Sequence):
        raise TypeError(
            "structured_sgld: groups must be a sequence of groups, such as (('w',), ('b',)) "
            f"or ((0,), (1,)); got {groups!r}"
        )
    return tuple(tuple(g) if isinstance(g, tuple | list) else (g,) for g in groups)


@dataclasses.dataclass(frozen=True)
class structured_sgld(AbstractSGMCMCKernel):  # noqa: N801  (lower case, like blackjax's kernels)
    """Structured SGLD (S-SGLD): Langevin steps that break the dependence between groups of
    coordinates, for faster mixing.

    The step keeps the convention ``x + h * grad log p(x) + sqrt(2 h) * noise``, group by
    group: the coordinates are split into groups ``x = (x_1, ..., x_K)``, and group ``k``
    moves ``x_k + h * grad_k log p(x~) + sqrt(2 h) * noise``, with the
    gradient taken at a composite ``x~`` that holds the chain's current ``x_k`` and, for
    every other group, the values of one past draw picked at random from a buffer of the
    chain's own past positions. The chain then samples the structured approximation
    ``q(x) = prod_k q_k(x_k)`` with ``q_k(x_k) ∝ exp(E_{q_-k} log p(x_k, x_-k))``, the
    coordinate-ascent variational optimum over that factorisation, without assuming a
    parametric form for the ``q_k``: the correlations between groups are given up, in
    exchange for much faster mixing when they are strong (for two coordinates with
    correlation ``rho``, each marginal takes the mean-field variance ``1 - rho^2``). With
    one group it is SGLD. A step costs one minibatch gradient per composite, evaluated
    together with ``vmap``, plus one minibatch log density.

    The buffer is a ring of the last ``buffer_size`` positions, filled during warmup.
    With ``freeze_buffer=True`` (the default) sampling keeps the buffer as warmup left it,
    so the sampling phase is a time-homogeneous Markov chain whose stationary law is the
    self-averaged target above, and each group mixes at its own conditional rate.
    ``freeze_buffer=False`` keeps pushing every draw into the buffer while sampling, as
    Alexos et al. do; the buffer's mean then follows the slow coordinate-ascent
    iteration (a factor ``rho`` per buffer turnover for two groups), which adds a
    long-lived, small component to every group, so the chain can mix more slowly than SGLD
    (``docs/sgmcmc.md`` shows it on a correlated Gaussian). Either way, warmup must be long
    enough for the buffer to settle: a few times ``buffer_size / (1 - rho)`` steps, when the
    groups' correlation is ``rho``.

    ``dropout=L`` is the scalable variant: only ``L`` composites are built per step; each
    group is owned by one of them, drawn at random every step, and its gradient is taken at
    the composite that owns it, whose other groups come from the buffer. Groups that share
    a composite keep their dependence in that step, so the chain sits between SGLD
    (``L = 1``) and the fully structured one, at the cost of ``L`` gradients instead of
    ``K``.

    Args:
      step_size: ``h`` > 0, or an optax schedule ``n -> h_n``.
      batch_size: data points per minibatch, at most ``target.num_data``.
      groups: one entry per group: site names (leaves of the position, such as ``"w"``) or
        integer indices into the flattened position, or sequences of them. Every coordinate
        must be in exactly one group.
      buffer_size: past positions kept per chain, >= 1.
      dropout: ``None`` for one composite per group, or ``L`` >= 1 composites.
      schedule: an optional optax schedule that multiplies ``step_size``.
      freeze_buffer: keep the buffer fixed after warmup (True), or keep filling it.

    Examples:
      >>> import jax, jax.numpy as jnp, numpy as np, inferax
      >>> y = np.random.default_rng(0).normal(1.0, 1.0, size=(1000, 2))
      >>> target = inferax.Target(
      ...     log_prior=lambda mu: -0.5 * jnp.sum(mu**2), init=jnp.zeros(2),
      ...     log_likelihood=lambda mu, batch: -0.5 * jnp.sum((batch - mu) ** 2), data=y)
      >>> kernel = inferax.samplers.structured_sgld(
      ...     step_size=1e-4, batch_size=50, groups=((0,), (1,)), buffer_size=100)
      >>> post = inferax.sample(target, kernel, jax.random.key(0), num_chains=2,
      ...                       num_warmup=200, num_samples=200, progress=False)
      >>> post.draws["x"].shape
      (2, 200, 2)

    References:
      Alexos, Boyd, Mandt, "Structured Stochastic Gradient MCMC", ICML 2022.
    """

    step_size: Any
    batch_size: int
    groups: Any
    buffer_size: int
    dropout: int | None = None
    schedule: Any = None
    freeze_buffer: bool = True

    name = "structured_sgld"

    def __post_init__(self):
        self._check_config()
        object.__setattr__(self, "groups", _freeze_groups(self.groups))
        if not self.groups:
            raise ValueError("structured_sgld: give at least one group")
        size = self.buffer_size
        if not isinstance(size, int | np.integer) or isinstance(size, bool) or size < 1:
            raise ValueError(f"structured_sgld: buffer_size must be an integer >= 1, got {size}")
        if self.dropout is not None:
            count = self.dropout
            if not isinstance(count, int | np.integer) or isinstance(count, bool) or count < 1:
                raise ValueError(
                    f"structured_sgld: dropout must be None or an integer number of "
                    f"composites >= 1, got {count}"
                )

    def check_target(self, target: Target) -> None:
        super().check_target(target)
        group_assignment(self.groups, target.init)

    def build(self, target: Target) -> SamplingAlgorithm:
        return structured_sgld_algorithm(
            target,
            self.step_size,
            int(self.batch_size),
            self.groups,
            int(self.buffer_size),
            self.dropout,
            self.schedule,
            update_buffer=not self.freeze_buffer,
        )

    def warmup_algorithm(self, target: Target) -> WarmupAlgorithm:
        """Burn-in that always fills the buffer, whatever ``freeze_buffer`` says."""
        filling = dataclasses.replace(self, freeze_buffer=False)
        return AbstractSGMCMCKernel.warmup_algorithm(filling, target)


__all__ = [
    "StructuredSGLDState",
    "group_assignment",
    "structured_sgld",
    "structured_sgld_algorithm",
]
