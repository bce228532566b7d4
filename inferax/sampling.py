"""``inferax.sample``: every chain in one compiled program, run in compiled chunks."""

from __future__ import annotations

import dataclasses
import os
import warnings

import jax
import numpy as np

from inferax.chain_runner import ChainRunner
from inferax.chain_starts import check_init, jittered_positions
from inferax.checkpoint import CheckpointStore, decode_kernel, encode_kernel
from inferax.fingerprint import compare_fingerprints, target_fingerprint
from inferax.kernel import AbstractKernel
from inferax.posterior import Posterior
from inferax.predictions import (
    computes_log_likelihood,
    log_likelihood_groups,
    log_likelihood_program,
)
from inferax.sharding import chain_mesh
from inferax.target import Target
from inferax.typing import ArrayLikeTree, PRNGKey
from inferax.validation import (
    check_count,
    check_key,
    check_logdensity_shape,
    check_target_for_output,
    site_shapes,
)

MAX_STEPS = 2**31 - 1
"""Steps of one run: the step index that keys ``fold_in`` is a 32-bit integer."""


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """The settings that shape a run's draws; a checkpoint records them."""

    num_chains: int
    num_warmup: int
    num_samples: int
    thinning: int
    chunk_size: int | None

    def check(self) -> None:
        check_count("num_chains", self.num_chains, minimum=1)
        check_count("num_warmup", self.num_warmup, minimum=0)
        check_count("num_samples", self.num_samples, minimum=1)
        check_count("thinning", self.thinning, minimum=1)
        steps = self.num_warmup + self.num_samples * self.thinning
        if steps >= MAX_STEPS:
            raise ValueError(
                f"num_warmup + num_samples * thinning is {steps} steps; a run takes fewer than "
                f"{MAX_STEPS} (step indices are 32-bit): run it in parts with checkpoints"
            )
        if self.chunk_size is not None:
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
    chunk_size: int | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 1,
    log_likelihood: bool | None = None,
    restart_stuck_chains: bool = False,
    devices=None,
    mesh=None,
) -> Posterior:
    """Draws from ``target`` with ``kernel``: warmup, then sampling, all chains at once.

    Chains are a ``vmap`` in one compiled program; steps run in compiled chunks, and the
    host loop between chunks drives the progress bar and the checkpoint. The programs a run
    needs compile side by side before the first runs, and JAX's persistent compilation
    cache keeps them on disk for the next process (``inferax.enable_compilation_cache``).
    Step ``t`` (warmup steps first) uses ``fold_in(key, t)``, split across chains, so the
    draws do not depend on ``chunk_size``, nor on whether the run was
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
      chunk_size: steps (kept draws, when sampling) per compiled chunk. ``None``: chosen
        from the step time measured on the first chunks, so that a chunk runs for about a
        fifth of a second (``inferax.chunking``).
      checkpoint: a directory to save the run in, after every ``checkpoint_every`` chunks:
        the whole sampler state and the draws so far. ``inferax.resume`` continues it.
      checkpoint_every: chunks between saves.
      log_likelihood: for a NumPyro model, compute the pointwise log likelihood of every
        observation at every draw (the ``log_likelihood`` group that ``az.loo`` reads), in
        one compiled program. ``None``: when it takes at most
        ``inferax.predictions.LOG_LIKELIHOOD_MEMORY_LIMIT`` bytes (a warning gives the size
        otherwise) and the model enumerates no discrete site.
      restart_stuck_chains: a chain that did not move after warmup (every draw the same,
        mean acceptance below 1%, every transition divergent, or a step size below 1e-4 of
        the median over chains) is named in a warning;
        with this set, each such chain is run once more, warmup included, from a fresh
        start within 2 of ``target.init`` drawn with another key, and its draws replace the
        stuck ones. Not with ``checkpoint``.
      devices: lay the chains out over these devices (``jax.devices()``, which after
        ``inferax.sharding.initialize`` spans every process): still one compiled program,
        each device stepping ``num_chains / len(devices)`` chains, with the same draws as on
        one device for the same key. ``num_chains`` must be a multiple of ``len(devices)``.
      mesh: instead of ``devices``, a ``jax.sharding.Mesh`` with an axis named ``"chains"``
        to lay the chains out along (replicated over its other axes).

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
    chains_mesh = chain_mesh(devices, mesh, num_chains)
    if chains_mesh is not None and isinstance(target, Target) and target.data_on_devices:
        raise ValueError(
            "devices/mesh: the target's data are already laid out over devices (shard_data or "
            "a federated split); lay out either the chains or the data, not both"
        )
    if log_likelihood not in (None, True, False):
        raise TypeError(f"log_likelihood must be True, False or None, got {log_likelihood!r}")
    if restart_stuck_chains and checkpoint is not None:
        raise ValueError(
            "restart_stuck_chains: restarted chains are not checkpointed; pass one or the other"
        )
    check_target_for_output(target)
    kernel.check_target(target)
    target = kernel.prepare_target(target)
    check_logdensity_shape(target)
    expected_bytes = _expected_bytes(target, kernel, settings)
    _check_memory(expected_bytes)
    if init is None:
        positions = None  # the start program draws them, and checks target.init
    else:
        positions = check_init(target, init, num_chains, kernel.domain(target))
    store = None
    if checkpoint is not None:
        manifest = {
            "settings": dataclasses.asdict(settings),
            "key": _encode_key(rng_key),
            "kernel": repr(kernel),
            "kernel_config": encode_kernel(kernel),
            "fingerprint": target_fingerprint(target),
            "x64": bool(jax.config.jax_enable_x64),
        }
        store = CheckpointStore.create(checkpoint, manifest, expected_bytes)
    also_compile = ()
    if computes_log_likelihood(target, num_chains, num_samples, log_likelihood):
        also_compile = (log_likelihood_program(target, num_chains, num_samples),)
    run = ChainRunner(
        target,
        kernel,
        settings,
        rng_key,
        store,
        checkpoint_every,
        progress,
        chains_mesh,
        also_compile,
    )
    try:
        posterior = run.execute(saved=None, positions=positions)
    finally:
        if store is not None:
            store.release()
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
    with CheckpointStore.open(run_dir) as store:
        store.check_manifest()
        manifest = store.manifest
        saved_settings = RunSettings(**manifest["settings"])
        kernel = _same_run(manifest, target, kernel, rng_key, settings)
        _check_run_inputs(target, kernel, saved_settings)
        target = kernel.prepare_target(target)
        check_count("checkpoint_every", checkpoint_every, minimum=1)
        run_key = _decode_key(manifest["key"])
        saved = store.latest()
        run = ChainRunner(
            target, kernel, saved_settings, run_key, store, checkpoint_every, progress
        )
        posterior = run.execute(saved=saved, positions=None)
        _warn_stuck_chains(posterior, restarted=False)
    return log_likelihood_groups(target, posterior, log_likelihood)


def _same_run(manifest: dict, target, kernel, rng_key, settings: dict):
    """The run's kernel, once the target, key and settings are found to be the run's (the
    target first); the kernel is rebuilt from data, never unpickled.

    Raises:
      ValueError: what differs from the run, or a kernel that cannot be rebuilt.
    """
    unknown = set(settings) - set(manifest["settings"])
    if unknown:
        raise TypeError(f"resume: unknown settings {sorted(unknown)}")
    if not isinstance(target, Target):
        raise TypeError(f"target must be an inferax.Target, got {type(target).__name__}")
    differences = compare_fingerprints(manifest["fingerprint"], target_fingerprint(target))
    differences += [
        f"{name}: the run has {manifest['settings'][name]}, got {value}"
        for name, value in settings.items()
        if manifest["settings"][name] != value
    ]
    if rng_key is not None and _encode_key(check_key(rng_key)) != manifest["key"]:
        differences.append("rng_key: the run was started with another key")
    if bool(jax.config.jax_enable_x64) != manifest["x64"]:
        differences.append(f"jax_enable_x64: the run has {manifest['x64']}")
    if kernel is None and not differences:
        if manifest.get("kernel_config") is None:
            raise ValueError(
                f"resume: the run's kernel {manifest['kernel']} holds something that is not "
                "data (a function), so it was not saved; pass it as kernel="
            )
        try:
            kernel = decode_kernel(manifest["kernel_config"])
        except (TypeError, ValueError) as error:
            raise ValueError(f"resume: the run's kernel cannot be rebuilt: {error}") from error
    if kernel is not None and repr(kernel) != manifest["kernel"]:
        differences.append(f"kernel: the run has {manifest['kernel']}, got {kernel!r}")
    if differences:
        raise ValueError("resume: refused, this is not the same run: " + "; ".join(differences))
    return kernel


RESTART_KEY_TAG = 0x5EED
"""Folded into the run's key for the restart of stuck chains, so they get new draws."""


def _restarted(posterior: Posterior, target, kernel, settings: RunSettings, rng_key, progress):
    """The posterior with its stuck chains run again from fresh starts."""
    stuck = posterior.stuck_chains()
    restart_key = jax.random.fold_in(rng_key, RESTART_KEY_TAG)
    init_key, run_key = jax.random.split(restart_key)
    positions = jittered_positions(target, init_key, len(stuck), kernel.domain(target))
    settings = dataclasses.replace(settings, num_chains=len(stuck))
    run = ChainRunner(target, kernel, settings, run_key, None, 1, progress)
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


def _check_memory(expected: int) -> None:
    """Refuses, before compiling, a run whose draws and states will not fit in the memory
    this machine has available (``INFERAX_MEMORY_LIMIT`` bytes, if set, lowers the limit)."""
    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return
    limit = os.environ.get("INFERAX_MEMORY_LIMIT")
    if limit is not None and limit.isdigit():
        available = min(available, int(limit))
    if expected > available:
        raise MemoryError(
            f"this run's draws and states need about {expected / 1e9:.2f} GB and "
            f"{available / 1e9:.2f} GB is available; keep fewer draws (thinning=, "
            "num_samples=, num_chains=) or fewer sites"
        )


def _expected_bytes(target: Target, kernel, settings: RunSettings) -> int:
    sites = site_shapes(target)
    per_draw = sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(sites))
    per_draw += 8 * 8  # the sampler statistics
    state = sum(np.size(leaf) * 8 for leaf in jax.tree.leaves(target.init)) * 8
    total = settings.num_chains * (settings.num_samples * per_draw + 3 * state)
    return int(1.1 * total) + 1_000_000


__all__ = ["RunSettings", "resume", "sample"]
