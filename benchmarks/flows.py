"""Normalizing flows on the Rezende-Mohamed energies U1-U4, a banana and Neal's funnel.

For each target and family it prints one line: the final ELBO (10,000 fresh draws), log Z
minus the ELBO, the PSIS k-hat, the wall time and the time per step. The peer is flowjax
(``coupling_flow``, affine or with its ``RationalQuadraticSpline`` transformer, and
``planar_flow``, all with ``invert=False``, trained with its ``ElboLoss`` and
``fit_to_key_based_loss``), when installed (``pip install inferax[bench]``).

Settings follow issue 11: Adam at 1e-3, 256 draws a step, base N(0, 2^2 I) at the start
(trained, in inferax and in flowjax alike); RealNVP and flowjax's coupling flow have 8
layers of a (64, 64) MLP, planar flows 32 layers, the spline flow 8 layers of 8 bins on
[-5, 5] (``--spline-interval``), its conditioners' outputs bounded by 3 tanh(out / 3)
(``--spline-bound``), and a final affine map, on a fixed base N(0, I).
The issue's full length is 20,000 steps (``--steps 20000``); the default is shorter, so
that the whole run takes minutes of CPU.

    python benchmarks/flows.py [--steps N] [--targets u1,u2,...] [--families planar,...]
                               [--decay] [--no-peer] [--peer-flows coupling,spline,planar]
                               [--seeds N] [--first-seed K] [--estimator reparam|stl]
                               [--spline-interval B] [--spline-bound b] [--spline-bins N]
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from inferax import examples, flows, variational

# The energies spread over a box about 8 wide around an uninformative origin: a base of
# scale 2 covers it from the start (the builders' default 0.1, made for a start at a prior
# median, would spend thousands of steps at 1e-3 widening).
BASE_SCALE = 2.0

# Each takes the parsed arguments, for the options that set a family's shape.
FAMILIES = {
    "realnvp": lambda args: flows.realnvp(8, (64, 64), base_scale=BASE_SCALE),
    "planar": lambda args: flows.planar(32, base_scale=BASE_SCALE),
    "spline": lambda args: flows.spline(
        8,
        (64, 64),
        args.spline_bins,
        interval=args.spline_interval,
        output_bound=args.spline_bound or None,
    ),
}
PEER_FLOWS = ("coupling", "spline", "planar")
TARGETS = ("u1", "u2", "u3", "u4", "banana", "funnel")
ELBO_DRAWS = 10_000


def run_inferax(name, target, family, steps, draws, lr, key, estimator="reparam"):
    start = time.perf_counter()
    approx = variational.fit(
        target,
        family,
        key,
        optimizer=optax.adam(lr),
        num_steps=steps,
        num_particles=draws,
        estimator=estimator,
        progress=False,
    )
    elbo, _ = approx.elbo(jax.random.fold_in(key, 1), ELBO_DRAWS)
    wall = time.perf_counter() - start
    per_step = approx.timing["optimization"] / steps
    return elbo, approx.khat, wall, per_step


def run_flowjax(kind, target, steps, draws, lr, key, spline_bins, spline_interval):
    from flowjax.bijections import RationalQuadraticSpline
    from flowjax.distributions import Normal
    from flowjax.flows import coupling_flow, planar_flow
    from flowjax.train import fit_to_key_based_loss
    from flowjax.train.losses import ElboLoss

    base = Normal(jnp.zeros(2), 2.0 * jnp.ones(2))
    init_key, train_key, eval_key = jax.random.split(key, 3)
    if kind == "coupling":
        dist = coupling_flow(
            init_key, base_dist=base, flow_layers=8, nn_width=64, nn_depth=2, invert=False
        )
    elif kind == "spline":
        # The same shape as inferax's spline flow, on the same base scale; flowjax has no
        # final affine map, and trains its base's location and scale instead.
        spline = RationalQuadraticSpline(knots=spline_bins, interval=spline_interval)
        dist = coupling_flow(
            init_key,
            base_dist=Normal(jnp.zeros(2), jnp.ones(2)),
            transformer=spline,
            flow_layers=8,
            nn_width=64,
            nn_depth=2,
            invert=False,
        )
    else:
        dist = planar_flow(init_key, base_dist=base, flow_layers=32, invert=False)
    loss = ElboLoss(target.logdensity, num_samples=draws)  # it vmaps the target itself
    start = time.perf_counter()
    dist, _ = fit_to_key_based_loss(
        train_key, dist, loss_fn=loss, steps=steps, optimizer=optax.adam(lr), show_progress=False
    )
    train = time.perf_counter() - start
    import equinox as eqx

    draw = eqx.filter_jit(lambda d, k: d.sample_and_log_prob(k, (ELBO_DRAWS,)))
    x, log_q = draw(dist, eval_key)
    log_w = np.asarray(jax.vmap(target.logdensity)(x) - log_q, np.float64)
    wall = time.perf_counter() - start
    return float(log_w.mean()), variational.psis_khat(log_w[:1000]), wall, train / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--draws", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--no-peer", action="store_true")
    parser.add_argument(
        "--peer-flows",
        default=",".join(PEER_FLOWS),
        help="flowjax's flows to run, of coupling, spline and planar",
    )
    parser.add_argument(
        "--decay",
        action="store_true",
        help="cosine-decay the rate to a tenth of --lr over the run",
    )
    parser.add_argument(
        "--estimator",
        default="reparam",
        choices=("reparam", "stl"),
        help="inferax's gradient estimator; flowjax's is reparam",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="fit each flow from N keys; with N > 1 a line per target and "
        "family gives the gaps' mean and sd",
    )
    parser.add_argument("--first-seed", type=int, default=0, help="the first of the --seeds keys")
    parser.add_argument(
        "--spline-interval",
        type=float,
        default=5.0,
        help="the half-width of the spline flows' range, inferax's and flowjax's",
    )
    parser.add_argument(
        "--spline-bound",
        type=float,
        default=3.0,
        help="the bound b on inferax's spline conditioners' outputs, "
        "b tanh(out / b); 0 for none (flowjax's has none)",
    )
    parser.add_argument(
        "--spline-bins",
        type=int,
        default=8,
        help="the spline flows' bins, inferax's and flowjax's",
    )
    args = parser.parse_args()
    # Refused here, not when a long run reaches the name.
    for option, names, known in (
        ("--families", args.families, FAMILIES),
        ("--peer-flows", args.peer_flows, PEER_FLOWS),
        ("--targets", args.targets, TARGETS),
    ):
        unknown = [n for n in names.split(",") if n and n not in known]
        if unknown:
            parser.error(f"{option}: unknown {unknown}; known: {', '.join(known)}")
    if args.spline_bound < 0:
        parser.error(f"--spline-bound: must be >= 0 (0 for none), got {args.spline_bound}")
    # optax.adam takes a rate or a schedule alike, so every family and the peer get the same.
    lr = optax.cosine_decay_schedule(args.lr, args.steps, alpha=0.1) if args.decay else args.lr
    try:
        import flowjax  # noqa: F401

        peer = not args.no_peer
    except ImportError:
        peer = False
        print("note: flowjax is not installed (pip install inferax[bench]); no peer lines")
    rate = f"{args.lr} cosine-decayed to {args.lr / 10:g}" if args.decay else f"{args.lr}"
    print(
        f"# {args.steps} Adam steps at {rate}, {args.draws} draws a step, "
        f"inferax's estimator {args.estimator}, ELBO on {ELBO_DRAWS} draws, "
        f"{jax.default_backend()}"
    )
    print(
        f"{'target':8} {'family':18} {'ELBO':>8} {'gap':>7} {'k-hat':>6} "
        f"{'wall s':>7} {'ms/step':>8}"
    )
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    for target_name in args.targets.split(","):
        target = examples.ENERGIES[target_name]()
        log_z = examples.ENERGY_LOG_Z[target_name]
        runs = [
            (
                f"inferax.{f}",
                lambda key, f=f, t=target: run_inferax(
                    f, t, FAMILIES[f](args), args.steps, args.draws, lr, key, args.estimator
                ),
            )
            for f in args.families.split(",")
            if f
        ]
        if peer:
            runs += [
                (
                    f"flowjax.{k}",
                    lambda key, k=k, t=target: run_flowjax(
                        k,
                        t,
                        args.steps,
                        args.draws,
                        lr,
                        key,
                        args.spline_bins,
                        args.spline_interval,
                    ),
                )
                for k in args.peer_flows.split(",")
                if k
            ]
        for label, run in runs:
            gaps = []
            for seed in seeds:
                elbo, khat, wall, per_step = run(jax.random.key(seed))
                gaps.append(log_z - elbo)
                name = label if args.seeds == 1 else f"{label} key {seed}"
                print(
                    f"{target_name:8} {name:18} {elbo:8.4f} {log_z - elbo:7.4f} {khat:6.2f} "
                    f"{wall:7.1f} {1000 * per_step:8.3f}",
                    flush=True,
                )
            if args.seeds > 1:
                print(
                    f"{target_name:8} {label:18} gap over keys {seeds[0]}-{seeds[-1]}: mean "
                    f"{np.mean(gaps):.3f}, sd {np.std(gaps, ddof=1):.3f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
