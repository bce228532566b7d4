"""The host loop of ``inferax.sample``: every chain in one compiled program, warmup chunks
then sampling chunks, with the progress bar and checkpoints between them.

Step ``t`` splits ``fold_in(run_key, t)`` into one key per chain, so the draws do not
depend on the chunk size. A chunk program loops over a step count given at run time into
buffers of a fixed length, so one program serves every chunk of a phase, whatever its
length; every program a run needs is compiled ahead, side by side, before the first runs.
"""

from __future__ import annotations

import functools
import time
import warnings
import weakref

import jax
import jax.numpy as jnp
import numpy as np

from inferax.chain_starts import jittered_positions
from inferax.checkpoint import SavedPoint
from inferax.chunking import ChunkSizer, buffer_length
from inferax.compile_cache import compile_ahead, compiled
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
        self.domain = kernel.domain(target)
        self.timing = {"compile": 0.0, "warmup": 0.0, "sampling": 0.0}
        self.draw_files: list[str] = []
        self.sizer = ChunkSizer(settings.chunk_size)
        self.warmup_length = buffer_length(settings.chunk_size, settings.num_warmup)
        self.sampling_length = buffer_length(
            settings.chunk_size,
            settings.num_samples,
            bytes_per_step=_bytes_per_draw(target, settings.num_chains),
        )

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

    def shapes(self):
        """The shapes of the chains' positions, of the warmup state and of
        ``(states, tuned)``, traced without compiling (once per target, kernel and number
        of chains)."""
        memo = _shapes_memo.setdefault(self.target, {})
        key = (self.kernel, self.settings.num_chains, self.mesh)
        if key not in memo:
            memo[key] = self._trace_shapes()
        return memo[key]

    def _trace_shapes(self):
        positions = jax.tree.map(
            lambda leaf: jax.ShapeDtypeStruct((self.settings.num_chains, *leaf.shape), leaf.dtype),
            self.target.init,
        )
        static = {"kernel": self.kernel, "mesh": self.mesh}
        warmup = jax.eval_shape(functools.partial(_warmup_init, **static), self.target, positions)
        sampling = jax.eval_shape(functools.partial(_warmup_final, **static), self.target, warmup)
        return positions, warmup, sampling

    def structures(self):
        """The pytree structures of the warmup state and of ``(states, tuned)``."""
        _, warmup, sampling = self.shapes()
        return jax.tree.structure(warmup), jax.tree.structure(sampling)

    def compile_ahead(self, phase: str, need_positions: bool) -> None:
        """Starts compiling, side by side, every program this run will call from ``phase``
        on: the two big ones (the warmup and the sampling chunk) first. Chains laid out
        over devices compile when first called, for the shardings of their arguments."""
        target, settings = self.target, self.settings
        if self.mesh is not None:
            return
        started = time.perf_counter()
        submitted = False
        positions, warmup_state, (states, tuned) = self.shapes()
        key = self.run_key
        step = jax.ShapeDtypeStruct((), jnp.int32)
        if phase == "warmup" and settings.num_warmup:
            entries = self.schedule_entries(0, 0)
            chunk_args = (target, warmup_state, key, step, step, entries)
            submitted |= compile_ahead(target, _warmup_chunk, self.static(), *chunk_args)
        static = self.static(thinning=settings.thinning, num_draws=self.sampling_length)
        submitted |= compile_ahead(
            target, _sampling_chunk, static, target, tuned, states, key, step, step
        )
        if phase == "warmup":
            if need_positions:
                starts = {"num_chains": settings.num_chains, "domain": self.domain}
                submitted |= compile_ahead(
                    target, jittered_positions, starts, target, self.init_key
                )
            for jitted, args in ((_warmup_init, positions), (_warmup_final, warmup_state)):
                submitted |= compile_ahead(target, jitted, self.static(), target, args)
        if submitted:
            self.timing["compile"] += time.perf_counter() - started

    def static(self, **settings) -> dict:
        """The static arguments of this run's programs: the kernel, the mesh, and
        ``settings``."""
        return {"kernel": self.kernel, "mesh": self.mesh, **settings}

    def schedule_entries(self, first: int, count: int) -> np.ndarray:
        """The warmup schedule's rows for steps ``first`` to ``first + count``, in a buffer
        of the warmup program's length."""
        schedule = self.kernel.warmup_schedule(self.settings.num_warmup)
        entries = np.zeros((self.warmup_length, schedule.shape[1]), dtype=schedule.dtype)
        entries[:count] = schedule[first : first + count]
        return entries

    def execute(self, saved: SavedPoint | None, positions) -> Posterior:
        target, kernel, settings = self.target, self.kernel, self.settings
        num_warmup, num_samples = settings.num_warmup, settings.num_samples
        draws, stats = [], []
        warmup_next = draw_next = 0
        if saved is not None:
            self.timing = dict(saved.timing)
            self.draw_files = list(saved.draw_files)
            self.compile_ahead(saved.phase, need_positions=False)
            warmup_structure, sampling_structure = self.structures()
            if saved.phase == "warmup":
                warmup_state = shard_chains(warmup_structure.unflatten(saved.leaves), self.mesh)
                warmup_next = saved.next_index
            else:
                states, tuned = shard_chains(sampling_structure.unflatten(saved.leaves), self.mesh)
                warmup_next, draw_next = num_warmup, saved.next_index
                draws, stats = self.store.load_draws(self.draw_files)
        else:
            self.compile_ahead("warmup", need_positions=positions is None)
            if positions is None:
                positions, _ = self.call(
                    jittered_positions,
                    {"num_chains": settings.num_chains, "domain": self.domain},
                    target,
                    self.init_key,
                )
            positions = shard_chains(positions, self.mesh)
            warmup_state, seconds = self.call(_warmup_init, self.static(), target, positions)
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
        target, num_warmup = self.target, self.settings.num_warmup
        static = self.static()
        first, number = first_step, 0
        while first < num_warmup:
            count = self.sizer.next_count(num_warmup - first, self.warmup_length)
            warmup_state, seconds = self.call(
                _warmup_chunk,
                static,
                target,
                warmup_state,
                self.run_key,
                jnp.int32(first),
                jnp.int32(count),
                self.schedule_entries(first, count),
            )
            self.sizer.record(count, seconds)
            self.timing["warmup"] += seconds
            bar.advance(count)
            first, number = first + count, number + 1
            if number % self.checkpoint_every == 0 and first < num_warmup:
                self.save("warmup", first, warmup_state)
        (states, tuned), seconds = self.call(_warmup_final, static, target, warmup_state)
        self.timing["warmup"] += seconds
        self.save("sampling", 0, (states, tuned))
        return states, tuned

    def sampling(self, states, tuned, first_draw, draws, stats, bar):
        target, settings = self.target, self.settings
        num_samples, thinning = settings.num_samples, settings.thinning
        static = self.static(thinning=thinning, num_draws=self.sampling_length)
        unsaved_from, first, number, pending = first_draw, first_draw, 0, 0
        while first < num_samples:
            count = self.sizer.next_count(num_samples - first, self.sampling_length, thinning)
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
            self.sizer.record(count * thinning, seconds)
            self.timing["sampling"] += seconds
            # The buffers hold the program's full length; the chunk filled the first `count`.
            draws.append(jax.tree.map(lambda x, c=count: x[:, :c], tree_to_host(chunk_draws)))
            stats.append(jax.tree.map(lambda x, c=count: x[:, :c], tree_to_host(chunk_stats)))
            bar.advance(count)
            first, number, pending = first + count, number + 1, pending + 1
            if number % self.checkpoint_every == 0 or first == num_samples:
                new_draws = (
                    unsaved_from,
                    first,
                    concatenate_chunks(draws[-pending:]),
                    concatenate_chunks(stats[-pending:]),
                )
                phase = "sampling" if first < num_samples else "done"
                self.save(phase, first, (states, tuned), new_draws)
                unsaved_from, pending = first, 0


_shapes_memo: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _chain_keys(run_key: PRNGKey, step_index, num_chains: int):
    return jax.random.split(jax.random.fold_in(run_key, step_index), num_chains)


def _strong(tree):
    # A loop's carry comes out strongly typed where it went in weakly typed: states are
    # made strong up front, so that every chunk's arguments have the types of the first.
    return jax.tree.map(lambda leaf: jax.lax.convert_element_type(leaf, leaf.dtype), tree)


@functools.partial(jax.jit, static_argnames=("kernel", "mesh"))
def _warmup_init(target: Target, positions, kernel, mesh):
    return _strong(map_chains(kernel.warmup_algorithm(target).init, mesh)(positions))


@functools.partial(jax.jit, static_argnames=("kernel", "mesh"))
def _warmup_chunk(target: Target, warmup_state, run_key, first, count, entries, kernel, mesh):
    algorithm = kernel.warmup_algorithm(target)
    num_chains = jax.tree.leaves(warmup_state)[0].shape[0]
    # vmap over each device's chains (named: cross-chain warmups gather over it).
    step = map_chains(algorithm.step, mesh, in_axes=(0, 0, None))

    def one_step(offset, state):
        return step(_chain_keys(run_key, first + offset, num_chains), state, entries[offset])

    return jax.lax.fori_loop(0, count, one_step, warmup_state)


@functools.partial(jax.jit, static_argnames=("kernel", "mesh"))
def _warmup_final(target: Target, warmup_state, kernel, mesh):
    states, tuned = map_chains(kernel.warmup_algorithm(target).final, mesh)(warmup_state)
    return _strong(states), tuned


@functools.partial(jax.jit, static_argnames=("kernel", "thinning", "num_draws", "mesh"))
def _sampling_chunk(
    target: Target, tuned, states, run_key, first, count, kernel, thinning, num_draws, mesh
):
    """``count`` draws (``count <= num_draws``, set at run time) into buffers of
    ``num_draws``, with a leading chain axis: ``(states, (draws, stats))``."""
    num_chains = jax.tree.leaves(states)[0].shape[0]

    def chain_step(key, state, chain_tuned):
        new_state, info = kernel.build(target, **chain_tuned).step(key, state)
        return new_state, kernel.sample_stats(new_state, info, chain_tuned)

    step = map_chains(chain_step, mesh)

    def one_draw(states, draw_index):
        first_step = first + draw_index * thinning
        if thinning == 1:
            states, stats = step(_chain_keys(run_key, first_step, num_chains), states, tuned)
            return states, (jax.vmap(target.constrain)(states.position), stats)

        def one_step(carry, step_index):
            states, diverging = carry
            states, stats = step(_chain_keys(run_key, step_index, num_chains), states, tuned)
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

    states, buffers = jax.lax.fori_loop(0, count, record, (states, buffers))
    # The loop writes whole rows of a draw-major buffer; a Posterior holds (chain, draw, ...).
    return states, jax.tree.map(functools.partial(jnp.swapaxes, axis1=0, axis2=1), buffers)


def _bytes_per_draw(target: Target, num_chains: int) -> int:
    """The bytes one kept draw of every chain takes in a sampling chunk's buffers."""
    sites = jax.eval_shape(target.constrain, target.init)
    per_chain = sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(sites))
    return num_chains * (per_chain + 8 * 8)


def concatenate_chunks(chunks: list[dict]) -> dict[str, np.ndarray]:
    if not chunks:
        return {}
    return {
        name: np.concatenate([np.asarray(chunk[name]) for chunk in chunks], axis=1)
        for name in chunks[0]
    }


__all__ = ["ChainRunner", "concatenate_chunks"]
