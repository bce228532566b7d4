"""Federated SGLD: splits, the gradient estimators' variance, the toy Gaussian of El Mekkaoui
et al. (2021), surrogate fits, bad input, and the same draws on 1 device, 4 devices and
2 processes x 2 devices."""

import dataclasses
import os
import pathlib
import socket
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import inferax
from inferax import samplers
from inferax.samplers import federated
from inferax.samplers.federated import federated_sgld_algorithm, gradient_estimate_fn

WORKER = pathlib.Path(__file__).with_name("test_federated_worker.py")


def gaussian_target(y):
    return inferax.Target(
        log_prior=lambda mu: -0.5 * jnp.sum(mu**2),
        init=jnp.zeros(y.shape[1]),
        log_likelihood=lambda mu, batch: -0.5 * jnp.sum((batch - mu[None, :]) ** 2),
        data=y,
    )


@pytest.fixture(scope="module")
def toy():
    """The paper's Fig. 3: 10 shards of 200 2-D points around centres from U([-6, 6]^2)."""
    rng = np.random.default_rng(0)
    centres = rng.uniform(-6, 6, size=(10, 2))
    y = (centres[:, None, :] + rng.normal(size=(10, 200, 2))).reshape(-1, 2).astype(np.float32)
    fed = federated.split(gaussian_target(y), np.repeat(np.arange(10), 200))
    return y, fed


# --------------------------------------------------------------------------------------
# split
# --------------------------------------------------------------------------------------


def test_split_keeps_the_density_and_lays_out_clients():
    y = np.arange(14.0, dtype=np.float32).reshape(7, 2)
    target = gaussian_target(y)
    fed = federated.split(target, np.array([2, 0, 0, 1, 2, 2, 0]))
    assert federated.is_federated(fed) and not federated.is_federated(target)
    assert federated.num_clients(fed) == 3
    assert federated.client_sizes(fed).tolist() == [3, 1, 3]
    shards = np.asarray(fed.data.shards)
    assert shards.shape == (3, 3, 2)
    np.testing.assert_array_equal(shards[0], y[[1, 2, 6]])
    np.testing.assert_array_equal(shards[1], y[[3, 3, 3]])  # padded with its first point
    x = jnp.array([0.3, -0.2])
    np.testing.assert_allclose(fed.logdensity(x), target.logdensity(x), rtol=1e-6)

    by_label = federated.split(target, 2, by=np.array([1, 0, 1, 0, 1, 0, 0]))
    assert federated.client_sizes(by_label).tolist() == [4, 3]
    first = np.asarray(by_label.data.shards)[0]
    np.testing.assert_array_equal(first, y[[1, 3, 5, 6]])  # the label-0 points, in order
    blocks = federated.split(target, 3)
    assert federated.client_sizes(blocks).tolist() == [3, 2, 2]


def test_split_refuses_bad_input():
    target = gaussian_target(np.zeros((6, 2), np.float32))
    with pytest.raises(ValueError, match=r"client\(s\) \[1\] hold no data"):
        federated.split(target, np.array([0, 0, 2, 2, 0, 2]))
    with pytest.raises(ValueError, match="one client index per data point"):
        federated.split(target, np.array([0, 1]))
    with pytest.raises(ValueError, match=">= 0"):
        federated.split(target, np.array([0, -1, 0, 1, 1, 1]))
    with pytest.raises(ValueError, match="leaves a client with no data"):
        federated.split(target, 7)
    with pytest.raises(ValueError, match="no data split"):
        federated.split(inferax.Target.from_logdensity(lambda x: -x @ x, jnp.zeros(2)), 2)
    with pytest.raises(ValueError, match="needs an axis named 'clients'"):
        mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:1]), ("data",))
        federated.split(target, 2, mesh=mesh)


# --------------------------------------------------------------------------------------
# Bad input to the kernels and to the launcher
# --------------------------------------------------------------------------------------


def test_kernels_refuse_bad_input(toy):
    _, fed = toy
    with pytest.raises(ValueError, match="must sum to 1, they sum to 0.9"):
        samplers.dsgld(step_size=1e-4, batch_size=5, local_steps=2, client_probs=[0.5, 0.4])
    with pytest.raises(ValueError, match="finite and > 0"):
        samplers.fsgld(step_size=1e-4, batch_size=5, local_steps=2, client_probs=[1.0, 0.0])
    with pytest.raises(ValueError, match="local_steps"):
        samplers.dsgld(step_size=1e-4, batch_size=5, local_steps=0)
    with pytest.raises(ValueError, match="2 entries for 10 clients"):
        kernel = samplers.dsgld(1e-4, 5, 2, client_probs=[0.5, 0.5])
        inferax.sample(fed, kernel, jax.random.key(0), num_samples=5, progress=False)
    plain = gaussian_target(np.zeros((6, 2), np.float32))
    with pytest.raises(ValueError, match="not federated"):
        inferax.sample(plain, samplers.dsgld(1e-4, 5, 2), jax.random.key(0), progress=False)
    mean = np.zeros((2, 2))
    not_pd = np.stack([np.eye(2), np.array([[1.0, 2.0], [2.0, 1.0]])])
    with pytest.raises(
        ValueError, match="client 1 has a covariance that is not positive definite"
    ):
        samplers.GaussianSurrogates.from_precision(mean, not_pd)
    with pytest.raises(
        ValueError, match="client 1 has a covariance that is not positive definite"
    ):
        federated.with_surrogates(
            fed,
            samplers.GaussianSurrogates(
                np.zeros((10, 2)), [np.eye(2), not_pd[1]] + [np.eye(2)] * 8
            ),
        )
    with pytest.raises(ValueError, match="covariance of client 1 is not positive definite"):
        samplers.GaussianSurrogates.from_covariance(mean, not_pd)
    with pytest.raises(ValueError, match="surrogates are for 2 clients"):
        federated.with_surrogates(
            fed, samplers.GaussianSurrogates.from_precision(mean, [np.eye(2)] * 2)
        )
    with pytest.raises(ValueError, match="kind must be one of"):
        samplers.fit_surrogates(fed, jax.random.key(0), "exact")
    with pytest.raises(ValueError, match="carries no surrogates"):
        inferax.sample(fed, samplers.fsgld(1e-4, 5, 2), jax.random.key(0), progress=False)
    with pytest.raises(ValueError, match="larger than the smallest client"):
        inferax.sample(fed, samplers.dsgld(1e-4, 201, 2), jax.random.key(0), progress=False)


def test_unreachable_coordinator_fails_fast_naming_the_address():
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(RuntimeError, match=f"coordinator at 127.0.0.1:{port} within 1 s"):
        federated.initialize(f"127.0.0.1:{port}", 2, 1, timeout=1.0)
    assert time.monotonic() - started < 5


# --------------------------------------------------------------------------------------
# Gradient variance (the paper's Bernoulli example)
# --------------------------------------------------------------------------------------


def sd_and_se(samples):
    """The sample SD and its standard error, from the fourth central moment."""
    centred = samples - samples.mean()
    variance = np.mean(centred**2)
    fourth = np.mean(centred**4)
    return np.sqrt(variance), np.sqrt((fourth - variance**2) / (4 * variance * samples.size))


def test_gradient_estimators_match_the_analytic_variances():
    """3 shards of 10 tosses with 1, 5 and 9 heads, m = 5 without replacement, f = 1/3, at
    p = 0.5, where each toss's gradient is +-2. With replacement SGLD's variance is
    N^2 sigma^2 / m = 720; without, the finite-population factor (N - m) / (N - 1) = 25/29
    makes it 620.7 (SD 24.9). DSGLD's is the within-client part, 412.8 with replacement,
    times (N_s - m) / (N_s - 1) = 5/9, plus the between-client part 1536: 1765.3 (SD 42.0).
    FSGLD's, with surrogates whose gradients are exact there, is the within-client part
    alone: 229.3 (SD 15.1). All are unbiased (the full gradient is 0)."""
    heads = np.zeros(30, np.float32)
    heads[[0, 10, 11, 12, 13, 14, 20, 21, 22, 23, 24, 25, 26, 27, 28]] = 1.0
    target = inferax.Target(
        log_prior=lambda p: 0.0 * p,
        init=jnp.asarray(0.5),
        log_likelihood=lambda p, x: jnp.sum(x * jnp.log(p) + (1 - x) * jnp.log1p(-p)),
        data=heads,
    )
    shards = federated.split(target, np.repeat(np.arange(3), 10))
    one_client = federated.split(target, np.zeros(30, np.int64))
    # Gaussian surrogates at the shard MLEs with precision 40 (= minus the Hessian at 0.5):
    # their gradients at p = 0.5 are the shards' likelihood gradients, exactly.
    exact = samplers.GaussianSurrogates.from_precision(
        [[0.1], [0.5], [0.9]], np.full((3, 1, 1), 40.0)
    )
    fsgld = samplers.fsgld(step_size=1e-3, batch_size=5, local_steps=1)
    cases = {
        "sgld": (one_client, samplers.dsgld(1e-3, 5, 1), np.sqrt(720.0 * 25 / 29)),
        "dsgld": (shards, samplers.dsgld(1e-3, 5, 1), np.sqrt(412.8 * 5 / 9 + 1536.0)),
        "fsgld": (federated.with_surrogates(shards, exact), fsgld, np.sqrt(412.8 * 5 / 9)),
    }
    num_draws = 20_000
    keys = jax.random.split(jax.random.key(0), num_draws)
    for name, (fed, kernel, expected_sd) in cases.items():
        estimate = gradient_estimate_fn(fed, kernel)
        grads = jax.jit(jax.vmap(lambda key, e=estimate: e(key, jnp.asarray(0.5))[1]))(keys)
        grads = np.asarray(grads, dtype=np.float64)
        sd, se = sd_and_se(grads)
        assert abs(sd - expected_sd) < 4 * se, (
            f"{name}: SD {sd:.2f} vs {expected_sd:.2f} (se {se:.2f})"
        )
        assert abs(grads.mean()) < 4 * sd / np.sqrt(num_draws), (
            f"{name}: biased, mean {grads.mean()}"
        )


# --------------------------------------------------------------------------------------
# The toy Gaussian (Fig. 3)
# --------------------------------------------------------------------------------------


def test_toy_gaussian_fsgld_stays_on_the_posterior_dsgld_spreads(toy):
    """The paper's step 1e-4 is 5e-5 in our convention; m = 10. RMS distance of the draws
    from the analytic posterior mean: FSGLD < 0.2 at 1, 20 and 200 local steps (about 0.11:
    minibatch noise at this step inflates the 0.022 posterior SD); DSGLD > 1 at 20 (it
    spreads over the local posteriors, about 4)."""
    y, fed = toy
    posterior_mean = y.sum(0) / (y.shape[0] + 1)
    prepared = federated.with_surrogates(
        fed, federated.fit_surrogates(fed, jax.random.key(0), "analytic")
    )
    num_chains, num_burn, num_keep = 4, 100, 500

    def rms(target, conducive, local_steps, key):
        algorithm = federated_sgld_algorithm(target, 5e-5, 10, local_steps, None, conducive)

        def chain(chain_key):
            def one(state, step_key):
                state, _ = algorithm.step(step_key, state)
                return state, state.position

            keys = jax.random.split(chain_key, num_burn + num_keep)
            _, path = jax.lax.scan(one, algorithm.init(target.init), keys)
            return path[num_burn:]

        draws = jax.vmap(chain)(jax.random.split(key, num_chains))
        return jnp.sqrt(jnp.mean(jnp.sum((draws - posterior_mean[None, None, :]) ** 2, axis=-1)))

    local_steps = jnp.array([1, 20, 200])
    fsgld_rms = jax.jit(jax.vmap(lambda t: rms(prepared, True, t, jax.random.key(1))))(local_steps)
    dsgld_rms = jax.jit(lambda t: rms(fed, False, t, jax.random.key(2)))(jnp.int32(20))
    assert np.all(np.asarray(fsgld_rms) < 0.2), f"FSGLD RMS {fsgld_rms}"
    assert float(dsgld_rms) > 1.0, f"DSGLD RMS {dsgld_rms}"


# --------------------------------------------------------------------------------------
# Surrogate fits
# --------------------------------------------------------------------------------------


def test_surrogate_fits_recover_the_analytic_gaussian_surrogate(toy):
    """On the toy model client s's likelihood is exactly N(shard mean, I / 200)."""
    y, fed = toy
    shard_means = y.reshape(10, 200, 2).mean(1)
    exact_precision = np.broadcast_to(200.0 * np.eye(2), (10, 2, 2))
    for kind in ("analytic", "laplace", "global_laplace"):
        fitted = samplers.fit_surrogates(fed, jax.random.key(0), kind)
        np.testing.assert_allclose(fitted.mean, shard_means, atol=1e-3, err_msg=kind)
        np.testing.assert_allclose(fitted.precision, exact_precision, rtol=1e-3, err_msg=kind)
    # Local SGLD, full-shard gradients, h * 200 = 0.05 (a 2.5% discretisation bias in the
    # variance); 16 chains x 1000 kept steps, integrated autocorrelation time ~40: ESS ~400
    # per client, so the mean's error is ~0.07 / 20 and a precision's relative error ~7%,
    # ~2% on average over the 10 clients.
    fitted = samplers.fit_surrogates(
        fed, jax.random.key(0), "gaussian", step_size=2.5e-4, num_steps=2000, num_chains=16
    )
    assert np.max(np.abs(fitted.mean - shard_means)) < 0.03
    relative = np.linalg.norm(fitted.precision - exact_precision, axis=(1, 2)) / np.linalg.norm(
        exact_precision, axis=(1, 2)
    )
    assert relative.mean() < 0.1, relative
    heads = inferax.Target(
        log_prior=lambda p: 0.0 * p,
        init=jnp.asarray(0.5),
        log_likelihood=lambda p, x: jnp.sum(x * jnp.log(p) + (1 - x) * jnp.log1p(-p)),
        data=np.array([0.0, 1.0, 1.0, 0.0], np.float32),
    )
    with pytest.raises(ValueError, match="quadratic in the position"):
        samplers.fit_surrogates(federated.split(heads, 2), jax.random.key(0), "analytic")
    at_zero = dataclasses.replace(heads, init=jnp.asarray(0.0))  # log 0: no finite start
    with pytest.raises(ValueError, match="not finite at the target's init"):
        samplers.fit_surrogates(federated.split(at_zero, 2), jax.random.key(0), "global_laplace")


# --------------------------------------------------------------------------------------
# The same draws on 1 device, 4 devices, and 2 processes x 2 devices
# --------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_same_draws_on_one_device_four_devices_and_two_processes(tmp_path):
    import test_federated_worker

    # The processes keep their programs in a cache of their own: the suite's shared one may
    # hold one-process programs that a two-process run must not load.
    drop = ("XLA_FLAGS", "JAX_COMPILATION_CACHE_DIR")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    port = _free_port()
    commands = {
        "four": [str(tmp_path / "four.npy"), "4"],
        "process0": [str(tmp_path / "two_by_two.npy"), "2", "0", "2", str(port)],
        "process1": [str(tmp_path / "unused.npy"), "2", "1", "2", str(port)],
    }
    procs = {
        name: subprocess.Popen(
            [sys.executable, str(WORKER), *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name, args in commands.items()
    }
    try:
        one = test_federated_worker.federated_run()  # this process: one device
        for name, proc in procs.items():
            output, _ = proc.communicate(timeout=300)
            assert proc.returncode == 0, f"{name} failed:\n{output[-3000:]}"
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
    assert len(jax.devices()) == 1
    assert one.shape == (3, 20, 2) and np.all(np.isfinite(one))
    np.testing.assert_array_equal(np.load(tmp_path / "four.npy"), one)
    np.testing.assert_array_equal(np.load(tmp_path / "two_by_two.npy"), one)


@pytest.mark.parametrize(
    "module_name",
    [
        "inferax.samplers.federated.split",
        "inferax.samplers.federated.surrogates",
        "inferax.samplers.federated.kernels",
    ],
)
def test_docstring_examples_run(module_name):
    import doctest
    import importlib

    module = importlib.import_module(module_name)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tests = [
        test for test in doctest.DocTestFinder(exclude_empty=True).find(module) if test.examples
    ]
    assert tests
    for test in tests:
        runner.run(test)
    assert runner.failures == 0
