"""The host loop of ``inferax.sample``: every chain in one compiled program, warmup chunks
then sampling chunks, with the progress bar and checkpoints between them.

Step ``t`` splits ``fold_in(run_key, t)`` into one key per chain, so the draws do not
depend on the chunk size.
"""

from __future__ import annotations

import functools
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from inferax.chain_starts import jittered_positions
from inferax.checkpoint import SavedPoint
from inferax.compile_cache import compiled
from inferax.posterior import Posterior
from inferax.progress import ProgressBar, progress_enabled
from inferax.sharding import map_chains, shard_chains, tree_to_host
from inferax.target import Target
from inferax.typing import PRNGKey


class ChainRunner:
    """The host loop: warmup chunks, then sampling chunks, saving between them."""

    def __init__(
        self, target, kernel, settings, rng_key, store, checkpoint_every, progress, mesh=None
    ):
        self.target, self.kernel, self.settings = target, kernel, settings
        self.init_key, self.run_key = jax.random.split(rng_key)
        self.store, self.checkpoint_every = store, checkpoint_every
        self.progress = progress
        self.mesh = mesh  # chains laid out over its "chains" axis, if given
        self.timing = {"compile": 0.0, "warmup": 0.0, "sampling": 0.0}
        self.draw_files: list[str] = []

    def call(self, jitted, static, *args):
        program, seconds = compiled(self.target, jitted, static, *args)
        self.timing["compile"] += seconds
        started = time.perf_counter()
        out = jax.block_until_ready(program(*args))
        return out, time.perf_counter() - started

    def save(self, phase, next_index, tree, new_draws=None) -> None:
        if self.store is None:
            return
        try:
            self.draw_files = self.store.save(
                phase,
                next_index,
                jax.tree.leaves(tree_to_host(tree)),
                self.timing,
                self.draw_files,
                new_draws,
            )
        except OSError as error:
            warnings.warn(
                f"checkpoint: saving to '{self.store.run_dir}' failed ({error}); the run goes "
                "on without checkpoints, and the directory keeps its last good one",
                stacklevel=4,
            )
            self.store = None

    def structures(self):
        """The pytree structures of the warmup state and of ``(states, tuned)``."""
        positions = jax.tree.map(
            lambda leaf: jax.ShapeDtypeStruct((self.settings.num_chains, *leaf.shape), leaf.dtype),
            self.target.init,
        )
        warmup = jax.eval_shape(
            functools.partial(_warmup_init, kernel=self.kernel), self.target, positions
        )
        sampling = jax.eval_shape(
            functools.partial(_warmup_final, kernel=self.kernel), self.target, warmup
        )
        return jax.tree.structure(warmup), jax.tree.structure(sampling)

    def execute(self, saved: SavedPoint | None, positions) -> Posterior:
        target, kernel, settings = self.target, self.kernel, self.settings
        num_warmup, num_samples = settings.num_warmup, settings.num_samples
        draws, stats = [], []
        warmup_next = draw_next = 0
        if saved is not None:
            self.timing = dict(saved.timing)
            self.draw_files = list(saved.draw_files)
            warmup_structure, sampling_structure = self.structures()
            if saved.phase == "warmup":
                warmup_state = shard_chains(warmup_structure.unflatten(saved.leaves), self.mesh)
                warmup_next = saved.next_index
            else:
                states, tuned = shard_chains(sampling_structure.unflatten(saved.leaves), self.mesh)
                warmup_next, draw_next = num_warmup, saved.next_index
                draws, stats = self.store.load_draws(self.draw_files)
        else:
            if positions is None:
                positions, _ = self.call(
                    jittered_positions,
                    {"num_chains": settings.num_chains, "domain": kernel.domain(target)},
                    target,
                    self.init_key,
                )
            positions = shard_chains(positions, self.mesh)
            warmup_state, seconds = self.call(
                _warmup_init, {"kernel": kernel, "mesh": self.mesh}, target, positions
            )
            self.timing["warmup"] += seconds
            self.save("warmup", 0, warmup_state)

        remaining = (num_warmup - warmup_next) + (num_samples - draw_next)
        bar = ProgressBar(remaining, progress_enabled(self.progress), kernel.name)
        try:
            if saved is None or saved.phase == "warmup":
                bar.phase("warmup")
                states, tuned = self.warmup(warmup_state, warmup_next, bar)
            bar.phase("sampling")
            self.sampling(states, tuned, draw_next, draws, stats, bar)
        finally:
            bar.close()

        posterior = Posterior(
            draws=concatenate_chunks(draws),
            stats=concatenate_chunks(stats),
            timing=self.timing,
            observed_data=dict(target.observed_data),
            sampler=repr(kernel),
            num_warmup=num_warmup,
            tuned=tree_to_host(tuned),
        )
        nonfinite = posterior.fault_counts()["nonfinite_draws"]
        if nonfinite:
            sites = {
                name: int((~np.isfinite(values)).reshape(*values.shape[:2], -1).any(-1).sum())
                for name, values in posterior.draws.items()
                if np.issubdtype(values.dtype, np.inexact)
            }
            named = ", ".join(f"{name} in {count}" for name, count in sites.items() if count)
            warnings.warn(
                f"{nonfinite} of {settings.num_chains * num_samples} draws have NaN or "
                f"infinite values ({named}): the model computes a non-finite value there, "
                "such as the log of a negative number in a deterministic site",
                stacklevel=3,
            )
        return posterior

    def warmup(self, warmup_state, first_step, bar):
        target, kernel, settings = self.target, self.kernel, self.settings
        num_warmup, chunk_size = settings.num_warmup, settings.chunk_size
        static = {"kernel": kernel, "mesh": self.mesh}
        schedule = kernel.warmup_schedule(num_warmup)
        for number, first in enumerate(range(first_step, num_warmup, chunk_size), start=1):
            count = min(chunk_size, num_warmup - first)
            entries = np.zeros((chunk_size, schedule.shape[1]), dtype=schedule.dtype)
            entries[:count] = schedule[first : first + count]
            warmup_state, seconds = self.call(
                _warmup_chunk,
                static,
                target,
                warmup_state,
                self.run_key,
                jnp.int32(first),
                jnp.int32(count),
                entries,
            )
            self.timing["warmup"] += seconds
            bar.advance(count)
            if number % self.checkpoint_every == 0 and first + count < num_warmup:
                self.save("warmup", first + count, warmup_state)
        (states, tuned), seconds = self.call(_warmup_final, static, target, warmup_state)
        self.timing["warmup"] += seconds
        self.save("sampling", 0, (states, tuned))
        return states, tuned

    def sampling(self, states, tuned, first_draw, draws, stats, bar):
        target, kernel, settings = self.target, self.kernel, self.settings
        num_samples, chunk_size, thinning = (
            settings.num_samples,
            settings.chunk_size,
            settings.thinning,
        )
        static = {
            "kernel": kernel,
            "thinning": thinning,
            "num_draws": chunk_size,
            "mesh": self.mesh,
        }
        unsaved_from = first_draw
        starts = range(first_draw, num_samples, chunk_size)
        for number, first in enumerate(starts, start=1):
            count = min(chunk_size, num_samples - first)
            step_offset = settings.num_warmup + first * thinning
            (states, (chunk_draws, chunk_stats)), seconds = self.call(
                _sampling_chunk,
                static,
                target,
                tuned,
                states,
                self.run_key,
                jnp.int32(step_offset),
                jnp.int32(count),
            )
            self.timing["sampling"] += seconds
            # The last chunk is padded with skipped steps; keep the real draws.
            draws.append(jax.tree.map(lambda x, c=count: x[:, :c], tree_to_host(chunk_draws)))
            stats.append(jax.tree.map(lambda x, c=count: x[:, :c], tree_to_host(chunk_stats)))
            bar.advance(count)
            done = first + count
            if number % self.checkpoint_every == 0 or done == num_samples:
                pending = len(range(unsaved_from, done, chunk_size))
                new_draws = (
                    unsaved_from,
                    done,
                    concatenate_chunks(draws[-pending:]),
                    concatenate_chunks(stats[-pending:]),
                )
                self.save(
                    "sampling" if done < num_samples else "done", done, (states, tuned), new_draws
                )
                unsaved_from = done


def _chain_keys(run_key: PRNGKey, step_index, num_chains: int):
    return jax.random.split(jax.random.fold_in(run_key, step_index), num_chains)


@functools.partial(jax.jit, static_argnames=("kernel", "mesh"))
def _warmup_init(target: Target, positions, kernel, mesh):
    return map_chains(kernel.warmup_algorithm(target).init, mesh)(positions)


@functools.partial(jax.jit, static_argnames=("kernel", "mesh"))
def _warmup_chunk(target: Target, warmup_state, run_key, first, count, entries, kernel, mesh):
    algorithm = kernel.warmup_algorithm(target)
    num_chains = jax.tree.leaves(warmup_state)[0].shape[0]
    # vmap over each device's chains (named: cross-chain warmups gather over it).
    step = map_chains(algorithm.step, mesh, in_axes=(0, 0, None))

    def one_step(state, xs):
        offset, entry = xs
        keys = _chain_keys(run_key, first + offset, num_chains)
        state = jax.lax.cond(offset < count, lambda s: step(keys, s, entry), lambda s: s, state)
        return state, None

    offsets = jnp.arange(entries.shape[0], dtype=jnp.int32)
    return jax.lax.scan(one_step, warmup_state, (offsets, entries))[0]


@functools.partial(jax.jit, static_argnames=("kernel", "mesh"))
def _warmup_final(target: Target, warmup_state, kernel, mesh):
    return map_chains(kernel.warmup_algorithm(target).final, mesh)(warmup_state)


@functools.partial(jax.jit, static_argnames=("kernel", "thinning", "num_draws", "mesh"))
def _sampling_chunk(
    target: Target, tuned, states, run_key, first, count, kernel, thinning, num_draws, mesh
):
    num_chains = jax.tree.leaves(states)[0].shape[0]

    def chain_step(key, state, chain_tuned):
        new_state, info = kernel.build(target, **chain_tuned).step(key, state)
        return new_state, kernel.sample_stats(new_state, info, chain_tuned)

    step = map_chains(chain_step, mesh)

    def one_step(carry, step_index):
        states, diverging = carry
        states, stats = step(_chain_keys(run_key, step_index, num_chains), states, tuned)
        if "diverging" in stats:
            diverging = diverging | stats["diverging"]
        return (states, diverging), stats

    def thinned_draw(states, draw_index):
        step_indices = first + draw_index * thinning + jnp.arange(thinning, dtype=jnp.int32)
        no_divergence = jnp.zeros(num_chains, dtype=bool)
        (states, diverging), stats = jax.lax.scan(one_step, (states, no_divergence), step_indices)
        # A kept draw reports its own step, except that it counts a divergence in any of
        # the steps thinned away before it.
        stats = jax.tree.map(lambda s: s[-1], stats)
        if "diverging" in stats:
            stats["diverging"] = diverging
        return states, stats

    def skipped_draw(states, draw_index):
        stats = jax.eval_shape(thinned_draw, states, draw_index)[1]
        return states, jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), stats)

    def one_draw(states, draw_index):
        # `count` is the same for every chain, so this cond stays a branch under vmap: the
        # padding at the end of the last chunk costs nothing.
        states, stats = jax.lax.cond(
            draw_index < count, thinned_draw, skipped_draw, states, draw_index
        )
        return states, (jax.vmap(target.constrain)(states.position), stats)

    states, (draws, stats) = jax.lax.scan(one_draw, states, jnp.arange(num_draws, dtype=jnp.int32))
    # scan stacks along a leading draw axis; a Posterior holds (chain, draw, ...).
    to_chain_major = functools.partial(jnp.swapaxes, axis1=0, axis2=1)
    return states, (jax.tree.map(to_chain_major, draws), jax.tree.map(to_chain_major, stats))


def concatenate_chunks(chunks: list[dict]) -> dict[str, np.ndarray]:
    if not chunks:
        return {}
    return {
        name: np.concatenate([np.asarray(chunk[name]) for chunk in chunks], axis=1)
        for name in chunks[0]
    }


__all__ = ["ChainRunner", "concatenate_chunks"]
