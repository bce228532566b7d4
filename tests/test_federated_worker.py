"""One federated run, for comparing draws across device and process layouts.

``python test_federated_worker.py OUT.npy DEVICES [PROCESS_ID NUM_PROCESSES PORT]`` runs it
with ``DEVICES`` CPU devices in this process (and, with the last three, as one process of a
``jax.distributed`` run on 127.0.0.1:PORT) and saves the draws; ``tests/test_federated.py``
also calls ``federated_run`` in its own process, on one device. Collected by pytest, this
module holds no tests.
"""

import os
import sys

NUM_CLIENTS = 8


def federated_run():
    """FSGLD (analytic surrogates, fitted on the mesh) on a small Gaussian model split over
    8 clients of different sizes: its draws."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    import inferax
    from inferax.samplers import federated

    rng = np.random.default_rng(3)
    centres = rng.uniform(-3, 3, size=(NUM_CLIENTS, 2))
    sizes = rng.integers(20, 41, size=NUM_CLIENTS)
    y = np.concatenate([c + rng.normal(size=(n, 2)) for c, n in zip(centres, sizes, strict=True)])
    target = inferax.Target(
        log_prior=lambda mu: -0.5 * jnp.sum(mu**2),
        init=jnp.zeros(2),
        log_likelihood=lambda mu, batch: -0.5 * jnp.sum((batch - mu[None, :]) ** 2),
        data=y.astype(np.float32),
    )
    fed = federated.split(target, np.repeat(np.arange(NUM_CLIENTS), sizes))
    surrogates = federated.fit_surrogates(fed, jax.random.key(0), "analytic")
    fed = federated.with_surrogates(fed, surrogates)
    kernel = federated.fsgld(step_size=2e-4, batch_size=5, local_steps=3)
    post = inferax.sample(
        fed,
        kernel,
        jax.random.key(7),
        num_chains=3,
        num_warmup=0,
        num_samples=20,
        chunk_size=16,
        progress=False,
    )
    return np.asarray(post.draws["x"])


def main(argv):
    out, devices = argv[0], int(argv[1])
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax

    jax.config.update("jax_numpy_rank_promotion", "raise")
    if len(argv) > 2:
        from inferax.samplers import federated

        process_id, num_processes, port = map(int, argv[2:5])
        federated.initialize(f"127.0.0.1:{port}", num_processes, process_id, timeout=60)
    import numpy as np

    assert len(jax.devices()) == devices * (int(argv[3]) if len(argv) > 2 else 1)
    draws = federated_run()
    if len(argv) == 2 or int(argv[2]) == 0:
        np.save(out, draws)


if __name__ == "__main__":
    main(sys.argv[1:])
