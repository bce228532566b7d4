"""Small runs with chains or data laid out over devices, for comparing draws across layouts.

``python sharding_worker.py OUT.npz DEVICES [PROCESS_ID NUM_PROCESSES PORT]`` runs them with
``DEVICES`` CPU devices in this process (and, with the last three, as one process of a
``jax.distributed`` run on 127.0.0.1:PORT) and saves the draws of
each run, on one device and laid out over all of them, for ``tests/test_sharding.py``.
"""

import dataclasses
import os
import sys


def logistic_target():
    """A logistic regression on 64 points and 3 coefficients."""
    import jax.numpy as jnp
    import numpy as np

    import inferax

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 3)).astype(np.float32)
    y = (rng.uniform(size=64) < 1 / (1 + np.exp(-x @ np.array([1.0, -1.0, 0.5])))).astype(
        np.float32
    )

    def log_likelihood(w, batch):
        features, labels = batch
        logits = features @ w
        return jnp.sum(labels * logits - jnp.logaddexp(0.0, logits))

    return inferax.Target(
        log_prior=lambda w: -0.5 * jnp.sum(w**2),
        init=jnp.zeros(3),
        log_likelihood=log_likelihood,
        data=(x, y),
    )


def runs() -> dict:
    """The draws of each run, everything on this process's first device (``one_*``), and
    with chains (``devices=jax.devices()``) or data (``shard_data()``) over every device of
    every process. First checks that uneven layouts are refused."""
    import jax
    import numpy as np

    import inferax
    from inferax import samplers

    target = logistic_target()
    every_device = {"devices": jax.devices()}
    try:
        inferax.sample(
            target, samplers.mala(step_size=0.1), jax.random.key(0), num_chains=3, **every_device
        )
    except ValueError as error:
        assert "num_chains: 3 chains do not divide evenly over 2 devices" in str(error)
    else:
        raise AssertionError("3 chains over 2 devices were not refused")
    uneven = dataclasses.replace(target, data=jax.tree.map(lambda x: x[:63], target.data))
    try:
        uneven.shard_data()
    except ValueError as error:
        assert "63 data points do not divide evenly over the 2 devices" in str(error)
    else:
        raise AssertionError("63 data points over 2 devices were not refused")

    sharded = target.shard_data()
    settings = {"num_chains": 4, "num_samples": 15, "chunk_size": 8, "progress": False}
    key = jax.random.key(3)
    mala = samplers.mala(step_size=0.1)
    posteriors = {
        "one_mala": inferax.sample(target, mala, key, num_warmup=5, **settings),
        "chains_mala": inferax.sample(target, mala, key, num_warmup=5, **every_device, **settings),
        "data_mala": inferax.sample(sharded, mala, key, num_warmup=5, **settings),
    }
    if jax.process_count() > 1:
        # The automatic chunk length, with this process's chunks timed against a target a
        # thousand times shorter than the other's: left to itself, it would run other
        # chunks than process 0, and their gathers of the draws would not pair up.
        import inferax.chunking

        if jax.process_index() == 1:
            inferax.chunking.TARGET_CHUNK_SECONDS /= 1000
        automatic = {**settings, "chunk_size": None, "num_samples": 40}
        posteriors["automatic_chains_mala"] = inferax.sample(
            target, mala, key, num_warmup=5, **every_device, **automatic
        )
    return {name: np.asarray(post.draws["x"]) for name, post in posteriors.items()}


def main(argv):
    out, devices = argv[0], int(argv[1])
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax

    jax.config.update("jax_numpy_rank_promotion", "raise")
    if len(argv) > 2:
        import inferax.sharding

        process_id, num_processes, port = map(int, argv[2:5])
        inferax.sharding.initialize(f"127.0.0.1:{port}", num_processes, process_id, timeout=60)
        # Programs of a multi-process run are compiled, never loaded from the cache.
        assert jax.config.jax_compilation_cache_dir is None
    import numpy as np

    draws = runs()
    if len(argv) == 2 or int(argv[2]) == 0:
        np.savez(out, **draws)


if __name__ == "__main__":
    main(sys.argv[1:])
