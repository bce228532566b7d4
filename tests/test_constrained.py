"""Constrained supports with mass at the walls, sampled with default starts.

- Metropolis-adjusted mirror Langevin (MAMLA) on Dirichlet(0.8, 1.5, 4) and
  Dirichlet(0.3 x 4), both from one Dirichlet of 7 components (the simplex's log barrier),
  and on Gamma(0.5, 1) x Gamma(0.5, 1) (Burg's mirror): means and standard deviations
  within 4 MCSE of the exact ones, every chain moving.
- The adjusted Bregman-Moreau step (the box's log barrier on [0, 1]^4) on one product
  target, so that one compile covers three: Beta(0.5, 0.5); a correlated Gaussian
  truncated to [0, 1]^2 with its mean near two walls; and
  ``pi(x) ∝ exp(-(x - 0.3)^2 / (2 0.25^2) - 1.5|x|)`` on [0, 1], whose L1 term is the
  target's nonsmooth part. Moments within 4 MCSE of quadrature,
  and, for the 1-D factors, the 1-Wasserstein distance within 4 of its Monte Carlo scale
  ``int sqrt(F (1 - F)) dx / sqrt(ESS)``.
- Starts: default starts lie inside the kernel's domain (a mirror's, or an indicator's); an
  explicit start outside it is refused by name before anything compiles.
- Numerics: the mirror geometry is computed from the dual point and stays finite where the
  primal point has rounded onto a wall; "left the domain" and "non-finite" are told apart.

Chains are many and long: compiling dominates, running them costs little.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from mcse_helpers import assert_within_mcse, mean_and_mcse, min_ess, sd_and_mcse

import inferax
from inferax import samplers as S
from inferax.chain_starts import jittered_positions
from inferax.compile_cache import compile_count
from inferax.samplers.mamla import carried_dual, dual_geometry, mamla_algorithm, shifted_dual

NUM_CHAINS = 64
RUN = {"num_chains": NUM_CHAINS, "num_warmup": 1000, "num_samples": 1000, "thinning": 5}


def simplex_logdensity(alpha):
    alpha = jnp.asarray(alpha)

    def logdensity(x):
        full = jnp.concatenate([x, 1.0 - jnp.sum(x, keepdims=True)])
        return jnp.sum((alpha - 1.0) * jnp.log(full))

    return logdensity


def check_dirichlet(name, full, alpha):
    alpha = np.asarray(alpha)
    total = alpha.sum()
    mean, mean_mcse = mean_and_mcse(full)
    assert_within_mcse(f"{name} mean", mean, mean_mcse, alpha / total)
    sd, sd_mcse = sd_and_mcse(full)
    exact_sd = np.sqrt(alpha * (total - alpha) / (total**2 * (total + 1)))
    assert_within_mcse(f"{name} sd", sd, sd_mcse, exact_sd)


def check_every_chain_moves(post):
    assert not post.stats["nonfinite"].any()
    assert post.stats["acceptance_rate"].mean(axis=1).min() > 0.2, "a chain is stuck"


SIMPLEX_ALPHA = np.array([0.8, 1.5, 4.0, 0.3, 0.3, 0.3, 0.3])


def test_mamla_on_the_simplex():
    # One Dirichlet of 7 components holds both targets in one compile: the two renormalised
    # blocks (p1..p3)/sum and (p4..p7)/sum are Dirichlet(0.8, 1.5, 4) and Dirichlet(0.3 x 4),
    # independent of each other and of the sums (the Dirichlet's neutrality).
    init = jnp.full(SIMPLEX_ALPHA.size - 1, 1.0 / SIMPLEX_ALPHA.size)
    target = inferax.Target.from_logdensity(simplex_logdensity(SIMPLEX_ALPHA), init)
    post = inferax.sample(target, S.mamla(S.SimplexLogBarrier()), jax.random.key(3), **RUN)
    x = post.draws["x"]
    full = np.concatenate([x, 1.0 - x.sum(-1, keepdims=True)], axis=-1)
    assert np.all(full > 0.0), "a draw left the simplex"
    check_dirichlet("Dirichlet(0.8, 1.5, 4, 0.3 x 4)", full, SIMPLEX_ALPHA)
    for name, block in [
        ("Dirichlet(0.8, 1.5, 4)", slice(0, 3)),
        ("Dirichlet(0.3 x 4)", slice(3, 7)),
    ]:
        part = full[..., block] / full[..., block].sum(-1, keepdims=True)
        check_dirichlet(name, part, SIMPLEX_ALPHA[block])
    check_every_chain_moves(post)


def test_mamla_on_the_orthant():
    # Gamma(shape 0.5, rate 1) twice: the density is infinite at the wall.
    target = inferax.Target.from_logdensity(lambda x: jnp.sum(-0.5 * jnp.log(x) - x), jnp.ones(2))
    post = inferax.sample(target, S.mamla(S.Burg()), jax.random.key(4), **RUN)
    x = post.draws["x"]
    assert np.all(x > 0.0)
    mean, mean_mcse = mean_and_mcse(x)
    assert_within_mcse("Gamma(0.5) mean", mean, mean_mcse, [0.5, 0.5])
    sd, sd_mcse = sd_and_mcse(x)
    assert_within_mcse("Gamma(0.5) sd", sd, sd_mcse, [np.sqrt(0.5)] * 2)
    check_every_chain_moves(post)


# --- the box: one product target, one compile ----------------------------------------------

TRUNCATED_MEAN = np.array([0.1, 0.85])
TRUNCATED_COV = np.array([[0.09, 0.054], [0.054, 0.0625]])  # sd 0.3 and 0.25, correlation 0.72
TRUNCATED_PRECISION = np.linalg.inv(TRUNCATED_COV)
L1_SCALE = 1.5


def box_logdensity(x):
    """The smooth part of the product target: Beta(0.5, 0.5) on x0, the truncated Gaussian on
    (x1, x2), and the Gaussian factor of the L1 target on x3."""
    beta = -0.5 * jnp.log(x[0]) - 0.5 * jnp.log1p(-x[0])
    r = x[1:3] - TRUNCATED_MEAN
    gaussian = -0.5 * r @ jnp.asarray(TRUNCATED_PRECISION, x.dtype) @ r
    return beta + gaussian - 0.5 * (x[3] - 0.3) ** 2 / 0.25**2


def box_target():
    return inferax.Target(
        log_prior=box_logdensity,
        init=jnp.full(4, 0.5),
        nonsmooth=S.L1(jnp.array([0.0, 0.0, 0.0, L1_SCALE])),
    )


def cdf_on(grid, density):
    density = density / np.trapezoid(density, grid)
    cdf = np.concatenate([[0.0], np.cumsum((density[1:] + density[:-1]) / 2 * np.diff(grid))])
    return density, cdf


def wasserstein_and_scale(draws, grid, cdf):
    """``int |F_n - F| dx`` and its Monte Carlo scale ``int sqrt(F (1 - F)) dx / sqrt(ESS)``."""
    ordered = np.sort(np.ravel(draws))
    empirical = np.searchsorted(ordered, grid, side="right") / ordered.size
    distance = np.trapezoid(np.abs(empirical - cdf), grid)
    scale = np.trapezoid(np.sqrt(cdf * (1.0 - cdf)), grid) / np.sqrt(min_ess(draws[..., None]))
    return distance, scale


def exact_box_moments():
    """Means and sds of the four coordinates, by quadrature (Beta's in closed form)."""
    grid = np.linspace(0.0, 1.0, 1201)
    g1, g2 = np.meshgrid(grid, grid, indexing="ij")
    r = np.stack([g1, g2], -1) - TRUNCATED_MEAN
    density = np.exp(-0.5 * np.einsum("...i,ij,...j->...", r, TRUNCATED_PRECISION, r))
    mass = np.trapezoid(np.trapezoid(density, grid), grid)

    def expect(f):
        return np.trapezoid(np.trapezoid(f * density, grid), grid) / mass

    means = [expect(g1), expect(g2)]
    sds = [np.sqrt(expect(g1**2) - means[0] ** 2), np.sqrt(expect(g2**2) - means[1] ** 2)]
    l1_density, _ = cdf_on(grid, np.exp(-((grid - 0.3) ** 2) / (2 * 0.25**2) - L1_SCALE * grid))
    l1_mean = np.trapezoid(grid * l1_density, grid)
    l1_sd = np.sqrt(np.trapezoid((grid - l1_mean) ** 2 * l1_density, grid))
    return np.array([0.5, *means, l1_mean]), np.array([np.sqrt(1 / 8), *sds, l1_sd])


@pytest.fixture(scope="module")
def box_run():
    kernel = S.bregman_moreau_mamla(S.LogBarrierBox(0.0, 1.0), smoothing=1e-3)
    return inferax.sample(box_target(), kernel, jax.random.key(5), **RUN)


def test_adjusted_bregman_moreau_on_the_box_moments(box_run):
    x = box_run.draws["x"]
    assert np.all((x > 0.0) & (x < 1.0)), "a draw left the box"
    exact_mean, exact_sd = exact_box_moments()
    mean, mean_mcse = mean_and_mcse(x)
    assert_within_mcse("box mean", mean, mean_mcse, exact_mean)
    sd, sd_mcse = sd_and_mcse(x)
    assert_within_mcse("box sd", sd, sd_mcse, exact_sd)


def test_adjusted_bregman_moreau_on_the_box_wasserstein(box_run):
    grid = np.linspace(0.0, 1.0, 20001)
    inner = grid[1:-1]  # the Beta density is infinite at both ends
    beta = np.concatenate([[0.0], 2.0 / np.pi * np.arcsin(np.sqrt(inner)), [1.0]])
    _, l1 = cdf_on(grid, np.exp(-((grid - 0.3) ** 2) / (2 * 0.25**2) - L1_SCALE * grid))
    x = box_run.draws["x"]
    for name, column, cdf in [("Beta(0.5, 0.5)", 0, beta), ("L1 on [0, 1]", 3, l1)]:
        distance, scale = wasserstein_and_scale(x[..., column], grid, cdf)
        assert distance <= 4.0 * scale, f"{name}: W1 {distance} > 4 x {scale}"


def test_box_run_reports_its_faults_apart(box_run):
    stats = box_run.stats
    assert {"acceptance_rate", "left_support", "nonfinite", "diverging", "step_size"} <= set(stats)
    # The kept step's own flags; diverging also counts the steps thinned away before it.
    assert not np.any((stats["left_support"] | stats["nonfinite"]) & ~stats["diverging"])
    check_every_chain_moves(box_run)
    assert np.all(np.isfinite(stats["lp"]))


# --- starts inside the domain ---------------------------------------------------------------


def unit_interval_target(**kwargs):
    return inferax.Target(
        log_prior=lambda x: jnp.sum(-0.5 * jnp.log(x) - 0.5 * jnp.log1p(-x)),
        init=jnp.full(1, 0.5),
        **kwargs,
    )


@pytest.mark.parametrize(
    ("kernel", "target", "inside"),
    [
        (
            S.bregman_moreau_langevin(S.FermiDirac(0.0, 1.0), 1e-3, smoothing=1e-3),
            unit_interval_target(nonsmooth=S.L1(1.5)),
            lambda x: (x > 0) & (x < 1),
        ),
        (
            S.mirror_langevin(S.SimplexEntropy(), 1e-3),
            inferax.Target.from_logdensity(simplex_logdensity([0.8, 1.5, 4.0]), jnp.zeros(2)),
            lambda x: (x > 0) & (x.sum(-1, keepdims=True) < 1),
        ),
        (
            S.mymala(0.01, smoothing=0.01),
            inferax.Target(
                log_prior=lambda x: -jnp.sum(x), init=jnp.zeros(2), nonsmooth=S.NonNegative()
            ),
            lambda x: x > 0,
        ),
    ],
    ids=["fermi-dirac", "simplex-entropy", "non-negative-indicator"],
)
def test_default_starts_lie_inside_the_domain(kernel, target, inside):
    # target.init may lie on or off the wall (the simplex target's is its corner): the starts
    # are drawn around the domain's centre then, in its free coordinates.
    starts = jittered_positions(target, jax.random.key(0), 256, kernel.domain(target))
    assert np.all(inside(np.asarray(starts)))
    assert len(np.unique(np.asarray(starts)[:, 0])) == 256, "starts are not dispersed"


def test_an_explicit_start_outside_the_domain_is_refused_before_compiling():
    target = unit_interval_target(nonsmooth=S.L1(1.5))
    kernel = S.bregman_moreau_mamla(S.FermiDirac(0.0, 1.0), smoothing=1e-3)
    before = compile_count()
    with pytest.raises(ValueError, match=r"init: chains \[1\] start outside the kernel's domain"):
        inferax.sample(
            target,
            kernel,
            jax.random.key(0),
            num_chains=2,
            num_warmup=10,
            num_samples=10,
            init=jnp.array([[0.5], [1.5]]),
        )
    assert compile_count() == before


# --- numerics at the walls ------------------------------------------------------------------


@pytest.mark.parametrize(
    "mirror",
    [S.FermiDirac(0.0, 1.0), S.LogBarrierBox(-1.0, 2.0), S.Entropy(), S.Burg(), S.Hypentropy(0.5)],
)
def test_dual_hessian_matches_the_primal_one_and_stays_finite_at_the_walls(mirror):
    y = jnp.array([-1.5, -0.2, 0.7]) if not isinstance(mirror, S.Burg) else -jnp.array([0.5, 2.0])
    np.testing.assert_allclose(
        mirror.dual_log_hess(y), jnp.log(mirror.hess(mirror.grad_conj(y))), rtol=1e-5, atol=1e-5
    )
    far = jnp.array([-80.0, 80.0]) if not isinstance(mirror, S.Burg) else -jnp.array([1e-20, 1e20])
    if isinstance(mirror, S.Entropy):
        far = jnp.array([-80.0, 30.0])
    assert np.all(np.isfinite(mirror.dual_log_hess(far)))


@pytest.mark.parametrize("mirror", [S.SimplexEntropy(), S.SimplexLogBarrier()])
def test_simplex_geometry_is_the_hessian_in_closed_form(mirror):
    with jax.enable_x64(True):
        x = jnp.array([0.3, 1e-3, 0.45])
        dual = carried_dual(mirror, x)
        geometry = dual_geometry(mirror, dual)
        np.testing.assert_allclose(geometry.position, x, rtol=1e-10)
        assert bool(geometry.faithful)
        hess = np.asarray(mirror.hess(x))
        np.testing.assert_allclose(geometry.log_det_hess, np.linalg.slogdet(hess)[1], rtol=1e-10)
        r = jnp.array([0.4, -0.7, 1.1])
        np.testing.assert_allclose(
            geometry.inverse_quadratic(r), r @ np.linalg.solve(hess, r), rtol=1e-10
        )
        # The noise map's covariance, from the standard normal directions, is H.
        columns = jax.vmap(geometry.sqrt_hess_times)(jnp.eye(geometry.noise_size))
        np.testing.assert_allclose(columns.T @ columns, hess, rtol=1e-10)
        # A shift of the carried dual moves the dual point by exactly that shift.
        shift = jnp.array([0.5, -2.0, 4.0])
        moved = dual_geometry(mirror, shifted_dual(mirror, dual, shift)).position
        np.testing.assert_allclose(mirror.grad(moved), mirror.grad(x) + shift, rtol=1e-8)


def test_a_point_rounded_near_a_wall_is_not_faithful():
    # In float32, x_d = 1e-9 cannot be read from 1 - sum(x): the point is refused.
    mirror = S.SimplexLogBarrier()
    reciprocals = 1.0 / jnp.array([0.5, 0.5 - 1e-9, 1e-9], jnp.float32)
    assert not bool(dual_geometry(mirror, reciprocals).faithful)
    assert bool(dual_geometry(mirror, 1.0 / jnp.array([0.5, 0.49, 0.01])).faithful)


def test_a_proposal_rounded_onto_a_wall_left_the_domain_and_is_not_nonfinite():
    # FermiDirac's steps at h = 1e4 land hundreds out in the logit: the sigmoid rounds them
    # onto a wall, off the domain in floating point.
    arcsine = unit_interval_target()
    algorithm = mamla_algorithm(arcsine.logdensity, S.FermiDirac(0.0, 1.0), 1e4)
    keys = jax.random.split(jax.random.key(0), 20)
    _, infos = jax.jit(jax.vmap(algorithm.step, (0, None)))(keys, algorithm.init(jnp.full(1, 0.5)))
    assert infos.left_support.any() and not infos.nonfinite.any()
    # A proposal where the density is NaN is undone and counted as diverging (and there as
    # nonfinite, not left_support) in tests/test_kernel_conformance.py's fault cases.


def test_configs_are_checked():
    with pytest.raises(TypeError, match="mamla: mirror must be a mirror map"):
        S.mamla("entropy")
    with pytest.raises(ValueError, match="mamla: target_acceptance_rate"):
        S.mamla(S.Burg(), target_acceptance_rate=1.5)
    with pytest.raises(ValueError, match="bregman_moreau_mamla: smoothing"):
        S.bregman_moreau_mamla(S.Burg(), smoothing=0.0)
    with pytest.raises(ValueError, match="bregman_moreau_mamla: .*no closed-form"):
        S.bregman_moreau_mamla(S.Hypentropy(1.0), smoothing=0.1).check_target(
            inferax.Target(
                log_prior=lambda x: -jnp.sum(x**2),
                init=jnp.zeros(2),
                nonsmooth=S.TotalVariation1D(1.0),
            )
        )
    with pytest.raises(ValueError, match="mamla: target.init lies outside the domain"):
        S.mamla(S.Burg()).check_target(
            inferax.Target.from_logdensity(lambda x: -jnp.sum(x**2), -jnp.ones(1))
        )
    assert hash(S.mamla(S.SimplexEntropy())) == hash(S.mamla(S.SimplexEntropy()))
