"""The host loop of ``inferax.sample``: every chain in one compiled program, warmup chunks
then sampling chunks, with the progress bar and checkpoints between them.

Step ``t`` splits ``fold_in(run_key, t)`` into one key per chain, so the draws do not
depend on the chunk size. A chunk program loops over a step count given at run time into
buffers of a fixed length, so one program serves every chunk, whatever its length; a kernel
whose warmup is stepwise runs warmup and sampling in the same one (``inferax.chain_programs``).
Every program a run needs is compiled ahead, side by side, before the first runs.
"""

from __future__ import annotations

import time
import warnings
import weakref

import jax
import jax.numpy as jnp
import numpy as np

from inferax.chain_programs import (
    chain_chunk,
    sampling_chunk,
    start,
    warmup_chunk,
    warmup_final,
    warmup_init,
)
from inferax.chain_starts import check_usable_at_init
from inferax.checkpoint import SavedPoint
from inferax.chunking import ChunkSizer, buffer_length
from inferax.compile_cache import compile_ahead, compiled
from inferax.posterior import Posterior
from inferax.progress import ProgressBar, progress_enabled
from inferax.sharding import same_on_every_process, shard_chains, spans_processes, tree_to_host
from inferax.target import Target
from inferax.validation import site_shapes


class ChainRunner:
    """The host loop: warmup chunks, then sampling chunks, saving between them."""

    def __init__(
        self,
        target,
        kernel,
        settings,
        rng_key,
        store,
        checkpoint_every,
        progress,
        mesh=None,
        also_compile=(),
    ):
        self.target, self.kernel, self.settings = target, kernel, settings
        # Programs the caller runs on the draws afterwards, as (jitted, static, *shapes):
        # compiled ahead beside the run's own.
        self.also_compile = also_compile
        self.init_key, self.run_key = jax.random.split(rng_key)
        self.store, self.checkpoint_every = store, checkpoint_every
        self.progress = progress
        self.mesh = mesh  # chains laid out over its "chains" axis, if given
        self.domain = kernel.domain(target)
        self.timing = {"compile": 0.0, "warmup": 0.0, "sampling": 0.0}
        self.draw_files: list[str] = []
        self.sizer = ChunkSizer(settings.chunk_size)
        # Over processes, each picking its chunks from its own step times would run other
        # chunks than the rest, and the gathers of their draws would never pair up.
        self.lockstep = settings.chunk_size is None and spans_processes(mesh, target)
        # One program for warmup and sampling where the warmup comes in parts.
        self.stepwise = kernel.warmup_algorithm(target).stepwise
        self.warmup_length = buffer_length(settings.chunk_size, settings.num_warmup)
        self.sampling_length = buffer_length(
            settings.chunk_size,
            settings.num_samples,
            bytes_per_step=_bytes_per_draw(target, settings.num_chains),
        )

    def next_count(self, remaining: int, length: int, steps_per_item: int = 1) -> int:
        """The next chunk's count (``ChunkSizer.next_count``), process 0's over processes."""
        count = self.sizer.next_count(remaining, length, steps_per_item)
        return same_on_every_process(count) if self.lockstep else count

    def call(self, jitted, static, *args):
        """Runs ``jitted`` on ``args`` and waits for it: ``(result, seconds)``. Callers pass
        step counts as numpy scalars: a ``jnp.int32(...)`` is an operation dispatched on
        its own, a fraction of a millisecond each, every chunk."""
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

    def shapes(self, drawn_starts: bool = False):
        """The shapes of the chains' positions, of the warmup state and of
        ``(states, tuned)``, traced without compiling (once per target, kernel and number
        of chains). ``drawn_starts``: the first call's run draws its starts (the start
        program's trace then gives the warmup state's shapes)."""
        memo = _shapes_memo.setdefault(self.target, {})
        key = (self.kernel, self.settings.num_chains, self.mesh)
        if key not in memo:
            memo[key] = self._trace_shapes(drawn_starts)
        return memo[key]

    def _trace_shapes(self, drawn_starts: bool):
        positions = jax.tree.map(
            lambda leaf: jax.ShapeDtypeStruct((self.settings.num_chains, *leaf.shape), leaf.dtype),
            self.target.init,
        )
        # The jitted functions' own eval_shape: their traces are kept, and compile_ahead's
        # lowering of the start program (or of warmup_init) and of the end of warmup reuse
        # them. Where the start program computes the warmup state itself, warmup_init is
        # never called: its trace would be one more of the kernel's initial state.
        static = {"kernel": self.kernel, "mesh": self.mesh}
        if drawn_starts and self.mesh is None and self.stepwise:
            settings = self.start_settings()
            warmup = start.eval_shape(self.target, self.init_key, **static, **settings)[0]
        else:
            warmup = warmup_init.eval_shape(self.target, positions, **static)
        sampling = warmup_final.eval_shape(self.target, warmup, **static)
        return positions, warmup, sampling

    def structures(self):
        """The pytree structures of the warmup state and of ``(states, tuned)``."""
        _, warmup, sampling = self.shapes()
        return jax.tree.structure(warmup), jax.tree.structure(sampling)

    def compile_ahead(self, phase: str, need_positions: bool) -> None:
        """Starts compiling, side by side, every program this run will call from ``phase``
        on: the start program first, which compiles (or loads from the persistent cache)
        on a free core while the chunk program, the longest to trace and compile, is
        traced; then the chunk program, the end of warmup beside it, and
        ``also_compile``'s beside the run. Chains laid out over devices compile when first
        called, for the shardings of their arguments."""
        target, settings = self.target, self.settings
        if self.mesh is not None:
            return
        started = time.perf_counter()
        submitted = False
        positions, warmup_state, (states, tuned) = self.shapes(drawn_starts=need_positions)
        key = self.run_key
        step = jax.ShapeDtypeStruct((), jnp.int32)
        if phase == "warmup":
            if need_positions:
                submitted |= compile_ahead(
                    target, start, self.static(**self.start_settings()), target, self.init_key
                )
            else:
                submitted |= compile_ahead(target, warmup_init, self.static(), target, positions)
        if self.stepwise:
            submitted |= compile_ahead(
                target,
                chain_chunk,
                self.static(thinning=settings.thinning, num_draws=self.sampling_length),
                target,
                warmup_state,
                tuned,
                key,
                step,
                step,
                step,
                self.schedule_entries(0, 0),
            )
        else:
            if phase == "warmup" and settings.num_warmup:
                chunk_args = (target, warmup_state, key, step, step, self.schedule_entries(0, 0))
                submitted |= compile_ahead(target, warmup_chunk, self.static(), *chunk_args)
            static = self.static(thinning=settings.thinning, num_draws=self.sampling_length)
            submitted |= compile_ahead(
                target, sampling_chunk, static, target, tuned, states, key, step, step
            )
        if phase == "warmup":
            submitted |= compile_ahead(target, warmup_final, self.static(), target, warmup_state)
        for jitted, static, *args in self.also_compile:
            submitted |= compile_ahead(target, jitted, static, *args)
        if submitted:
            self.timing["compile"] += time.perf_counter() - started

    def static(self, **settings) -> dict:
        """The static arguments of this run's programs: the kernel, the mesh, and
        ``settings``."""
        return {"kernel": self.kernel, "mesh": self.mesh, **settings}

    def start_settings(self) -> dict:
        """The static arguments of the start program besides the kernel and the mesh."""
        return {"num_chains": self.settings.num_chains, "domain": self.domain}

    def schedule_entries(self, first: int, count: int) -> np.ndarray:
        """The warmup schedule's rows for steps ``first`` to ``first + count``, in a buffer
        of the warmup program's length."""
        schedule = self.kernel.warmup_schedule(self.settings.num_warmup)
        entries = np.zeros((self.warmup_length, schedule.shape[1]), dtype=schedule.dtype)
        entries[:count] = schedule[first : first + count]
        return entries

    def placeholder(self, shapes, chain=None):
        """Zeros of ``shapes`` laid out as the chains are; a warmup state's ``chain`` field
        is ``chain`` instead, where given. The one-program path carries a warmup state
        while sampling and tuned settings while warming up: these fill the part not used."""
        if chain is not None:
            shapes = shapes._replace(chain=())
        zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
        if chain is not None:
            zeros = zeros._replace(chain=chain)
        return shard_chains(zeros, self.mesh)

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
                (warmup_state, at_init), seconds = self.call(
                    start, self.static(**self.start_settings()), target, self.init_key
                )
                check_usable_at_init(target, *at_init)
            else:
                positions = shard_chains(positions, self.mesh)
                warmup_state, seconds = self.call(warmup_init, self.static(), target, positions)
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
        if self.stepwise:
            one_program = self.static(
                thinning=self.settings.thinning, num_draws=self.sampling_length
            )
            unused_tuned = self.placeholder(self.shapes()[2][1])
        first, number = first_step, 0
        while first < num_warmup:
            count = self.next_count(num_warmup - first, self.warmup_length)
            entries = self.schedule_entries(first, count)
            if self.stepwise:
                (warmup_state, _), seconds = self.call(
                    chain_chunk,
                    one_program,
                    target,
                    warmup_state,
                    unused_tuned,
                    self.run_key,
                    np.int32(first),
                    np.int32(count),
                    np.int32(num_warmup),
                    entries,
                )
            else:
                warmup_state, seconds = self.call(
                    warmup_chunk,
                    static,
                    target,
                    warmup_state,
                    self.run_key,
                    np.int32(first),
                    np.int32(count),
                    entries,
                )
            self.sizer.record(count, seconds)
            self.timing["warmup"] += seconds
            bar.advance(count)
            first, number = first + count, number + 1
            if number % self.checkpoint_every == 0 and first < num_warmup:
                self.save("warmup", first, warmup_state)
        (states, tuned), seconds = self.call(warmup_final, static, target, warmup_state)
        self.timing["warmup"] += seconds
        self.save("sampling", 0, (states, tuned))
        return states, tuned

    def sampling(self, states, tuned, first_draw, draws, stats, bar):
        target, settings = self.target, self.settings
        num_samples, thinning = settings.num_samples, settings.thinning
        static = self.static(thinning=thinning, num_draws=self.sampling_length)
        if self.stepwise:
            # The warmup state's adaptation is not read while sampling (nor saved in a
            # sampling checkpoint): zeros stand in for it.
            warmup_state = self.placeholder(self.shapes()[1], chain=states)
            entries = self.schedule_entries(0, 0)
        unsaved_from, first, number, pending = first_draw, first_draw, 0, 0
        while first < num_samples:
            count = self.next_count(num_samples - first, self.sampling_length, thinning)
            step_offset = settings.num_warmup + first * thinning
            if self.stepwise:
                (warmup_state, (chunk_draws, chunk_stats)), seconds = self.call(
                    chain_chunk,
                    static,
                    target,
                    warmup_state,
                    tuned,
                    self.run_key,
                    np.int32(step_offset),
                    np.int32(count * thinning),
                    np.int32(settings.num_warmup),
                    entries,
                )
                states = warmup_state.chain
            else:
                (states, (chunk_draws, chunk_stats)), seconds = self.call(
                    sampling_chunk,
                    static,
                    target,
                    tuned,
                    states,
                    self.run_key,
                    np.int32(step_offset),
                    np.int32(count),
                )
            self.sizer.record(count * thinning, seconds)
            self.timing["sampling"] += seconds
            # The buffers hold the program's full length; the chunk filled the first `count`.
            draws.append(_filled_rows(chunk_draws, count))
            stats.append(_filled_rows(chunk_stats, count))
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


def _filled_rows(buffers, count: int):
    """The first ``count`` rows of a chunk's draw-major buffers, on the host, as
    ``(chain, draw, ...)`` views: only the rows the chunk filled are copied."""
    return jax.tree.map(lambda x: np.swapaxes(x[:count], 0, 1), tree_to_host(buffers))


def _bytes_per_draw(target: Target, num_chains: int) -> int:
    """The bytes one kept draw of every chain takes in a sampling chunk's buffers."""
    sites = site_shapes(target)
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
