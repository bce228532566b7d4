"""The same key gives the same draws in another process, in float32 and in float64
(``jax_enable_x64``), with checkpoint and resume working in both."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from mcse_helpers import assert_within_mcse, mean_and_mcse

import inferax
from inferax import samplers

RUN = """
import sys
import jax
import jax.numpy as jnp
import numpy as np
import inferax
from inferax import samplers

target = inferax.Target.from_logdensity(
    lambda p: -0.5 * jnp.sum((p - jnp.arange(3.0)) ** 2 / jnp.array([1.0, 0.5, 2.0])),
    jnp.zeros(3),
)
kernel = {"nuts": samplers.nuts(), "mala": samplers.mala(step_size=0.3)}[sys.argv[2]]
post = inferax.sample(target, kernel, jax.random.key(4), num_chains=2, num_warmup=100,
                      num_samples=400, checkpoint=sys.argv[1] + "/run")
resumed = inferax.resume(sys.argv[1] + "/run", target)
assert np.array_equal(resumed.draws["x"], post.draws["x"])
np.save(sys.argv[1] + "/draws.npy", post.draws["x"])
"""


def run_elsewhere(tmp_path, kernel_name: str, x64: bool) -> np.ndarray:
    script = tmp_path / "run.py"
    script.write_text(RUN)
    env = dict(os.environ, JAX_ENABLE_X64="1" if x64 else "0")
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path), kernel_name],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return np.load(tmp_path / "draws.npy")


def test_same_key_same_draws_in_another_process(tmp_path):
    elsewhere = run_elsewhere(tmp_path, "mala", x64=False)
    target = inferax.Target.from_logdensity(
        lambda p: -0.5 * jnp.sum((p - jnp.arange(3.0)) ** 2 / jnp.array([1.0, 0.5, 2.0])),
        jnp.zeros(3),
    )
    here = inferax.sample(
        target,
        samplers.mala(step_size=0.3),
        jax.random.key(4),
        num_chains=2,
        num_warmup=100,
        num_samples=400,
    )
    assert elsewhere.dtype == np.float32
    np.testing.assert_array_equal(elsewhere, here.draws["x"])


@pytest.mark.parametrize("kernel_name", ["nuts", "mala"])
def test_float64_runs(tmp_path, kernel_name):
    draws = run_elsewhere(tmp_path, kernel_name, x64=True)
    assert draws.dtype == np.float64
    assert np.all(np.isfinite(draws))
    mean, mcse = mean_and_mcse(draws)
    assert_within_mcse(f"{kernel_name} float64 mean", mean, mcse, [0.0, 1.0, 2.0])
