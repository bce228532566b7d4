"""The variational engine: fit on Gaussian and NumPyro targets, chunking and the compile
cache, the DataTree, the importance-weighted bounds and their gradients' signal-to-noise
ratio, stochastic flows' evidence estimate, and the U1/U3 gaps at a reduced step count."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

import inferax
from inferax import diagnostics, examples, flows, variational
from inferax.compile_cache import compile_count
from inferax.variational.engine import ObjectiveStep

MEAN = np.array([1.0, -2.0, 0.5])
COV = np.array([[2.0, 0.8, 0.0], [0.8, 1.0, 0.3], [0.0, 0.3, 0.5]])
PRECISION = np.linalg.inv(COV)
GAUSSIAN_LOG_Z = 0.5 * np.linalg.slogdet(2 * np.pi * COV)[1]


def _gaussian_logdensity(params):
    x = jnp.concatenate([params["a"][None], params["b"]])
    diff = x - jnp.asarray(MEAN, x.dtype)
    return -0.5 * diff @ jnp.asarray(PRECISION, x.dtype) @ diff


@pytest.fixture(scope="module")
def gaussian_target():
    # A pytree position: the engine flattens it and gives draws back in its structure.
    return inferax.Target.from_logdensity(_gaussian_logdensity, {"a": 0.0, "b": jnp.zeros(2)})


@pytest.fixture(scope="module")
def fullrank_fit(gaussian_target):
    return variational.fit(
        gaussian_target,
        variational.fullrank_gaussian(),
        jax.random.key(0),
        optimizer=optax.adam(optax.exponential_decay(0.05, 1500, 0.02)),
        num_steps=1500,
        num_particles=8,
        estimator="stl",
        progress=False,
    )


def test_fullrank_recovers_a_gaussian_and_its_evidence(fullrank_fit):
    q = fullrank_fit.family
    assert fullrank_fit.params is q.params
    tril = np.asarray(q.scale_tril())
    np.testing.assert_allclose(q.params["loc"], MEAN, atol=0.03)
    np.testing.assert_allclose(tril @ tril.T, COV, atol=0.05)
    elbo, se = fullrank_fit.elbo(jax.random.key(1), 1000)
    assert elbo <= GAUSSIAN_LOG_Z + 3 * se + 1e-4
    assert GAUSSIAN_LOG_Z - elbo < 0.01
    assert fullrank_fit.khat < 0.5


def test_approximation_api_and_datatree(fullrank_fit):
    draws = fullrank_fit.sample(jax.random.key(2), 50)
    assert draws["a"].shape == (50,) and draws["b"].shape == (50, 2)
    log_q = fullrank_fit.log_prob(draws)
    assert log_q.shape == (50,)
    x, log_q2 = fullrank_fit.sample_and_log_prob(jax.random.key(3), 5)
    np.testing.assert_allclose(fullrank_fit.log_prob(x), log_q2, rtol=1e-5, atol=1e-5)
    assert fullrank_fit.losses.shape == (1500,)

    dt = fullrank_fit.to_datatree(jax.random.key(4), 200)
    assert dict(dt["posterior"].dataset["b"].sizes) == {"chain": 1, "draw": 200, "b_dim_0": 2}
    stats = dt["sample_stats"].dataset
    np.testing.assert_allclose(stats["log_weight"], stats["lp"] - stats["log_q"], atol=1e-5)
    assert dt["optimization"].dataset["loss"].dims == ("step",)
    # The ELBO trace is the negative loss, step by step.
    np.testing.assert_array_equal(dt["optimization"]["elbo"], -fullrank_fit.losses)
    assert dt["posterior"].attrs["fit_khat"] == fullrank_fit.khat
    # The stored k-hat is the one check finds from the stored log weights.
    assert diagnostics.khat(dt) == pytest.approx(dt["posterior"].attrs["khat"], abs=1e-3)
    assert diagnostics.khat(dt) < 0.7


def test_chunking_does_not_change_the_fit_and_a_second_call_does_not_compile(gaussian_target):
    optimizer = optax.adam(0.01)

    def run(chunk_size):
        return variational.fit(
            gaussian_target,
            variational.meanfield_gaussian(),
            jax.random.key(5),
            optimizer=optimizer,
            num_steps=30,
            num_particles=2,
            chunk_size=chunk_size,
            progress=False,
        )

    whole, chunked = run(30), run(7)
    np.testing.assert_allclose(chunked.losses, whole.losses, rtol=1e-5)
    before = compile_count()
    again = run(7)
    assert compile_count() == before
    np.testing.assert_array_equal(again.losses, chunked.losses)


def test_meanfield_on_eight_schools_reaches_numpyros_autonormal_at_the_same_budget():
    from numpyro.infer import SVI, Trace_ELBO
    from numpyro.infer.autoguide import AutoNormal

    data = examples.EIGHT_SCHOOLS
    args, kwargs = (data["J"], data["sigma"]), {"y": data["y"]}
    target = inferax.from_numpyro(examples.eight_schools_noncentered, *args, **kwargs)
    # The same optimiser, steps and draws per step for both; each starts where it starts
    # by default (inferax at the prior median, NumPyro within 2 of the origin).
    steps, particles = 400, 4
    optimizer = optax.adam(optax.exponential_decay(0.05, steps, 0.05))
    approx = variational.fit(
        target,
        variational.meanfield_gaussian(),
        jax.random.key(6),
        optimizer=optimizer,
        num_steps=steps,
        num_particles=particles,
        progress=False,
    )
    guide = AutoNormal(examples.eight_schools_noncentered)
    svi = SVI(examples.eight_schools_noncentered, guide, optimizer, Trace_ELBO(particles))
    params = svi.run(jax.random.key(6), steps, *args, progress_bar=False, **kwargs).params
    loc, scale = ({n: params[f"{n}_auto_{p}"] for n in target.init} for p in ("loc", "scale"))
    numpyro_q = variational.MeanfieldGaussian.from_scale(
        ravel_pytree(loc)[0], ravel_pytree(scale)[0]
    )
    theirs = variational.Approximation(numpyro_q, target, np.zeros(0), {})
    # Both ELBOs by one estimator on the same standard normal draws: the difference of the
    # log weights, draw by draw, has a small Monte Carlo error.
    key, n = jax.random.key(7), 4000
    diff = np.asarray(approx.log_weights(key, n)[1] - theirs.log_weights(key, n)[1], np.float64)
    assert diff.mean() >= -3 * diff.std(ddof=1) / np.sqrt(n)

    dt = approx.to_datatree(jax.random.key(7), 100)
    posterior = dt["posterior"].dataset
    assert {"mu", "tau", "theta", "theta_tilde"} <= set(posterior.data_vars)
    assert posterior["theta"].shape == (1, 100, 8)
    assert bool((posterior["tau"] > 0).all())
    assert np.isfinite(approx.khat)
    assert dt["optimization"]["elbo"].shape == (steps,)


def test_families_start_at_the_prior_median_with_a_small_scale_unless_init_is_given():
    import numpyro
    import numpyro.distributions as dist

    def model():
        numpyro.sample("sigma", dist.LogNormal(1.0, 0.1))
        numpyro.sample("x", dist.Normal(jnp.full(2, 3.0), 0.01).to_event(1))

    target = inferax.from_numpyro(model)
    start = variational.initial_location(jax.random.key(0), target)
    # The median of 15 prior draws, in unconstrained space (log sigma; x itself).
    np.testing.assert_allclose(start["sigma"], 1.0, atol=0.1)
    np.testing.assert_allclose(start["x"], 3.0, atol=0.02)
    plain = inferax.Target.from_logdensity(lambda x: -0.5 * jnp.sum(x**2), jnp.ones(2))
    assert variational.initial_location(jax.random.key(0), plain) is plain.init

    flat = variational.engine.flat_start(jax.random.key(0), target, None)
    q = variational.fullrank_gaussian().init(jax.random.key(0), flat)
    np.testing.assert_allclose(q.scale_tril(), 0.1 * np.eye(3), rtol=1e-6)
    q = variational.meanfield_gaussian(init_scale=0.5).init(jax.random.key(0), flat)
    np.testing.assert_allclose(q.scale(), 0.5, rtol=1e-6)
    mine = {"sigma": jnp.asarray(0.3), "x": jnp.asarray([-1.0, 2.0])}
    np.testing.assert_allclose(
        variational.engine.flat_start(jax.random.key(0), target, mine), [0.3, -1.0, 2.0]
    )
    with pytest.raises(ValueError, match="init must have the pytree structure"):
        variational.engine.flat_start(jax.random.key(0), target, jnp.zeros(3))
    with pytest.raises(ValueError, match="init_scale must be finite and positive"):
        variational.meanfield_gaussian(init_scale=0.0)


def test_bad_arguments_are_refused(gaussian_target):
    family = variational.meanfield_gaussian()
    kwargs = {"optimizer": optax.adam(0.1), "num_steps": 5, "progress": False}
    with pytest.raises(ValueError, match="objective"):
        variational.fit(gaussian_target, family, jax.random.key(0), objective="kl", **kwargs)
    with pytest.raises(ValueError, match="estimator"):
        variational.fit(gaussian_target, family, jax.random.key(0), estimator="x", **kwargs)
    with pytest.raises(TypeError, match="rng_key"):
        variational.fit(gaussian_target, family, 0, **kwargs)
    with pytest.raises(TypeError, match="family"):
        variational.fit(gaussian_target, object(), jax.random.key(0), **kwargs)
    with pytest.raises(TypeError, match="inferax.variational.gp.fit"):
        variational.fit({"x": jnp.zeros(3)}, family, jax.random.key(0), **kwargs)
    with pytest.raises(TypeError, match="batch_size"):
        variational.fit(gaussian_target, family, jax.random.key(0), batch_size=2, **kwargs)


# A conjugate toy model: z ~ N(0, 1), x | z ~ N(z, 1), x = 1.5 observed; log Z = log N(1.5;
# 0, 2). q = N(0.6, 0.8^2) is near, not at, the posterior N(0.75, 0.5).
X_OBS = 1.5
TOY_LOG_Z = -0.5 * math.log(2 * math.pi * 2.0) - X_OBS**2 / 4.0
TOY_Q = variational.MeanfieldGaussian.from_scale(jnp.array([0.6]), jnp.array([0.8]))
# The bounds are compared at q = the prior N(0, 1), far enough from the posterior that
# IWAE_K visibly tightens with K.
TOY_PRIOR_Q = variational.MeanfieldGaussian.from_scale(jnp.zeros(1), jnp.ones(1))
REPLICATES = 4000


def _toy_logdensity(z):
    return jnp.sum(-0.5 * z**2 - 0.5 * (X_OBS - z) ** 2 - math.log(2 * math.pi))


@jax.jit
def _bounds(key):
    objectives = [
        variational.elbo(1),
        variational.iwae(4),
        variational.iwae(16),
        variational.iwae(64),
        variational.miwae(4, 4),
        variational.ciwae(16, beta=0.5),
        variational.piwae(4, 4),
    ]
    keys = jax.random.split(key, REPLICATES)
    return [-jax.vmap(lambda k, o=o: o(TOY_PRIOR_Q, k, _toy_logdensity))(keys) for o in objectives]


def test_importance_weighted_bounds_tighten_with_k():
    values = [np.asarray(v, np.float64) for v in _bounds(jax.random.key(8))]
    means = [v.mean() for v in values]
    ses = [v.std(ddof=1) / math.sqrt(REPLICATES) for v in values]
    elbo, iwae4, iwae16, iwae64, miwae44, ciwae16, piwae44 = means
    for lower, upper, se_lower, se_upper in zip(
        means[:3], means[1:4], ses[:3], ses[1:4], strict=True
    ):
        assert upper - lower > 3 * math.hypot(se_lower, se_upper)
    for mean, se in zip(means, ses, strict=True):
        assert mean < TOY_LOG_Z + 3 * se
    # MIWAE(4, 4) is the mean of IWAE_4 bounds; CIWAE lies between ELBO and IWAE_16; the
    # value of PIWAE(4, 4) is IWAE_16's.
    assert abs(miwae44 - iwae4) < 4 * math.hypot(ses[4], ses[1])
    assert elbo < ciwae16 < iwae16
    assert abs(piwae44 - iwae16) < 4 * math.hypot(ses[6], ses[2])


@jax.jit
def _iwae_loc_gradients(key):
    grads = {}
    for k in (4, 16, 64, 256):
        keys = jax.random.split(jax.random.fold_in(key, k), REPLICATES)
        loss = variational.iwae(k)
        g = jax.vmap(lambda kk, loss=loss: jax.grad(loss)(TOY_Q, kk, _toy_logdensity))(keys)
        grads[k] = g.params["loc"][:, 0]
    return grads


def test_inference_network_snr_falls_like_one_over_sqrt_k():
    """Rainforth et al. 2018: under IWAE_K the inference network's gradient shrinks like
    1/K and its noise like 1/sqrt(K), so its signal-to-noise ratio falls like 1/sqrt(K)."""
    grads = _iwae_loc_gradients(jax.random.key(9))
    ks = np.array(sorted(grads))
    snr = np.array([abs(np.mean(grads[k])) / np.std(grads[k]) for k in ks])
    slope = np.polyfit(np.log(ks), np.log(snr), 1)[0]
    assert -0.8 < slope < -0.3, (snr, slope)


def _double_well_log_z():
    grid = np.linspace(-8, 8, 1601)
    z1, z2 = np.meshgrid(grid, grid, indexing="ij")
    log_p = -0.5 * (z1**2 - 2.0) ** 2 - 0.5 * z2**2
    return float(np.log(np.exp(log_p).sum() * (grid[1] - grid[0]) ** 2))


def test_stochastic_flow_evidence_is_unbiased():
    target = examples.double_well()
    family = flows.stochastic(
        [flows.realnvp(2, (8,)), flows.langevin_block(0.5), flows.metropolis_block(1.0)]
    )
    approx = variational.fit(
        target,
        family,
        jax.random.key(10),
        optimizer=optax.adam(3e-3),
        num_steps=100,
        num_particles=16,
        progress=False,
    )
    log_w = np.asarray(approx.log_weights(jax.random.key(11), 20000)[1], np.float64)
    w = np.exp(log_w - log_w.max())
    log_z_hat = log_w.max() + np.log(w.mean())
    se = w.std(ddof=1) / (w.mean() * math.sqrt(w.size))  # delta method, on the log scale
    assert abs(log_z_hat - _double_well_log_z()) < 3 * se + 1e-3, (log_z_hat, se)
    with pytest.raises(NotImplementedError):
        approx.log_prob(jnp.zeros((1, 2)))


def test_flat_positions_roundtrip(gaussian_target):
    flat, unravel = ravel_pytree(gaussian_target.init)
    assert flat.shape == (3,)
    assert set(unravel(flat)) == {"a", "b"}


# log Z - ELBO of RealNVP(4 layers, (32, 32)) on a base of scale 2 after 1000 Adam steps at
# 3e-3 with 128 draws a step, the median over the fits from keys 0, 1, 2: U1 0.148 (fits
# 0.481, 0.118, 0.148), U3 0.478 (0.475, 0.538, 0.478); the full-length figures are in
# benchmarks/flows.py. The tests allow 0.1 above them. One fit's end point moves with
# rounding: the key-0 fit of U1 measured 0.142 before the optimiser step's guard moved
# from the state to the update (the same arithmetic, fused differently: the losses first
# differ at step 7, by 1e-7), and 0.481 after; over keys 0-4 the fits measured 0.098 to
# 0.222 before and 0.118 to 0.481 after. The median of three does not hang on one.
# The energies spread over a box about 8 wide around the origin; from the default base of
# scale 0.1 single fits measured 0.695 and 0.934 (the widening takes more steps).
MEASURED_GAPS = {"u1": 0.148, "u3": 0.478}
GAP_MARGIN = 0.1


@pytest.mark.parametrize("name", sorted(MEASURED_GAPS))
def test_realnvp_gap_on_rezende_energies_at_reduced_steps(name, realnvp_small):
    family, optimizer = realnvp_small
    target = examples.ENERGIES[name]()
    gaps = []
    for seed in range(3):
        # Same target, family and optimizer objects: the three fits share one program.
        approx = variational.fit(
            target,
            family,
            jax.random.key(seed),
            optimizer=optimizer,
            num_steps=1000,
            num_particles=128,
            progress=False,
        )
        elbo, se = approx.elbo(jax.random.key(1), 1000)
        gap = examples.ENERGY_LOG_Z[name] - elbo
        assert gap > -3 * se, (name, seed, gap, se)
        gaps.append(gap)
    assert np.median(gaps) < MEASURED_GAPS[name] + GAP_MARGIN, (name, gaps)


@pytest.fixture(scope="module")
def realnvp_small():
    return flows.realnvp(4, (32, 32), base_scale=2.0), optax.adam(3e-3)


def test_nonfinite_steps_are_skipped_counted_and_warned():
    # The density is NaN right of 1: a draw there makes the step's loss and gradient NaN.
    target = inferax.Target.from_logdensity(
        lambda x: jnp.where(x[0] > 1.0, jnp.nan, -0.5 * jnp.sum(x**2)), jnp.zeros(2)
    )

    def run(chunk_size):
        with pytest.warns(RuntimeWarning, match="non-finite"):
            return variational.fit(
                target,
                variational.meanfield_gaussian(init_scale=1.0),
                jax.random.key(0),
                optimizer=optax.adam(0.01),
                num_steps=50,
                chunk_size=chunk_size,
                progress=False,
            )

    approx = run(None)
    skipped = int(np.sum(~np.isfinite(approx.losses)))
    assert 0 < approx.num_nonfinite == skipped
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(approx.params))
    dt = approx.to_datatree(jax.random.key(1), 20)
    assert dt["posterior"].attrs["num_nonfinite"] == skipped
    # The first chunk that went non-finite ran again with the guard, from where it started,
    # as did every chunk after it: the fit is the same in chunks of 7 steps as in one.
    chunked = run(7)
    for a, b in zip(jax.tree.leaves(approx.params), jax.tree.leaves(chunked.params), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(approx.losses, chunked.losses)


def test_objective_step_with_an_infinite_gradient_entry_keeps_the_parameters():
    # The loss is finite at loc = (0, 1) but its gradient in the first entry is infinite.
    def objective(family, rng_key, logdensity_fn):
        del rng_key, logdensity_fn
        return jnp.sum(jnp.sqrt(jnp.abs(family.params["loc"])))

    family = variational.meanfield_gaussian().init(jax.random.key(0), jnp.array([0.0, 1.0]))
    optimizer = optax.adam(0.1)
    step = ObjectiveStep(optimizer, objective)
    target = inferax.Target.from_logdensity(lambda x: -0.5 * jnp.sum(x**2), jnp.zeros(2))
    (new, opt_state), metrics = step((family, optimizer.init(family)), jax.random.key(1), target)
    assert bool(metrics["nonfinite"]) and bool(jnp.isfinite(metrics["loss"]))
    for before, after in zip(jax.tree.leaves(family), jax.tree.leaves(new), strict=True):
        assert bool(jnp.all(before == after))
    assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(opt_state))
    # A finite step moves the parameters.
    shifted = variational.meanfield_gaussian().init(jax.random.key(0), jnp.array([0.5, 1.0]))
    (moved, _), metrics = step((shifted, optimizer.init(shifted)), jax.random.key(1), target)
    assert not bool(metrics["nonfinite"])
    assert not bool(jnp.all(moved.params["loc"] == shifted.params["loc"]))
