"""Every proximity operator against a numerical minimisation of its defining problem, and the
mirror maps' identities against automatic differentiation.

The references are independent of the code under test: the objectives are written here in
NumPy (float64), the minimisers are a grid search refined by bounded Brent (separable
problems), SLSQP or L-BFGS-B (the simplex, the TV dual), all to well below 1e-5.
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize as so
from hypothesis import example, given, settings
from hypothesis import strategies as st

from inferax import samplers as S
from inferax.samplers.nonsmooth import tv1d_denoise

TOL = 1e-5
SETTINGS = settings(max_examples=12, deadline=None, derandomize=True)

# One-dimensional mirrors in NumPy: (phi, phi') and the search interval for p given x.
BETA_LO_HI = {"lo": -1.0, "hi": 2.0}


def np_mirror(mirror):
    if isinstance(mirror, S.Burg):
        return (lambda p: -np.log(p)), (lambda p: -1.0 / p), (1e-9, None)
    if isinstance(mirror, S.Entropy):
        return (lambda p: p * np.log(p) - p), np.log, (1e-12, None)
    if isinstance(mirror, S.Hypentropy):
        b = mirror.beta
        return (
            (lambda p: p * np.arcsinh(p / b) - np.sqrt(p**2 + b**2) + b),
            (lambda p: np.arcsinh(p / b)),
            (None, None),
        )
    if isinstance(mirror, S.FermiDirac):
        lo, hi = mirror.lo, mirror.hi
        w = hi - lo

        def phi(p):
            u = (p - lo) / w
            return w * (u * np.log(u) + (1 - u) * np.log1p(-u))

        return phi, (lambda p: np.log((p - lo) / (hi - p))), (lo + 1e-12, hi - 1e-12)
    if isinstance(mirror, S.LogBarrierBox):
        lo, hi = mirror.lo, mirror.hi
        return (
            (lambda p: -np.log(p - lo) - np.log(hi - p)),
            (lambda p: 1 / (hi - p) - 1 / (p - lo)),
            (lo + 1e-12, hi - 1e-12),
        )
    raise AssertionError(mirror)


def coefficient(c, i):
    c = np.asarray(c, dtype=np.float64)
    return float(c) if c.ndim == 0 else float(c[i])


def np_term(term, i):
    """The i-th coordinate's g_i(p) for a separable term, vectorised over p."""
    if isinstance(term, S.L1):
        return lambda p: term.scale * np.abs(p)
    if isinstance(term, S.Linear):
        c = coefficient(term.c, i)
        return lambda p: c * p
    if isinstance(term, S.PlusLinear):
        inner, c = np_term(term.term, i), coefficient(term.c, i)
        return lambda p: inner(p) + c * p
    if isinstance(term, S.NonNegative):
        return lambda p: np.where(p >= 0, 0.0, np.inf)
    if isinstance(term, S.Box):
        return lambda p: np.where((p >= term.lo) & (p <= term.hi), 0.0, np.inf)
    raise AssertionError(term)


def minimise_1d(objective, lo, hi):
    """Global minimiser of a 1-D objective on [lo, hi]: grid, then bounded Brent."""
    grid = np.linspace(lo, hi, 4001)
    with np.errstate(all="ignore"):
        values = objective(grid)
    values = np.where(np.isnan(values), np.inf, values)
    k = int(np.argmin(values))
    a, b = grid[max(k - 1, 0)], grid[min(k + 1, grid.size - 1)]
    if b <= a:
        return grid[k]
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = so.minimize_scalar(
            objective, bounds=(a, b), method="bounded", options={"xatol": 1e-13, "maxiter": 2000}
        )
    candidates = [grid[k], result.x, a, b]
    with np.errstate(all="ignore"):
        scores = [float(objective(np.asarray(c))) for c in candidates]
    return candidates[int(np.nanargmin(scores))]


def reference_prox(term, x, lam, mirror=None, side="left"):
    out = np.empty_like(x)
    for i, xi in enumerate(x):
        g = np_term(term, i)
        if mirror is None:
            lo, hi = xi - 60.0, xi + 60.0
            objective = lambda p, g=g, xi=xi: g(p) + (p - xi) ** 2 / (2 * lam)  # noqa: E731
        else:
            phi, dphi, (lo, hi) = np_mirror(mirror)
            span = 60.0 + 10 * abs(xi)
            lo = xi - span if lo is None else lo
            hi = xi + span if hi is None else hi
            if side == "left":

                def objective(p, g=g, xi=xi, phi=phi, dphi=dphi):
                    return g(p) + (phi(p) - phi(xi) - dphi(xi) * (p - xi)) / lam
            else:

                def objective(p, g=g, xi=xi, phi=phi, dphi=dphi):
                    return g(p) + (phi(xi) - phi(p) - dphi(p) * (xi - p)) / lam

        out[i] = minimise_1d(objective, lo, hi)
    return out


def assert_close(got, want, what):
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    error = np.abs(got - want)
    assert np.all(error <= TOL * (1 + np.abs(want))), f"{what}: got {got}, want {want}"


reals = st.floats(-4.0, 4.0, allow_nan=False)
positives = st.floats(0.05, 4.0, allow_nan=False)
lams = st.floats(0.05, 1.5, allow_nan=False)


# --- Euclidean proximity operators ---------------------------------------------------------

EUCLIDEAN = {
    "L1": S.L1(0.8),
    "NonNegative": S.NonNegative(),
    "Box": S.Box(-0.5, 1.5),
    "Linear": S.Linear(jnp.array([0.3, -1.0, 2.0])),
    "L1+Linear": S.L1(0.8) + S.Linear(jnp.array([0.3, -1.0, 2.0])),
}


@pytest.mark.parametrize("name", list(EUCLIDEAN))
@SETTINGS
@given(x=st.lists(reals, min_size=3, max_size=3), lam=lams)
def test_euclidean_prox_minimises(name, x, lam):
    term = EUCLIDEAN[name]
    with jax.enable_x64(True):
        x = np.asarray(x)
        got = term.prox(jnp.asarray(x), lam)
        assert_close(got, reference_prox(term, x, lam), f"{name}.prox({x}, {lam})")


@SETTINGS
@given(x=st.lists(st.floats(-1.5, 1.5), min_size=3, max_size=3))
def test_simplex_prox_minimises(x):
    with jax.enable_x64(True):
        x = np.asarray(x)
        got = S.Simplex().prox(jnp.asarray(x), 1.0)
        result = so.minimize(
            lambda p: 0.5 * np.sum((p - x) ** 2),
            np.full(3, 0.2),
            jac=lambda p: p - x,
            method="SLSQP",
            bounds=[(0, None)] * 3,
            constraints=[
                {"type": "ineq", "fun": lambda p: 1 - p.sum(), "jac": lambda p: -np.ones(3)}
            ],
            options={"ftol": 1e-15, "maxiter": 500},
        )
        assert_close(got, result.x, f"Simplex.prox({x})")


def tv_reference(y, lam):
    """The TV prox from its dual, a box-constrained least squares solved by L-BFGS-B."""
    n = y.size
    D = np.diff(np.eye(n), axis=0)

    def dual(u):
        r = y - D.T @ u
        return 0.5 * r @ r, -(D @ r)

    result = so.minimize(
        dual,
        np.zeros(n - 1),
        jac=True,
        method="L-BFGS-B",
        bounds=[(-lam, lam)] * (n - 1),
        options={"ftol": 1e-16, "gtol": 1e-13, "maxiter": 20000},
    )
    return y - D.T @ result.x


@SETTINGS
@given(
    # Three lengths only: each length compiles the algorithm's while loop once.
    y=st.sampled_from([2, 7, 30]).flatmap(
        lambda n: st.lists(st.floats(-3, 3), min_size=n, max_size=n)
    ),
    lam=st.floats(0.01, 2.0),
)
@example(y=[0.0, 1.0, 1.0, 0.0, 5.0, 5.0, -2.0], lam=0.3)
def test_tv1d_prox_is_exact(y, lam):
    with jax.enable_x64(True):
        y = np.asarray(y)
        got = S.TotalVariation1D(1.0).prox(jnp.asarray(y), lam)
        assert_close(got, tv_reference(y, lam), f"tv1d({y}, {lam})")


def test_tv1d_prox_runs_under_jit_and_vmap():
    y = jnp.asarray(np.random.default_rng(0).normal(size=(4, 40)), jnp.float32)
    batched = jax.jit(jax.vmap(lambda v: tv1d_denoise(v, 0.5)))(y)
    for row, out in zip(np.asarray(y, np.float64), np.asarray(batched), strict=True):
        np.testing.assert_allclose(out, tv_reference(row, 0.5), atol=1e-4)


# --- Bregman proximity operators -----------------------------------------------------------

C = jnp.array([0.3, 1.0, 2.0])
BREGMAN = [
    # (term, mirror, side, coordinates drawn from)
    (S.L1(0.6), S.Hypentropy(0.7), "left", "reals"),
    (S.L1(0.6), S.Hypentropy(0.7), "right", "reals"),
    (S.L1(0.6), S.Entropy(), "left", "positives"),
    (S.L1(0.6), S.Entropy(), "right", "positives"),
    (S.L1(0.6), S.Burg(), "left", "positives"),
    (S.L1(0.6), S.Burg(), "right", "positives"),
    (S.L1(0.6), S.FermiDirac(**BETA_LO_HI), "left", "box"),
    (S.L1(0.6), S.LogBarrierBox(**BETA_LO_HI), "left", "box"),
    (S.Linear(C), S.Entropy(), "left", "positives"),
    (S.Linear(C), S.Entropy(), "right", "positives"),
    (S.Linear(C), S.Burg(), "left", "positives"),
    (S.Linear(C), S.Burg(), "right", "positives"),
    (S.Linear(C), S.Hypentropy(1.3), "left", "reals"),
    (S.Linear(0.3 * C), S.Hypentropy(1.3), "right", "reals"),
    (S.Linear(C), S.FermiDirac(**BETA_LO_HI), "left", "box"),
    (S.NonNegative(), S.Hypentropy(1.0), "left", "reals"),
    (S.NonNegative(), S.Hypentropy(1.0), "right", "reals"),
    (S.Box(-0.5, 1.5), S.Hypentropy(1.0), "left", "reals"),
    (S.Box(-0.5, 1.5), S.Entropy(), "right", "positives"),
    (S.Box(-0.5, 1.5), S.LogBarrierBox(**BETA_LO_HI), "left", "box"),
    (S.L1(0.6) + S.Linear(0.5 * C), S.Hypentropy(0.7), "left", "reals"),
]
POINTS = {
    "reals": reals,
    "positives": positives,
    "box": st.floats(-0.95, 1.95, allow_nan=False),
}


def _id(case):
    term, mirror, side, _ = case
    return f"{type(term).__name__}-{type(mirror).__name__}-{side}"


@pytest.mark.parametrize("case", BREGMAN, ids=[_id(case) for case in BREGMAN])
@SETTINGS
@given(data=st.data(), lam=st.floats(0.05, 1.2))
def test_bregman_prox_minimises(case, data, lam):
    term, mirror, side, points = case
    x = np.asarray(data.draw(st.lists(POINTS[points], min_size=3, max_size=3)))
    with jax.enable_x64(True):
        got = term.bregman_prox(jnp.asarray(x), lam, mirror, side)
        want = reference_prox(term, x, lam, mirror, side)
        assert_close(got, want, f"{_id(case)} prox({x}, {lam})")


@SETTINGS
@given(x=st.floats(-0.5, 0.5), lam=st.floats(0.2, 1.0), beta=st.floats(0.2, 2.0))
def test_hypentropy_l1_dead_zone_is_zero(x, lam, beta):
    # Inside |x| <= beta sinh(lam * scale) the left Bregman prox is exactly 0. One public
    # implementation returns sqrt(x^2 + beta^2) - beta there, which is not the minimiser.
    mirror, term = S.Hypentropy(beta), S.L1(1.0)
    with jax.enable_x64(True):
        got = float(term.bregman_prox(jnp.asarray([x]), lam, mirror, "left")[0])
        want = reference_prox(term, np.asarray([x]), lam, mirror, "left")[0]
        assert abs(got - want) <= TOL
        if abs(x) <= beta * np.sinh(lam):
            assert got == 0.0


def test_the_dead_zone_bug_would_be_caught():
    # The wrong dead-zone value is far from the numerical minimiser: the tests above see it.
    x, lam, beta = 0.3, 0.5, 1.0
    wrong = np.sqrt(x**2 + beta**2) - beta
    want = reference_prox(S.L1(1.0), np.asarray([x]), lam, S.Hypentropy(beta), "left")[0]
    assert abs(want) <= TOL and abs(wrong - want) > 100 * TOL


@SETTINGS
@given(z=st.lists(st.floats(-2, 2), min_size=2, max_size=2), lam=st.floats(0.05, 1.0))
def test_simplex_entropy_linear_prox_minimises(z, lam):
    mirror, c = S.SimplexEntropy(), np.array([0.4, -0.7])

    def to_simplex(v):
        e = np.exp(np.append(v, 0.0) - np.max(np.append(v, 0.0)))
        return (e / e.sum())[:-1]

    def phi(p):
        full = np.append(p, 1 - p.sum())
        return np.sum(full * np.log(full))

    def dphi(p):
        return np.log(p) - np.log(1 - p.sum())

    with jax.enable_x64(True):
        x = to_simplex(np.asarray(z))
        got = S.Linear(jnp.asarray(c)).bregman_prox(jnp.asarray(x), lam, mirror, "left")

        def objective(v):
            p = to_simplex(v)
            return c @ p + (phi(p) - phi(x) - dphi(x) @ (p - x)) / lam

        result = so.minimize(objective, np.asarray(z), method="BFGS", options={"gtol": 1e-12})
        assert_close(got, to_simplex(result.x), f"SimplexEntropy Linear prox({x}, {lam})")
        assert bool(S.Simplex().bregman_prox(jnp.asarray(x), lam, mirror) is not None)


def test_simplex_bregman_projection_with_entropy():
    with jax.enable_x64(True):
        x = jnp.array([0.5, 0.9, 0.1])
        for side in ("left", "right"):
            p = S.Simplex().bregman_prox(x, 1.0, S.Entropy(), side)
            np.testing.assert_allclose(p, x / 1.5)
        inside = jnp.array([0.2, 0.3, 0.1])
        np.testing.assert_allclose(S.Simplex().bregman_prox(inside, 1.0, S.Entropy()), inside)


def test_unsupported_pairs_raise_not_implemented():
    with pytest.raises(NotImplementedError, match="TotalVariation1D"):
        S.TotalVariation1D(1.0).bregman_prox(jnp.zeros(3), 0.1, S.Hypentropy(1.0), "left")
    with pytest.raises(NotImplementedError):
        S.Simplex().bregman_prox(jnp.zeros(3), 0.1, S.Burg(), "left")
    with pytest.raises(ValueError, match="side"):
        S.L1(1.0).bregman_prox(jnp.zeros(3), 0.1, S.Entropy(), "middle")


def test_nonsmooth_terms_are_pytrees_inside_a_target():
    import inferax

    for term in [
        S.L1(1.0),
        S.NonNegative(),
        S.Box(0.0, 1.0),
        S.Simplex(),
        S.Linear(1.0),
        S.TotalVariation1D(2.0),
        S.L1(1.0) + S.Linear(jnp.ones(2)),
    ]:
        target = inferax.Target(
            log_prior=lambda x: -jnp.sum(x**2), init=jnp.full(2, 0.25), nonsmooth=term
        )
        leaves, tree = jax.tree.flatten(target)
        rebuilt = jax.tree.unflatten(tree, leaves)
        assert float(rebuilt.logdensity(jnp.full(2, 0.25))) == float(
            target.logdensity(jnp.full(2, 0.25))
        )


# --- Mirror maps ---------------------------------------------------------------------------

MIRRORS = {
    "Burg": (S.Burg(), lambda r: r.uniform(0.05, 5.0, 3)),
    "Entropy": (S.Entropy(), lambda r: r.uniform(0.05, 5.0, 3)),
    "FermiDirac": (S.FermiDirac(-1.0, 2.0), lambda r: r.uniform(-0.95, 1.95, 3)),
    "LogBarrierBox": (S.LogBarrierBox(-1.0, 2.0), lambda r: r.uniform(-0.95, 1.95, 3)),
    "Hypentropy": (S.Hypentropy(0.5), lambda r: r.uniform(-5.0, 5.0, 3)),
    "SimplexEntropy": (S.SimplexEntropy(), lambda r: r.dirichlet(np.ones(4))[:3]),
    # Its dual 1/x_d - 1/x_i is ill-conditioned near the last face (grad phi*'s Jacobian
    # times the Hessian ~ 1/x_d^2 magnifies rounding), so the identities are checked inside;
    # MAMLA carries the reciprocals instead, checked near the faces in test_constrained.py.
    "SimplexLogBarrier": (S.SimplexLogBarrier(), lambda r: r.dirichlet(np.full(4, 4.0))[:3]),
}


@pytest.mark.parametrize("name", list(MIRRORS))
def test_mirror_identities(name):
    mirror, draw = MIRRORS[name]
    rng = np.random.default_rng(0)
    with jax.enable_x64(True):
        for _ in range(5):
            x = jnp.asarray(draw(rng))
            assert bool(mirror.in_domain(x))
            np.testing.assert_allclose(mirror.grad_conj(mirror.grad(x)), x, rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(mirror.grad(x), jax.grad(mirror.value)(x), rtol=1e-9)
            jacobian = jax.jacfwd(mirror.grad)(x)
            hess = mirror.hess(x)
            dense = jnp.diag(hess) if mirror.is_diagonal else hess
            np.testing.assert_allclose(dense, jacobian, rtol=1e-9, atol=1e-12)
            root = mirror.hess_sqrt(x)
            root = jnp.diag(root) if mirror.is_diagonal else root
            np.testing.assert_allclose(root @ root.T, dense, rtol=1e-9)
            # grad phi* is the inverse map: its Jacobian is the inverse Hessian.
            y = mirror.grad(x)
            np.testing.assert_allclose(
                jax.jacfwd(mirror.grad_conj)(y) @ dense, np.eye(3), atol=1e-8
            )


def test_mirror_maps_are_hashable_and_checked():
    assert hash(S.Hypentropy(1.0)) == hash(S.Hypentropy(1.0))
    assert S.FermiDirac(0.0, 2.0) != S.FermiDirac(0.0, 3.0)
    with pytest.raises(ValueError, match="beta"):
        S.Hypentropy(0.0)
    with pytest.raises(ValueError, match="lo < hi"):
        S.LogBarrierBox(1.0, 1.0)
    assert not bool(S.SimplexEntropy().in_domain(jnp.array([0.6, 0.5])))
    assert not bool(S.Burg().in_domain(jnp.array([1.0, 0.0])))
