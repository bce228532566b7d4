"""Chains and data over devices and processes: NUTS on a 100,000 x 50 logistic regression.

Prints one line per figure, each measured side by side in this run:
- (a) 8 chains of NUTS, chains over 2 devices (``sample(..., devices=jax.devices())``)
  against all 8 on one device: the speed-up, and the largest difference between the draws;
- (b) the same target with its data over 2 devices (``target.shard_data()``) against one
  device: the speed-up, and the largest difference between the draws;
- (c) two processes of one device each, joined over gloo (``inferax.sharding.initialize``),
  chains over both: whether the draws equal the one-process two-device run's, and the time
  against one process on one device.

First a ceiling measured without inferax: the same gradient for the same chains in a bare
``shard_map``, chains split and data split, against one device. Times are warmup plus
sampling seconds as ``Posterior.timing`` reports them (compiling excluded), the fastest of
``--repeats`` runs. Each speed-up is printed twice: of the whole run, and of the sampling
phase per lockstep gradient evaluation (``lockstep_gradients``). The layouts sum the
likelihood in different orders, their draws part after a few steps, and so do their NUTS
trajectories: one run can take a fifth more gradients than another, which the whole run's
ratio counts as speed. Run with

    XLA_FLAGS=--xla_force_host_platform_device_count=2 ./dev bench scale

(the script sets the flag itself when it is missing). ``--worker I --port P`` is the
launcher's own call for the two processes of (c).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from typing import NamedTuple

import numpy as np

NUM_DATA, NUM_FEATURES, NUM_CHAINS = 100_000, 50, 8


def make_target():
    import jax.numpy as jnp

    import inferax

    rng = np.random.default_rng(0)
    x = rng.normal(size=(NUM_DATA, NUM_FEATURES)).astype(np.float32)
    w = rng.normal(size=NUM_FEATURES) / np.sqrt(NUM_FEATURES)
    y = (rng.uniform(size=NUM_DATA) < 1 / (1 + np.exp(-x @ w))).astype(np.float32)

    def log_likelihood(weights, batch):
        features, labels = batch
        logits = features @ weights
        return jnp.sum(labels * logits - jnp.logaddexp(0.0, logits))

    return inferax.Target(
        log_prior=lambda weights: -0.5 * jnp.sum(weights**2),
        init=jnp.zeros(NUM_FEATURES),
        log_likelihood=log_likelihood,
        data=(x, y),
    )


class Run(NamedTuple):
    """One layout's figures: the draws, the fastest warmup + sampling seconds and the
    fastest sampling seconds of ``--repeats`` identical runs, and the sampling phase's
    lockstep gradient evaluations (``lockstep_gradients``)."""

    draws: np.ndarray
    seconds: float
    sampling_seconds: float
    lockstep: int


def lockstep_gradients(n_steps, groups: int) -> int:
    """The gradient evaluations that set a run's sampling time: chains stepped together
    (a ``vmap``) wait for the longest trajectory among them at every draw, and chains split
    into ``groups`` over devices wait for the slowest group. ``n_steps`` is the stats'
    ``(chains, draws)`` leapfrog counts; a group is a contiguous block of chains."""
    return int(max(np.max(block, axis=0).sum() for block in np.split(np.asarray(n_steps), groups)))


def run(target, args, groups: int = 1, **layout) -> Run:
    """``Run`` of ``args.repeats`` identical runs, chains in ``groups`` over devices."""
    import jax

    import inferax
    from inferax import samplers

    best, best_sampling, draws = np.inf, np.inf, None
    for _ in range(args.repeats):
        post = inferax.sample(
            target,
            samplers.nuts(),
            jax.random.key(1),
            num_chains=NUM_CHAINS,
            num_warmup=args.warmup,
            num_samples=args.samples,
            progress=False,
            **layout,
        )
        best = min(best, post.timing["warmup"] + post.timing["sampling"])
        best_sampling = min(best_sampling, post.timing["sampling"])
        draws = np.asarray(post.draws["x"])
    return Run(draws, best, best_sampling, lockstep_gradients(post.stats["n_steps"], groups))


def speed_ups(one: Run, other: Run) -> str:
    """The whole run's speed-up, and the sampling phase's per lockstep gradient: the draws
    differ with the order of the floating-point sums, and so do the trajectories, so the
    two runs do not take the same number of gradients."""
    per_gradient = (one.sampling_seconds / one.lockstep) / (
        other.sampling_seconds / other.lockstep
    )
    return (
        f"{other.seconds:.2f} s, speed-up {one.seconds / other.seconds:.2f}x; sampling "
        f"per lockstep gradient {per_gradient:.2f}x ({other.lockstep} lockstep gradients "
        f"against {one.lockstep})"
    )


def bare_jax_speedups(target, devices) -> tuple[float, float]:
    """The ceiling this machine gives, measured without inferax: 50 gradient evaluations of
    the same log density for the same 8 chains in one jitted loop, on one device against
    ``shard_map`` over ``devices`` with (a) the chains split and the data on both, (b) the
    data split and the log likelihood summed with ``psum``. ``(speed-up a, speed-up b)``."""
    import jax
    import jax.numpy as jnp
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    features, labels = (jnp.asarray(leaf) for leaf in target.data)
    mesh = Mesh(np.asarray(devices), ("x",))

    def gradients(weights, features, labels, reduce=lambda total: total):
        def log_density(w):
            logits = features @ w
            total = jnp.sum(labels * logits - jnp.logaddexp(0.0, logits))
            return reduce(total) - 0.5 * jnp.sum(w**2)

        def body(_, weights):
            return weights + 1e-9 * jax.vmap(jax.grad(log_density))(weights)

        return jax.lax.fori_loop(0, 50, body, weights)

    weights = jnp.zeros((NUM_CHAINS, NUM_FEATURES))
    one = jax.jit(gradients)
    chains = jax.jit(
        jax.shard_map(gradients, mesh=mesh, in_specs=(P("x"), P(), P()), out_specs=P("x"))
    )
    data = jax.jit(
        jax.shard_map(
            lambda w, f, y: gradients(w, f, y, lambda t: jax.lax.psum(t, "x")),
            mesh=mesh,
            in_specs=(P(), P("x"), P("x")),
            out_specs=P(),
        )
    )
    split = jax.device_put((features, labels), NamedSharding(mesh, P("x")))

    def seconds(program, *args):
        jax.block_until_ready(program(*args))
        best = np.inf
        for _ in range(3):
            start = time.perf_counter()
            jax.block_until_ready(program(*args))
            best = min(best, time.perf_counter() - start)
        return best

    single = seconds(one, weights, features, labels)
    return single / seconds(chains, weights, features, labels), single / seconds(
        data, weights, *split
    )


def worker(args) -> None:
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import inferax.sharding

    inferax.sharding.initialize(f"127.0.0.1:{args.port}", 2, args.worker, timeout=120)
    import jax

    result = run(make_target(), args, groups=2, devices=jax.devices())
    if jax.process_index() == 0:
        np.savez(args.out, **result._asdict())


def launch_two_processes(args):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = os.path.join(tempfile.mkdtemp(), "two_processes.npz")
    common = ["--port", str(port), "--out", out, "--repeats", str(args.repeats)]
    common += ["--warmup", str(args.warmup), "--samples", str(args.samples)]
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    procs = [
        subprocess.Popen([sys.executable, __file__, "--worker", str(i), *common], env=env)
        for i in range(2)
    ]
    for proc in procs:
        if proc.wait(timeout=3600) != 0:
            raise RuntimeError("a worker of the two-process run failed")
    saved = np.load(out)
    return Run(
        saved["draws"],
        float(saved["seconds"]),
        float(saved["sampling_seconds"]),
        int(saved["lockstep"]),
    )


def main(args) -> None:
    if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
        )
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax

    devices = jax.devices()
    assert len(devices) >= 2, "needs 2 devices: XLA_FLAGS=--xla_force_host_platform_device_count=2"
    devices = devices[:2]
    target = make_target()
    started = time.perf_counter()
    label = (
        f"NUTS, {NUM_CHAINS} chains, {NUM_DATA} x {NUM_FEATURES} logistic regression, "
        f"{args.warmup} + {args.samples} steps, {jax.devices()[0].platform}"
    )
    bare_chains, bare_data = bare_jax_speedups(target, devices)
    print(
        f"scale: bare JAX, the same gradient for the same chains, shard_map over 2 devices: "
        f"chains split {bare_chains:.2f}x, data split {bare_data:.2f}x (this machine's ceiling)",
        flush=True,
    )
    one = run(target, args)
    print(f"scale: {label}; one device {one.seconds:.2f} s", flush=True)
    chains = run(target, args, groups=2, devices=devices)
    print(
        f"scale (a) chains over 2 devices: {speed_ups(one, chains)}, max |draw difference| "
        f"{np.abs(chains.draws - one.draws).max():.2e}",
        flush=True,
    )
    mesh = jax.sharding.Mesh(np.asarray(devices), ("data",))
    data = run(target.shard_data(mesh), args)
    print(
        f"scale (b) data over 2 devices: {speed_ups(one, data)}, max |draw difference| "
        f"{np.abs(data.draws - one.draws).max():.2e}",
        flush=True,
    )
    processes = launch_two_processes(args)
    print(
        f"scale (c) two processes over gloo, chains over their 2 devices, against one "
        f"process on one device: {speed_ups(one, processes)}, draws identical to one "
        f"process with 2 devices: {np.array_equal(processes.draws, chains.draws)}, max "
        f"|draw difference| against one device {np.abs(processes.draws - one.draws).max():.2e}",
        flush=True,
    )
    print(f"scale: whole benchmark {time.perf_counter() - started:.0f} s", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--worker", type=int, default=None)
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--out", default=None)
    arguments = parser.parse_args()
    if arguments.worker is None:
        main(arguments)
    else:
        worker(arguments)
