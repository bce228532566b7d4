"""The compiled programs of ``inferax.sample``'s chain runner, every chain in each.

A kernel whose warmup is given in parts (``WarmupAlgorithm.stepwise``: the HMC family with
window adaptation, and every burn-in) runs warmup and sampling in one chunk program,
``chain_chunk``, that holds a single kernel step: whether a step adapts is a comparison of
its index with ``num_warmup`` at run time, so the same program serves both phases and the
kernel compiles once. Other kernels run ``warmup_chunk`` then ``sampling_chunk``. Step
``t`` splits ``fold_in(run_key, t)`` into one key per chain, so the draws do not depend on
the chunk size, nor on which of the two paths ran them.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from inferax.chain_starts import starts_and_init_check
from inferax.compile_cache import runs_once
from inferax.sharding import map_chains
from inferax.target import Target
from inferax.typing import PRNGKey


def chain_keys(run_key: PRNGKey, step_index, num_chains: int):
    """Step ``step_index``'s key for each chain."""
    return jax.random.split(jax.random.fold_in(run_key, step_index), num_chains)


def strong(tree):
    """``tree`` with every leaf strongly typed."""
    # A loop's carry comes out strongly typed where it went in weakly typed: states are
    # made strong up front, so that every chunk's arguments have the types of the first.
    return jax.tree.map(lambda leaf: jax.lax.convert_element_type(leaf, leaf.dtype), tree)


@runs_once
@functools.partial(jax.jit, static_argnames=("kernel", "mesh"))
def warmup_init(target: Target, positions, kernel, mesh):
    """Every chain's warmup state at ``positions``."""
    return strong(map_chains(kernel.warmup_algorithm(target).init, mesh)(positions))


@runs_once
@functools.partial(jax.jit, static_argnames=("kernel", "mesh", "num_chains", "domain"))
def start(target: Target, init_key: PRNGKey, kernel, mesh, num_chains, domain):
    """``jittered_positions`` and ``warmup_init`` in one program, with the log density at
    ``target.init`` and whether its gradient is finite there:
    ``(warmup_state, (value, gradient_finite))``."""
    algorithm = kernel.warmup_algorithm(target)
    if mesh is not None or not algorithm.stepwise:
        # Chains over devices, or a warmup whose initial state may reach across chains
        # (MEADS's folds): the states of the chosen starts, in the chains' own layout.
        positions, at_init = starts_and_init_check(target, init_key, num_chains, domain)
        return warmup_init(target, positions, kernel=kernel, mesh=mesh), at_init
    # Each candidate's warmup state beside its check: the kernel's initial state and the
    # check evaluate the same density and gradient there, which XLA then computes once.
    init = jax.vmap(algorithm.init)
    states, at_init = starts_and_init_check(target, init_key, num_chains, domain, init)
    return strong(states), at_init


@runs_once
@functools.partial(jax.jit, static_argnames=("kernel", "mesh"))
def warmup_final(target: Target, warmup_state, kernel, mesh):
    """The end of warmup: ``(states, tuned)``, strongly typed."""
    states, tuned = map_chains(kernel.warmup_algorithm(target).final, mesh)(warmup_state)
    return strong(states), strong(tuned)


@functools.partial(jax.jit, static_argnames=("kernel", "thinning", "num_draws", "mesh"))
def chain_chunk(
    target: Target,
    warmup_state,
    tuned,
    run_key,
    first,
    count,
    num_warmup,
    entries,
    kernel,
    thinning,
    num_draws,
    mesh,
):
    """Steps ``first`` to ``first + count`` of the run, ``count`` set at run time: a step
    whose index is below ``num_warmup`` adapts (with the row of ``entries`` at its offset in
    the chunk), a later one samples with ``tuned`` and keeps every ``thinning``-th draw
    into buffers of ``num_draws`` rows. A sampling chunk starts at a kept draw's first step.

    Returns ``(warmup_state, (draws, stats))``, the buffers draw-major (a row holds one draw
    of every chain, so the host copies only the rows a chunk filled); the chains' states are
    ``warmup_state.chain``.
    """
    algorithm = kernel.warmup_algorithm(target)
    num_chains = jax.tree.leaves(warmup_state)[0].shape[0]

    def keep_state(step_key, warmup_state, entry):
        return warmup_state, step_key

    def record(warmup_state, chain, info, entry):
        return warmup_state._replace(chain=chain)

    def chain_step(key, warmup_state, chain_tuned, entry, adapting):
        warmup_state, step_key = jax.lax.cond(
            adapting, algorithm.prepare, keep_state, key, warmup_state, entry
        )
        current = algorithm.parameters(warmup_state)
        parameters = jax.tree.map(
            lambda now, final: jnp.where(adapting, now.astype(final.dtype), final),
            current,
            chain_tuned,
        )
        chain, info = kernel.build(target, **parameters).step(step_key, warmup_state.chain)
        warmup_state = jax.lax.cond(
            adapting,
            lambda *args: strong(algorithm.adapt(*args)),
            record,
            warmup_state,
            chain,
            info,
            entry,
        )
        return warmup_state, kernel.sample_stats(chain, info, parameters)

    # Jitted, so that the step traced for its output shapes below is traced once, not again
    # in the loop.
    step = jax.jit(map_chains(chain_step, mesh, in_axes=(0, 0, 0, None, None)))
    last_entry = entries.shape[0] - 1

    def one_step(offset, carry):
        warmup_state, buffers, diverging = carry
        index = first + offset
        adapting = index < num_warmup
        keys = chain_keys(run_key, index, num_chains)
        entry = entries[jnp.minimum(offset, last_entry)]
        warmup_state, stats = step(keys, warmup_state, tuned, entry, adapting)
        keep = ~adapting
        if thinning > 1:
            within = (index - num_warmup) % thinning
            keep &= within == thinning - 1
            if "diverging" in stats:
                # A kept draw counts a divergence in any of the steps thinned away before it.
                diverging = jnp.where(
                    within == 0, stats["diverging"], diverging | stats["diverging"]
                )
                stats = {**stats, "diverging": diverging}

        def draw():
            return jax.vmap(target.constrain)(warmup_state.chain.position), stats

        out = jax.lax.cond(keep, draw, lambda: jax.tree.map(jnp.zeros_like, out_shapes))
        row = jnp.where(keep, offset // thinning, num_draws)
        buffers = jax.tree.map(
            lambda buffer, value: buffer.at[row].set(value, mode="drop"), buffers, out
        )
        return warmup_state, buffers, diverging

    keys = chain_keys(run_key, first, num_chains)
    stats_shapes = jax.eval_shape(step, keys, warmup_state, tuned, entries[0], jnp.bool_(True))[1]
    positions = warmup_state.chain.position
    out_shapes = (jax.eval_shape(jax.vmap(target.constrain), positions), stats_shapes)
    buffers = jax.tree.map(lambda s: jnp.zeros((num_draws, *s.shape), s.dtype), out_shapes)
    no_divergence = jnp.zeros(num_chains, dtype=bool)
    warmup_state, buffers, _ = jax.lax.fori_loop(
        0, count, one_step, (warmup_state, buffers, no_divergence)
    )
    return warmup_state, buffers


@functools.partial(jax.jit, static_argnames=("kernel", "mesh"))
def warmup_chunk(target: Target, warmup_state, run_key, first, count, entries, kernel, mesh):
    """``count`` warmup steps from step ``first`` (a kernel whose warmup is not stepwise)."""
    algorithm = kernel.warmup_algorithm(target)
    num_chains = jax.tree.leaves(warmup_state)[0].shape[0]
    # vmap over each device's chains (named: cross-chain warmups gather over it).
    step = map_chains(algorithm.step, mesh, in_axes=(0, 0, None))

    def one_step(offset, state):
        return step(chain_keys(run_key, first + offset, num_chains), state, entries[offset])

    return jax.lax.fori_loop(0, count, one_step, warmup_state)


@functools.partial(jax.jit, static_argnames=("kernel", "thinning", "num_draws", "mesh"))
def sampling_chunk(
    target: Target, tuned, states, run_key, first, count, kernel, thinning, num_draws, mesh
):
    """``count`` draws (``count <= num_draws``, set at run time) into draw-major buffers of
    ``num_draws`` rows: ``(states, (draws, stats))`` (a kernel whose warmup is not
    stepwise)."""
    num_chains = jax.tree.leaves(states)[0].shape[0]

    def chain_step(key, state, chain_tuned):
        new_state, info = kernel.build(target, **chain_tuned).step(key, state)
        return new_state, kernel.sample_stats(new_state, info, chain_tuned)

    step = map_chains(chain_step, mesh)

    def one_draw(states, draw_index):
        first_step = first + draw_index * thinning
        if thinning == 1:
            states, stats = step(chain_keys(run_key, first_step, num_chains), states, tuned)
            return states, (jax.vmap(target.constrain)(states.position), stats)

        def one_step(carry, step_index):
            states, diverging = carry
            states, stats = step(chain_keys(run_key, step_index, num_chains), states, tuned)
            if "diverging" in stats:
                diverging = diverging | stats["diverging"]
            return (states, diverging), stats

        step_indices = first_step + jnp.arange(thinning, dtype=jnp.int32)
        no_divergence = jnp.zeros(num_chains, dtype=bool)
        (states, diverging), stats = jax.lax.scan(one_step, (states, no_divergence), step_indices)
        # A kept draw reports its own step, except that it counts a divergence in any of
        # the steps thinned away before it.
        stats = jax.tree.map(lambda s: s[-1], stats)
        if "diverging" in stats:
            stats["diverging"] = diverging
        return states, (jax.vmap(target.constrain)(states.position), stats)

    out_shapes = jax.eval_shape(one_draw, states, jnp.int32(0))[1]
    buffers = jax.tree.map(lambda s: jnp.zeros((num_draws, *s.shape), s.dtype), out_shapes)

    def record(draw_index, carry):
        states, buffers = carry
        states, out = one_draw(states, draw_index)
        buffers = jax.tree.map(
            lambda buffer, value: buffer.at[draw_index].set(value), buffers, out
        )
        return states, buffers

    return jax.lax.fori_loop(0, count, record, (states, buffers))


__all__ = [
    "chain_chunk",
    "chain_keys",
    "sampling_chunk",
    "start",
    "strong",
    "warmup_chunk",
    "warmup_final",
    "warmup_init",
]
