"""Federated SGLD across several processes: how to launch them, and what a round costs.

Launch N processes on this machine, each with D CPU devices, and run FSGLD on the
non-IID logistic regression of ``benchmarks/federated.py`` (10 clients of 500 points, the
count rounded up to a multiple of N x D) with the clients laid out over all N x D devices:

    python benchmarks/federated_multiprocess.py --processes 2 --devices 2

The launcher starts the N workers itself (``--worker I``), on 127.0.0.1 and a free port.
On several hosts, start one worker per host by hand with the same ``--coordinator
HOST:PORT`` (process 0's address) and ``--processes N``, and ``--worker I`` for I = 0..N-1:

    python benchmarks/federated_multiprocess.py --worker 0 --processes 2 --coordinator 10.0.0.1:99
    python benchmarks/federated_multiprocess.py --worker 1 --processes 2 --coordinator 10.0.0.1:99

Each worker calls ``inferax.samplers.federated.initialize`` first, then builds the same target
(every process holds the same host data here; each device receives only its own clients'
shards), and runs the same ``inferax.sample`` call. Process 0 prints one line per figure:
the number of processes and devices, the wall time per communication round (40 local steps,
8 chains), and the test log-likelihood.

Run with ``./dev bench federated_multiprocess``.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def worker(args) -> None:
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.devices}"
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    from inferax.samplers import federated

    federated.initialize(args.coordinator, args.processes, args.worker, timeout=120)
    import federated as bench
    import jax

    import inferax

    total = len(jax.devices())
    bench.NUM_CLIENTS = -(-bench.NUM_CLIENTS // total) * total
    train, test = bench.make_data(0.5)
    fed = bench.make_target(train)
    kernel, fed = bench.kernels(fed)["FSGLD"]
    per_round = bench.time_per_round({"FSGLD": (kernel, fed)}, jax.random.key(1))["FSGLD"]
    post = inferax.sample(
        fed,
        kernel,
        jax.random.key(0),
        num_chains=bench.CHAINS,
        num_warmup=1000,
        num_samples=2000,
        progress=False,
    )
    score = bench.test_log_likelihood(post.draws["x"][:, ::10], test)
    if jax.process_index() == 0:
        print(
            f"federated multiprocess: {args.processes} processes x {args.devices} devices, "
            f"{bench.NUM_CLIENTS} clients",
            flush=True,
        )
        print(
            f"federated multiprocess time per round ({bench.LOCAL_STEPS} local steps, "
            f"{bench.CHAINS} chains): FSGLD {1e3 * per_round:.1f} ms",
            flush=True,
        )
        print(f"federated multiprocess non-IID test log-likelihood: FSGLD {score:.3f}", flush=True)


def launch(args) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    common = [
        "--processes",
        str(args.processes),
        "--devices",
        str(args.devices),
        "--coordinator",
        f"127.0.0.1:{port}",
    ]
    started = time.perf_counter()
    procs = [
        subprocess.Popen([sys.executable, __file__, "--worker", str(i), *common])
        for i in range(args.processes)
    ]
    codes = [proc.wait(timeout=1800) for proc in procs]
    if any(codes):
        raise SystemExit(f"a worker failed: exit codes {codes}")
    print(
        f"federated multiprocess wall time, all processes: {time.perf_counter() - started:.1f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--devices", type=int, default=2, help="CPU devices per process")
    parser.add_argument("--worker", type=int, default=None, help="this process's index")
    parser.add_argument("--coordinator", default=None, help="HOST:PORT of process 0")
    args = parser.parse_args()
    if args.worker is None:
        launch(args)
    else:
        worker(args)


if __name__ == "__main__":
    main()
