"""Where chains start: the user's positions checked, or jittered draws around
``target.init`` where the log density and its gradient are finite, inside the kernel's
domain when it has one."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from inferax.target import Target, named_sites
from inferax.typing import ArrayLikeTree, PRNGKey

INIT_RADIUS = 2.0
"""Chains start uniformly within this distance of ``target.init`` in each unconstrained
coordinate, as Stan's and NumPyro's defaults do."""


@dataclasses.dataclass(frozen=True)
class Domain:
    """The open set a kernel's chains live in, for a position that is one 1-D array: the box
    ``lo < x_i < hi`` (a bound may be infinite), or with ``simplex=True`` the open simplex in
    free coordinates, ``x > 0`` and ``sum x < 1``.

    Default starts are jittered in its free coordinates (``to_free``: the logit on a box,
    ``log(x - lo)`` or ``log(hi - x)`` on a half-line, the additive log-ratio on the
    simplex), so that every start lies inside it; an explicit start outside it is refused.

    Args:
      lo: the lower bound, a float or an array broadcast against the position.
      hi: the upper bound.
      simplex: the open simplex instead of a box.
    """

    lo: Any = float("-inf")
    hi: Any = float("inf")
    simplex: bool = False

    def describe(self) -> str:
        """The set in words, for error messages."""
        if self.simplex:
            return "x > 0 and sum x < 1"
        return f"{self.lo} < x < {self.hi}"

    def contains(self, x: jax.Array) -> jax.Array:
        """Whether the 1-D point ``x`` lies in the open set (and is finite)."""
        finite = jnp.all(jnp.isfinite(x))
        if self.simplex:
            return finite & jnp.all(x > 0.0) & (jnp.sum(x) < 1.0)
        return finite & jnp.all((x > self.lo) & (x < self.hi))

    def _bounds(self, x):
        lo = jnp.broadcast_to(jnp.asarray(self.lo, x.dtype), x.shape)
        hi = jnp.broadcast_to(jnp.asarray(self.hi, x.dtype), x.shape)
        return lo, hi

    def to_free(self, x: jax.Array) -> jax.Array:
        """The free coordinates of a point inside: a vector of reals."""
        if self.simplex:
            return jnp.log(x) - jnp.log1p(-jnp.sum(x))
        lo, hi = self._bounds(x)
        lo_ok, hi_ok = jnp.isfinite(lo), jnp.isfinite(hi)
        safe_lo, safe_hi = jnp.where(lo_ok, lo, 0.0), jnp.where(hi_ok, hi, 1.0)
        box = jnp.log(x - safe_lo) - jnp.log(safe_hi - x)
        return jnp.where(
            lo_ok & hi_ok,
            box,
            jnp.where(lo_ok, jnp.log(x - safe_lo), jnp.where(hi_ok, -jnp.log(safe_hi - x), x)),
        )

    def from_free(self, u: jax.Array) -> jax.Array:
        """The point inside whose free coordinates are ``u``."""
        if self.simplex:
            return jax.nn.softmax(jnp.concatenate([u, jnp.zeros((1,), u.dtype)]))[:-1]
        lo, hi = self._bounds(u)
        lo_ok, hi_ok = jnp.isfinite(lo), jnp.isfinite(hi)
        safe_lo, safe_hi = jnp.where(lo_ok, lo, 0.0), jnp.where(hi_ok, hi, 1.0)
        box = safe_lo + (safe_hi - safe_lo) * jax.nn.sigmoid(u)
        return jnp.where(
            lo_ok & hi_ok,
            box,
            jnp.where(lo_ok, safe_lo + jnp.exp(u), jnp.where(hi_ok, safe_hi - jnp.exp(-u), u)),
        )


def target_domain(target: Target, domain: Domain | None) -> Domain | None:
    """``domain`` if given, else the domain that ``target.nonsmooth`` declares (an indicator's
    set), else none."""
    if domain is not None:
        return domain
    declared = getattr(target.nonsmooth, "domain", None)
    return declared() if callable(declared) else None


def check_usable_at_init(target: Target, value, gradient_finite) -> None:
    """Raises unless ``value``, the log density at ``target.init``, is finite and
    ``gradient_finite`` is true.

    Raises:
      ValueError: naming what is not finite and the position.
    """
    value, gradient_finite = jax.device_get((value, gradient_finite))
    if not np.isfinite(value) or not gradient_finite:
        position = {name: np.asarray(v).tolist() for name, v in named_sites(target.init).items()}
        what = (
            f"log density is {value}" if not np.isfinite(value) else "its gradient is not finite"
        )
        raise ValueError(
            f"the log density is not usable at the initial position: {what} at {position}. "
            "Give an init where the density is positive and smooth."
        )


def check_init(target: Target, init: ArrayLikeTree, num_chains: int, domain: Domain | None = None):
    """The user's starts, one per chain, checked: the target's structure and shapes, a
    finite log density and gradient, and inside ``domain`` (the kernel's, or the one
    ``target.nonsmooth`` declares) where there is one. Runs eagerly, before any compiling.

    Raises:
      ValueError: naming ``init`` and the chains that fail.
    """
    init = jax.tree.map(jnp.asarray, init)
    if jax.tree.structure(init) != jax.tree.structure(target.init):
        raise ValueError(
            f"init: structure {jax.tree.structure(init)} does not match the target's "
            f"{jax.tree.structure(target.init)}"
        )
    for given, example in zip(jax.tree.leaves(init), jax.tree.leaves(target.init), strict=True):
        want = (num_chains, *jnp.shape(example))
        if given.shape != want:
            raise ValueError(f"init: a leaf has shape {given.shape}, expected {want}")
    init = jax.tree.map(lambda g, e: g.astype(jnp.result_type(e)), init, target.init)
    domain = target_domain(target, domain)
    if domain is not None:
        inside = np.asarray(jax.vmap(domain.contains)(init))
        outside = np.flatnonzero(~inside)
        if outside.size:
            raise ValueError(
                f"init: chains {outside.tolist()} start outside the kernel's domain "
                f"({domain.describe()}); give starts inside it, or leave init out for "
                "starts drawn inside it"
            )
    values, grads = jax.vmap(target.logdensity_and_grad)(init)
    finite = np.isfinite(np.asarray(values))
    for leaf in jax.tree.leaves(grads):
        finite &= np.isfinite(np.asarray(leaf)).reshape(num_chains, -1).all(axis=1)
    bad = np.flatnonzero(~finite)
    if bad.size:
        raise ValueError(
            f"init: the log density or its gradient is not finite for chains {bad.tolist()}"
        )
    return init


MAX_START_TRIES = 100
"""Draws per chain for a start where the log density and its gradient are finite, as
NumPyro's initialisation tries; a chain that finds none starts at ``target.init``."""


@functools.partial(jax.jit, static_argnames=("num_chains", "domain"))
def jittered_positions(
    target: Target, rng_key: PRNGKey, num_chains: int, domain: Domain | None = None
):
    """Each chain's start: uniform within ``INIT_RADIUS`` of ``target.init`` in every
    coordinate, drawn again (up to ``MAX_START_TRIES`` times) where the log density or its
    gradient is not finite.

    With a domain (``domain``, the kernel's, or the one ``target.nonsmooth`` declares) the
    jitter is in its free coordinates, around ``target.init`` when that lies inside, else
    around the point whose free coordinates are 0 (the box's centre, the simplex's
    barycentre), so that every start lies inside it."""
    return starts_and_init_check(target, rng_key, num_chains, domain)[0]


def starts_and_init_check(
    target: Target,
    rng_key: PRNGKey,
    num_chains: int,
    domain: Domain | None = None,
    state_of=None,
):
    """``jittered_positions``, traced (call it inside a jitted function), with the log
    density at ``target.init`` and whether its gradient is finite there, computed in the
    same evaluations: ``(positions, (value, gradient_finite))``, for
    ``check_usable_at_init``.

    With ``state_of`` (a function from a batch of positions to a batch of chain states), the
    chains' states at their starts instead of the positions: each candidate's state is
    computed beside its check, where XLA finds the kernel's own evaluation of the density and
    its gradient to be the check's and computes it once."""
    domain = target_domain(target, domain)
    if domain is not None:
        positions, at_init = _jittered_in_domain(target, rng_key, num_chains, domain)
        return (positions if state_of is None else state_of(positions)), at_init
    leaves, treedef = jax.tree.flatten(target.init)

    def draw(key):
        keys = jax.random.split(key, len(leaves))
        return treedef.unflatten(
            [
                leaf[None]
                + jax.random.uniform(
                    k, (num_chains, *leaf.shape), leaf.dtype, -INIT_RADIUS, INIT_RADIUS
                )
                for leaf, k in zip(leaves, keys, strict=True)
            ]
        )

    return _redraw_unusable(target, rng_key, num_chains, draw, state_of=state_of)


def _jittered_in_domain(target: Target, rng_key: PRNGKey, num_chains: int, domain: Domain):
    init = jnp.asarray(target.init)
    inside = domain.contains(init)
    safe = jnp.where(inside, init, domain.from_free(jnp.zeros_like(init)))
    centre = jnp.where(inside, domain.to_free(safe), 0.0)

    def draw(key):
        jitter = jax.random.uniform(
            key, (num_chains, *centre.shape), centre.dtype, -INIT_RADIUS, INIT_RADIUS
        )
        return jax.vmap(domain.from_free)(centre[None] + jitter)

    return _redraw_unusable(target, rng_key, num_chains, draw, domain, domain.from_free(centre))


def _redraw_unusable(
    target: Target,
    rng_key: PRNGKey,
    num_chains: int,
    draw,
    domain=None,
    fallback=None,
    state_of=None,
):
    """``draw(key)``'s starts, drawn again where unusable; a chain that finds no usable
    start starts at ``fallback`` (``target.init`` unless given). Also the log density at
    ``target.init`` and whether its gradient is finite there. With ``state_of`` (only
    without a ``fallback``), the states at the starts instead of the starts."""

    def with_init(positions):
        # target.init rides along as one more point: the log density and its gradient
        # appear once in the program, however many things it checks.
        return jax.tree.map(
            lambda leaf, at: jnp.concatenate([leaf, at[None].astype(leaf.dtype)]),
            positions,
            target.init,
        )

    def usable(points):
        values, grads = jax.vmap(target.logdensity_and_grad)(points)
        finite = jnp.isfinite(values)
        for leaf in jax.tree.leaves(grads):
            finite &= jnp.isfinite(leaf).reshape(num_chains + 1, -1).all(axis=1)
        ok = finite[:num_chains]
        if domain is not None:
            ok &= jax.vmap(domain.contains)(jax.tree.map(lambda leaf: leaf[:num_chains], points))
        return ok, (values[num_chains], finite[num_chains])

    def choose(keep, kept, other):
        return jax.tree.map(
            lambda a, b: jnp.where(keep.reshape((-1,) + (1,) * (a.ndim - 1)), a, b), kept, other
        )

    def candidates_of(points):
        # What the search keeps for each chain: the start, or the chain state there (whose
        # last row, at target.init, is every unlucky chain's fallback).
        return points if state_of is None else state_of(points)

    def redraw(carry):
        tries, kept, ok, _ = carry
        key = jax.lax.cond(tries == 0, lambda: rng_key, lambda: jax.random.fold_in(rng_key, tries))
        points = with_init(draw(key))
        found = candidates_of(points)
        kept = choose(jnp.concatenate([ok, jnp.zeros(1, bool)]), kept, found)
        points_ok, at_init = usable(points)
        return tries + 1, kept, ok | points_ok, at_init

    first_points = jax.eval_shape(lambda: with_init(draw(rng_key)))
    empty = jax.tree.map(
        lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(candidates_of, first_points)
    )
    value = jax.eval_shape(target.logdensity, target.init)
    nothing_yet = (
        jnp.int32(0),
        empty,
        jnp.zeros(num_chains, dtype=bool),
        (jnp.zeros(value.shape, value.dtype), jnp.bool_(False)),
    )
    _, kept, ok, at_init = jax.lax.while_loop(
        lambda carry: (carry[0] < MAX_START_TRIES) & ~jnp.all(carry[2]), redraw, nothing_yet
    )
    if fallback is None:
        # The last row was computed at target.init on the last try.
        at_fallback = jax.tree.map(
            lambda leaf: jnp.broadcast_to(leaf[num_chains], (num_chains, *leaf.shape[1:])), kept
        )
    else:
        at_fallback = jax.tree.map(
            lambda leaf: jnp.broadcast_to(leaf, (num_chains, *leaf.shape)), fallback
        )
    chosen = jax.tree.map(lambda leaf: leaf[:num_chains], kept)
    return choose(ok, chosen, at_fallback), at_init


__all__ = [
    "INIT_RADIUS",
    "Domain",
    "MAX_START_TRIES",
    "check_init",
    "check_usable_at_init",
    "jittered_positions",
    "starts_and_init_check",
    "target_domain",
]
