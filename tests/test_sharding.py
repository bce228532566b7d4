"""Chains and data over devices and processes (``inferax.sharding``): the same draws as on
one device, and clear refusals of layouts that do not fit."""

import os
import pathlib
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh

import inferax
import inferax.sharding
from inferax import samplers

WORKER = pathlib.Path(__file__).with_name("sharding_worker.py")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_processes_give_the_draws_of_one_device(tmp_path):
    """Two processes of one device each (gloo): chains over both devices, and data over
    both, against everything on one device, in the same run; and with the automatic chunk
    length, chunks timed differently in the two processes. First the same runs in one
    process with two devices, into the default persistent cache, which the two processes
    must not load from: a multi-process program loaded from JAX's cache hangs in its first
    collective."""
    drop = ("XLA_FLAGS", "JAX_COMPILATION_CACHE_DIR")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")  # inferax's default cache, in here
    one_process = subprocess.run(
        [sys.executable, str(WORKER), str(tmp_path / "one_process.npz"), "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert one_process.returncode == 0, one_process.stderr[-3000:]
    port = _free_port()
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(WORKER),
                str(tmp_path / f"p{i}.npz"),
                "1",
                str(i),
                "2",
                str(port),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    try:
        for i, proc in enumerate(procs):
            output, _ = proc.communicate(timeout=400)
            assert proc.returncode == 0, f"process {i} failed:\n{output[-3000:]}"
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    draws = np.load(tmp_path / "p0.npz")
    for name in ("one_mala", "chains_mala", "data_mala"):
        assert draws[name].shape == (4, 15, 3) and np.all(np.isfinite(draws[name])), name
    # With the automatic chunk length every process runs process 0's chunks.
    automatic = draws["automatic_chains_mala"]
    assert automatic.shape == (4, 40, 3)
    np.testing.assert_array_equal(automatic[:, :15], draws["chains_mala"])
    # Two processes of one device each, and one process of two: the same chains per device.
    np.testing.assert_array_equal(
        draws["chains_mala"], np.load(tmp_path / "one_process.npz")["chains_mala"]
    )
    # A chain's arithmetic is the same up to rounding: XLA compiles each device's batch of
    # chains, and a batched matmul sums in an order that depends on the batch size.
    np.testing.assert_allclose(draws["chains_mala"], draws["one_mala"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(draws["data_mala"], draws["one_mala"], rtol=0, atol=1e-5)
    assert not np.array_equal(draws["one_mala"][:, 1:], draws["one_mala"][:, :-1])


def _target():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(20, 2)).astype(np.float32)
    y = rng.normal(size=20).astype(np.float32)
    return inferax.Target(
        log_prior=lambda w: -0.5 * jnp.sum(w**2),
        init=jnp.zeros(2),
        log_likelihood=lambda w, batch: -0.5 * jnp.sum((batch[1] - batch[0] @ w) ** 2),
        data=(x, y),
    )


def test_sharded_data_gives_the_same_density_and_gradient():
    target = _target()
    sharded = target.shard_data(Mesh(np.asarray(jax.devices()), ("data",)))
    assert sharded.data_sharding is not None and sharded.num_data == 20
    point = jnp.asarray([0.3, -1.2])
    value, grad = jax.jit(target.logdensity_and_grad)(point)
    sharded_value, sharded_grad = jax.jit(sharded.logdensity_and_grad)(point)
    np.testing.assert_allclose(sharded_value, value, rtol=1e-6)
    np.testing.assert_allclose(sharded_grad, grad, rtol=1e-6)


def test_refusals_name_the_argument():
    target, kernel, key = _target(), samplers.mala(step_size=0.1), jax.random.key(0)
    device = jax.devices()[0]
    with pytest.raises(ValueError, match="devices and mesh: pass one or the other"):
        inferax.sample(
            target, kernel, key, devices=[device], mesh=inferax.sharding.default_mesh("chains")
        )
    with pytest.raises(TypeError, match="devices must be a sequence of jax.Device"):
        inferax.sample(target, kernel, key, devices=device)
    with pytest.raises(ValueError, match="devices: a device is listed more than once"):
        inferax.sample(target, kernel, key, num_chains=2, devices=[device, device])
    with pytest.raises(ValueError, match="mesh: needs an axis named 'chains'"):
        inferax.sample(target, kernel, key, mesh=inferax.sharding.default_mesh("data"))
    with pytest.raises(TypeError, match="mesh must be a jax.sharding.Mesh"):
        inferax.sample(target, kernel, key, mesh="chains")
    plain = inferax.Target.from_logdensity(lambda x: -0.5 * jnp.sum(x**2), jnp.zeros(2))
    with pytest.raises(ValueError, match="shard_data: the target needs data"):
        plain.shard_data()
    with pytest.raises(ValueError, match="lay out either the chains or the data, not both"):
        inferax.sample(target.shard_data(), kernel, key, devices=[device])
    with pytest.raises(ValueError, match="needs an axis named 'data'"):
        target.shard_data(inferax.sharding.default_mesh("chains"))
