"""Where chains start: the user's positions checked, or jittered draws around
``target.init`` where the log density and its gradient are finite."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from inferax.compile_cache import compiled
from inferax.target import Target, named_sites
from inferax.typing import ArrayLikeTree, PRNGKey

INIT_RADIUS = 2.0
"""Chains start uniformly within this distance of ``target.init`` in each unconstrained
coordinate, as Stan's and NumPyro's defaults do."""


def check_logdensity_at_init(target: Target) -> None:
    """The log density and its gradient must be finite at ``target.init``."""
    program, _ = compiled(target, _logdensity_and_grad, {}, target)
    value, grad = jax.device_get(program(target))
    finite_grad = all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(grad))
    if not np.isfinite(value) or not finite_grad:
        position = {name: np.asarray(v).tolist() for name, v in named_sites(target.init).items()}
        what = (
            f"log density is {value}" if not np.isfinite(value) else "its gradient is not finite"
        )
        raise ValueError(
            f"the log density is not usable at the initial position: {what} at {position}. "
            "Give an init where the density is positive and smooth."
        )


def check_init(target: Target, init: ArrayLikeTree, num_chains: int):
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


@jax.jit
def _logdensity_and_grad(target: Target):
    return target.logdensity_and_grad(target.init)


MAX_START_TRIES = 100
"""Draws per chain for a start where the log density and its gradient are finite, as
NumPyro's initialisation tries; a chain that finds none starts at ``target.init``."""


@functools.partial(jax.jit, static_argnames=("num_chains",))
def jittered_positions(target: Target, rng_key: PRNGKey, num_chains: int):
    """Each chain's start: uniform within ``INIT_RADIUS`` of ``target.init`` in every
    coordinate, drawn again (up to ``MAX_START_TRIES`` times) where the log density or its
    gradient is not finite."""
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

    def usable(positions):
        values, grads = jax.vmap(target.logdensity_and_grad)(positions)
        finite = jnp.isfinite(values)
        for leaf in jax.tree.leaves(grads):
            finite &= jnp.isfinite(leaf).reshape(num_chains, -1).all(axis=1)
        return finite

    def choose(keep, kept, other):
        return jax.tree.map(
            lambda a, b: jnp.where(keep.reshape((-1,) + (1,) * (a.ndim - 1)), a, b), kept, other
        )

    def redraw(carry):
        tries, positions, ok = carry
        candidates = draw(jax.random.fold_in(rng_key, tries))
        positions = choose(ok, positions, candidates)
        return tries + 1, positions, ok | usable(candidates)

    first = draw(rng_key)
    _, positions, ok = jax.lax.while_loop(
        lambda carry: (carry[0] < MAX_START_TRIES) & ~jnp.all(carry[2]),
        redraw,
        (jnp.int32(1), first, usable(first)),
    )
    at_init = jax.tree.map(
        lambda leaf: jnp.broadcast_to(leaf, (num_chains, *leaf.shape)), target.init
    )
    return choose(ok, positions, at_init)


__all__ = [
    "INIT_RADIUS",
    "MAX_START_TRIES",
    "check_init",
    "check_logdensity_at_init",
    "jittered_positions",
]
