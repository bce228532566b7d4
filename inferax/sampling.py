"""``inferax.sample``: every chain in one compiled program, run in compiled chunks."""

from __future__ import annotations

import dataclasses
import functools
import os
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from inferax.checkpoint import CheckpointStore, SavedPoint, decode_kernel, encode_kernel
from inferax.compile_cache import compiled
from inferax.kernel import AbstractKernel
from inferax.fingerprint import compare_fingerprints, target_fingerprint
from inferax.posterior import Posterior
from inferax.predictive import log_likelihood_groups
from inferax.progress import ProgressBar, progress_enabled
from inferax.target import Target, named_sites
from inferax.typing import ArrayLikeTree, PRNGKey
from inferax.validation import check_count, check_key, check_logdensity_shape

INIT_RADIUS = 2.0
"""Chains start uniformly within this distance of ``target.init`` in each unconstrained
coordinate, as Stan's and NumPyro's defaults do."""


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """The settings that shape a run's draws; a checkpoint records them."""

    num_chains: int
    num_warmup: int
    num_samples: int
    thinning: int
    chunk_size: int

    def check(self) -> None:
        check_count("num_chains", self.num_chains, minimum=1)
        check_count("num_warmup", self.num_warmup, minimum=0)
        check_count("num_samples", self.num_samples, minimum=1)
        check_count("thinning", self.thinning, minimum=1)
        check_count("chunk_size", self.chunk_size, minimum=1)


def sample(
    target: Target,
    kernel,
    rng_key: PRNGKey,
    *,
    num_chains: int = 4,
    num_warmup: int = 1000,
    num_samples: int = 1000,
    thinning: int = 1,
    progress: bool | None = None,
    init: ArrayLikeTree | None = None,
    chunk_size: int = 100,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 1,
    log_likelihood: bool | None = None,
    restart_stuck_chains: bool = False,
) -> Posterior:
    """Draws from ``target`` with ``kernel``: warmup, then sampling, all chains at once.

    Chains are a ``vmap`` in one compiled program; steps run in ``lax.scan`` over chunks of
    ``chunk_size`` steps, and the host loop between chunks drives the progress bar and the
    checkpoint. Step ``t`` (warmup steps first) uses ``fold_in(key, t)``, split across
    chains, so the draws do not depend on ``chunk_size``, nor on whether the run was
    interrupted and resumed. Compiled programs are kept per target: a second call with the
    same target, kernel and shapes does not compile again.

    Args:
      target: the log density.
      kernel: a sampler config from ``inferax.samplers``.
      rng_key: the key for everything random here, such as ``jax.random.key(0)``. An int
        seed is refused with a TypeError rather than silently turned into a key.
      num_chains: independent chains.
      num_warmup: warmup steps per chain: adaptation for kernels that tune themselves,
        burn-in for the others. Warmup draws are not kept.
      num_samples: draws kept per chain.
      thinning: steps per kept draw; ``diverging`` counts every step in between.
      progress: show a progress bar. ``None``: only on an interactive terminal, and never
        when the ``CI`` environment variable is set.
      init: starting positions with a leading axis of ``num_chains``. By default each chain
        starts uniformly within 2 of ``target.init`` in every unconstrained coordinate,
        drawn again (up to 100 times) where the log density or its gradient is not finite
        there, and at ``target.init`` itself if no such draw is found.
      chunk_size: steps per compiled chunk.
      checkpoint: a directory to save the run in, after every ``checkpoint_every`` chunks:
        the whole sampler state and the draws so far. ``inferax.resume`` continues it.
      checkpoint_every: chunks between saves.
      log_likelihood: for a NumPyro model, compute the pointwise log likelihood of every
        observation at every draw (the ``log_likelihood`` group that ``az.loo`` reads), in
        one compiled program. ``None``: when it takes at most
        ``inferax.predictive.LOG_LIKELIHOOD_MEMORY_LIMIT`` bytes (a warning gives the size
        otherwise) and the model enumerates no discrete site.
      restart_stuck_chains: a chain that did not move after warmup (every draw the same,
        mean acceptance below 1%, every transition divergent, or a step size below 1e-4 of
        the median over chains) is named in a warning;
        with this set, each such chain is run once more, warmup included, from a fresh
        start within 2 of ``target.init`` drawn with another key, and its draws replace the
        stuck ones. Not with ``checkpoint``.

    Returns:
      A ``Posterior`` with draws of shape ``(chain, draw, ...)``; for a NumPyro model also
      its plates' dims, its constant data and the pointwise log likelihood.

    Raises:
      ValueError: a setting is out of range, the target is refused by the kernel, the log
        density or its gradient is not finite at the initial position, or the checkpoint
        directory cannot hold the run.
      TypeError: the log density is not a scalar, or an argument has the wrong type.

    Examples:
      >>> import jax, jax.numpy as jnp, inferax
      >>> target = inferax.Target.from_logdensity(
      ...     lambda p: -0.5 * (p["a"] ** 2 + jnp.sum(p["b"] ** 2)),
      ...     {"a": 0.0, "b": jnp.zeros(2)})
      >>> post = inferax.sample(target, inferax.samplers.nuts(), jax.random.key(1),
      ...                       num_chains=2, num_warmup=100, num_samples=50, progress=False)
      >>> post.draws["a"].shape, post.draws["b"].shape
      ((2, 50), (2, 50, 2))
    """
    settings = RunSettings(num_chains, num_warmup, num_samples, thinning, chunk_size)
    _check_run_inputs(target, kernel, settings)
    check_count("checkpoint_every", checkpoint_every, minimum=1)
    rng_key = check_key(rng_key)
    if log_likelihood not in (None, True, False):
        raise TypeError(f"log_likelihood must be True, False or None, got {log_likelihood!r}")
    if restart_stuck_chains and checkpoint is not None:
        raise ValueError(
            "restart_stuck_chains: restarted chains are not checkpointed; pass one or the other"
        )
    kernel.check_target(target)
    target = kernel.prepare_target(target)
    check_logdensity_shape(target)
    if init is None:
        _check_logdensity_at_init(target)
        positions = None
    else:
        positions = _check_init(target, init, num_chains)
    store = None
    if checkpoint is not None:
        manifest = {
            "settings": dataclasses.asdict(settings),
            "key": _encode_key(rng_key),
            "kernel": repr(kernel),
            "kernel_pickle": encode_kernel(kernel),
            "fingerprint": target_fingerprint(target),
            "x64": bool(jax.config.jax_enable_x64),
        }
        store = CheckpointStore.create(
            checkpoint, manifest, _expected_bytes(target, kernel, settings)
        )
    run = _Run(target, kernel, settings, rng_key, store, checkpoint_every, progress)
    posterior = run.execute(saved=None, positions=positions)
    if restart_stuck_chains and posterior.stuck_chains():
        posterior = _restarted(posterior, target, kernel, settings, rng_key, progress)
    _warn_stuck_chains(posterior, restarted=restart_stuck_chains)
    return log_likelihood_groups(target, posterior, log_likelihood)


def resume(
    run_dir: str | os.PathLike,
    target: Target,
    kernel=None,
    *,
    rng_key: PRNGKey | None = None,
    progress: bool | None = None,
    checkpoint_every: int = 1,
    log_likelihood: bool | None = None,
    **settings,
) -> Posterior:
    """Continues a run that ``sample(..., checkpoint=run_dir)`` saved, from its last
    complete chunk, warmup included.

    The result equals the uninterrupted run's, bit for bit: step ``t`` uses
    ``fold_in(key, t)`` whichever process runs it. If the newest saved state cannot be
    read (a truncated or corrupt file), resume warns and goes back to the one before.

    Args:
      run_dir: the run's checkpoint directory.
      target: the same target the run was started with; its fingerprint (parameter shapes
        and dtypes, data, observed data, log density at probe points) must match.
      kernel: the run's kernel, needed only when its config could not be saved (one that
        holds a closure); if given, it must equal the saved one.
      rng_key: if given, it must be the run's key.
      progress: show a progress bar (as in ``sample``).
      checkpoint_every: chunks between saves from here on.
      log_likelihood: as in ``sample``.
      **settings: ``num_chains``, ``num_warmup``, ``num_samples``, ``thinning`` or
        ``chunk_size``, if given, must equal the run's.

    Returns:
      The ``Posterior`` of the whole run.

    Raises:
      ValueError: the directory holds no run, or the target, kernel or settings differ
        from the run's; the message says what differs.
    """
    store = CheckpointStore.open(run_dir)
    manifest = store.manifest
    saved_settings = RunSettings(**manifest["settings"])
    unknown = set(settings) - set(manifest["settings"])
    if unknown:
        raise TypeError(f"resume: unknown settings {sorted(unknown)}")
    differences = [
        f"{name}: the run has {manifest['settings'][name]}, got {value}"
        for name, value in settings.items()
        if manifest["settings"][name] != value
    ]
    if kernel is None:
        if manifest["kernel_pickle"] is None:
            raise ValueError(
                f"resume: the run's kernel {manifest['kernel']} could not be saved; pass it"
            )
        kernel = decode_kernel(manifest["kernel_pickle"])
    elif repr(kernel) != manifest["kernel"]:
        differences.append(f"kernel: the run has {manifest['kernel']}, got {kernel!r}")
    if rng_key is not None and _encode_key(check_key(rng_key)) != manifest["key"]:
        differences.append("rng_key: the run was started with another key")
    if bool(jax.config.jax_enable_x64) != manifest["x64"]:
        differences.append(f"jax_enable_x64: the run has {manifest['x64']}")
    _check_run_inputs(target, kernel, saved_settings)
    target = kernel.prepare_target(target)
    differences += compare_fingerprints(manifest["fingerprint"], target_fingerprint(target))
    if differences:
        raise ValueError("resume: refused, this is not the same run: " + "; ".join(differences))
    check_count("checkpoint_every", checkpoint_every, minimum=1)
    rng_key = _decode_key(manifest["key"])
    saved = store.latest()
    run = _Run(target, kernel, saved_settings, rng_key, store, checkpoint_every, progress)
    posterior = run.execute(saved=saved, positions=None)
    _warn_stuck_chains(posterior, restarted=False)
    return log_likelihood_groups(target, posterior, log_likelihood)


RESTART_KEY_TAG = 0x5EED
"""Folded into the run's key for the restart of stuck chains, so they get new draws."""


def _restarted(posterior: Posterior, target, kernel, settings: RunSettings, rng_key, progress):
    """The posterior with its stuck chains run again from fresh starts."""
    stuck = posterior.stuck_chains()
    restart_key = jax.random.fold_in(rng_key, RESTART_KEY_TAG)
    init_key, run_key = jax.random.split(restart_key)
    positions = _jittered_positions(target, init_key, len(stuck))
    settings = dataclasses.replace(settings, num_chains=len(stuck))
    run = _Run(target, kernel, settings, run_key, None, 1, progress)
    again = run.execute(saved=None, positions=positions)

    def splice(old: dict, new: dict) -> dict:
        spliced = {}
        for name, values in old.items():
            values = np.array(values, copy=True)
            values[stuck] = np.asarray(new[name])
            spliced[name] = values
        return spliced

    return dataclasses.replace(
        posterior,
        draws=splice(posterior.draws, again.draws),
        stats=splice(posterior.stats, again.stats),
        tuned=splice(posterior.tuned, again.tuned),
        timing={name: posterior.timing[name] + again.timing[name] for name in posterior.timing},
    )


def _warn_stuck_chains(posterior: Posterior, *, restarted: bool) -> None:
    stuck = posterior.stuck_chains()
    if not stuck:
        return
    lines = []
    for chain in stuck:
        parts = []
        if "step_size" in posterior.stats:
            parts.append(f"step size {float(posterior.stats['step_size'][chain, -1]):.3g}")
        if "acceptance_rate" in posterior.stats:
            acceptance = np.nan_to_num(posterior.stats["acceptance_rate"][chain], nan=0.0)
            parts.append(f"mean acceptance {float(acceptance.mean()):.3f}")
        if "diverging" in posterior.stats:
            diverging = posterior.stats["diverging"][chain]
            parts.append(f"{int(diverging.sum())} of {diverging.size} transitions divergent")
        lines.append(f"chain {chain} ({', '.join(parts)})")
    advice = (
        "it stayed stuck after a restart from a fresh start"
        if restarted
        else "pass restart_stuck_chains=True to run it again from a fresh start"
    )
    warnings.warn(
        f"{len(stuck)} chain(s) did not move after warmup, so their draws do not explore the "
        f"posterior: {'; '.join(lines)}. Where warmup failed, {advice}; where every step "
        "fails, use a smaller step size; or leave the chain(s) out",
        stacklevel=3,
    )


class _Run:
    """The host loop: warmup chunks, then sampling chunks, saving between them."""

    def __init__(self, target, kernel, settings, rng_key, store, checkpoint_every, progress):
        self.target, self.kernel, self.settings = target, kernel, settings
        self.init_key, self.run_key = jax.random.split(rng_key)
        self.store, self.checkpoint_every = store, checkpoint_every
        self.progress = progress
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
                phase, next_index, jax.tree.leaves(jax.device_get(tree)), self.timing,
                self.draw_files, new_draws,
            )  # fmt: skip
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
                warmup_state = warmup_structure.unflatten(saved.leaves)
                warmup_next = saved.next_index
            else:
                states, tuned = sampling_structure.unflatten(saved.leaves)
                warmup_next, draw_next = num_warmup, saved.next_index
                draws, stats = self.store.load_draws(self.draw_files)
        else:
            if positions is None:
                positions, _ = self.call(
                    _jittered_positions, {"num_chains": settings.num_chains},
                    target, self.init_key,
                )  # fmt: skip
            warmup_state, seconds = self.call(_warmup_init, {"kernel": kernel}, target, positions)
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
            draws=_concatenate(draws),
            stats=_concatenate(stats),
            timing=self.timing,
            observed_data=dict(target.observed_data),
            sampler=repr(kernel),
            num_warmup=num_warmup,
            tuned=jax.device_get(tuned),
        )
        nonfinite = posterior.fault_counts()["nonfinite_draws"]
        if nonfinite:
            warnings.warn(
                f"{nonfinite} of {settings.num_chains * num_samples} draws have non-finite "
                "values; the chains left the region where the log density is finite",
                stacklevel=3,
            )
        return posterior

    def warmup(self, warmup_state, first_step, bar):
        target, kernel, settings = self.target, self.kernel, self.settings
        num_warmup, chunk_size = settings.num_warmup, settings.chunk_size
        static = {"kernel": kernel}
        schedule = kernel.warmup_schedule(num_warmup)
        for number, first in enumerate(range(first_step, num_warmup, chunk_size), start=1):
            count = min(chunk_size, num_warmup - first)
            entries = np.zeros((chunk_size, schedule.shape[1]), dtype=schedule.dtype)
            entries[:count] = schedule[first : first + count]
            warmup_state, seconds = self.call(
                _warmup_chunk, static, target, warmup_state, self.run_key,
                jnp.int32(first), jnp.int32(count), entries,
            )  # fmt: skip
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
            settings.num_samples, settings.chunk_size, settings.thinning,
        )  # fmt: skip
        static = {"kernel": kernel, "thinning": thinning, "num_draws": chunk_size}
        unsaved_from = first_draw
        starts = range(first_draw, num_samples, chunk_size)
        for number, first in enumerate(starts, start=1):
            count = min(chunk_size, num_samples - first)
            step_offset = settings.num_warmup + first * thinning
            (states, (chunk_draws, chunk_stats)), seconds = self.call(
                _sampling_chunk, static, target, tuned, states, self.run_key,
                jnp.int32(step_offset), jnp.int32(count),
            )  # fmt: skip
            self.timing["sampling"] += seconds
            # The last chunk is padded with skipped steps; keep the real draws.
            draws.append(jax.tree.map(lambda x, c=count: np.asarray(x)[:, :c], chunk_draws))
            stats.append(jax.tree.map(lambda x, c=count: np.asarray(x)[:, :c], chunk_stats))
            bar.advance(count)
            done = first + count
            if number % self.checkpoint_every == 0 or done == num_samples:
                pending = len(range(unsaved_from, done, chunk_size))
                new_draws = (
                    unsaved_from, done,
                    _concatenate(draws[-pending:]), _concatenate(stats[-pending:]),
                )  # fmt: skip
                self.save("sampling" if done < num_samples else "done", done, (states, tuned),
                          new_draws)  # fmt: skip
                unsaved_from = done


def _check_run_inputs(target, kernel, settings: RunSettings) -> None:
    if not isinstance(target, Target):
        raise TypeError(f"target must be an inferax.Target, got {type(target).__name__}")
    if not isinstance(kernel, AbstractKernel):
        raise TypeError(
            f"kernel must be a sampler from inferax.samplers, got {type(kernel).__name__}"
        )
    settings.check()


def _encode_key(rng_key) -> dict:
    return {
        "impl": str(jax.random.key_impl(rng_key)),
        "data": np.asarray(jax.random.key_data(rng_key)).tolist(),
    }


def _decode_key(encoded: dict):
    return jax.random.wrap_key_data(
        np.asarray(encoded["data"], dtype=np.uint32), impl=encoded["impl"]
    )


def _expected_bytes(target: Target, kernel, settings: RunSettings) -> int:
    sites = jax.eval_shape(target.constrain, target.init)
    per_draw = sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(sites))
    per_draw += 8 * 8  # the sampler statistics
    state = sum(np.size(leaf) * 8 for leaf in jax.tree.leaves(target.init)) * 8
    total = settings.num_chains * (settings.num_samples * per_draw + 3 * state)
    return int(1.1 * total) + 1_000_000


def _check_logdensity_at_init(target: Target) -> None:
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


def _check_init(target: Target, init: ArrayLikeTree, num_chains: int):
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
def _jittered_positions(target: Target, rng_key: PRNGKey, num_chains: int):
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


def _chain_keys(run_key: PRNGKey, step_index, num_chains: int):
    return jax.random.split(jax.random.fold_in(run_key, step_index), num_chains)


@functools.partial(jax.jit, static_argnames=("kernel",))
def _warmup_init(target: Target, positions, kernel):
    return jax.vmap(kernel.warmup_algorithm(target).init)(positions)


@functools.partial(jax.jit, static_argnames=("kernel",))
def _warmup_chunk(target: Target, warmup_state, run_key, first, count, entries, kernel):
    algorithm = kernel.warmup_algorithm(target)
    num_chains = jax.tree.leaves(warmup_state)[0].shape[0]
    step = jax.vmap(algorithm.step, in_axes=(0, 0, None))

    def one_step(state, xs):
        offset, entry = xs
        keys = _chain_keys(run_key, first + offset, num_chains)
        state = jax.lax.cond(offset < count, lambda s: step(keys, s, entry), lambda s: s, state)
        return state, None

    offsets = jnp.arange(entries.shape[0], dtype=jnp.int32)
    return jax.lax.scan(one_step, warmup_state, (offsets, entries))[0]


@functools.partial(jax.jit, static_argnames=("kernel",))
def _warmup_final(target: Target, warmup_state, kernel):
    return jax.vmap(kernel.warmup_algorithm(target).final)(warmup_state)


@functools.partial(jax.jit, static_argnames=("kernel", "thinning", "num_draws"))
def _sampling_chunk(
    target: Target, tuned, states, run_key, first, count, kernel, thinning, num_draws
):
    num_chains = jax.tree.leaves(states)[0].shape[0]

    def chain_step(key, state, chain_tuned):
        new_state, info = kernel.build(target, **chain_tuned).step(key, state)
        return new_state, kernel.sample_stats(new_state, info, chain_tuned)

    step = jax.vmap(chain_step)

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


def _concatenate(chunks: list[dict]) -> dict[str, np.ndarray]:
    if not chunks:
        return {}
    return {
        name: np.concatenate([np.asarray(chunk[name]) for chunk in chunks], axis=1)
        for name in chunks[0]
    }


__all__ = ["RunSettings", "resume", "sample"]
