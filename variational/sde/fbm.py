"""Markov-approximate fractional Brownian motion (MA-fBM): ``B_H(t) ~ sum_k omega_k
(Y_k(t) - Y_k(0))`` with Ornstein-Uhlenbeck processes ``dY_k = -gamma_k Y_k dt + dW`` that
share one Brownian motion ``W``; the speeds ``gamma_k``, the optimal weights ``omega``
(closed form, differentiable in the Hurst index), and sampling of approximate paths.

Type I approximates Mandelbrot-van Ness fBM: ``Y(0)`` starts from its stationary law
``N(0, [1/(gamma_i + gamma_j)])``. Type II approximates Riemann-Liouville fBM:
``Y(0) = 0``.

References:
  Daems, Opper, Crevecoeur, Birdal, "Variational Inference for SDEs Driven by Fractional
  Noise", ICLR 2024. Harms, Stefanovits, "Affine representations of fractional processes
  with applications in mathematical finance", 2019.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.scipy.special import gammainc, gammaincc, gammaln

KINDS = ("I", "II")
CONTINUED_FRACTION_TERMS = 200
"""Terms of the continued fraction for ``Q(a, x) e^x``; it converges fast for ``x > a + 1``."""


def gammas(num_processes: int, gamma_max: float) -> jax.Array:
    """``gamma_k = r^(k - (K + 1)/2)`` for ``k = 1..K``, ``r = gamma_max^(2/(K - 1))``:
    speeds spread geometrically between ``1/gamma_max`` and ``gamma_max``."""
    if not isinstance(num_processes, int) or num_processes < 2:
        raise ValueError(f"num_processes must be an integer >= 2, got {num_processes!r}")
    if not (math.isfinite(gamma_max) and gamma_max > 1):
        raise ValueError(f"gamma_max must be a finite number > 1, got {gamma_max!r}")
    ratio = gamma_max ** (2.0 / (num_processes - 1))
    k = jnp.arange(1, num_processes + 1, dtype=jnp.result_type(float))
    return ratio ** (k - (num_processes + 1) / 2)


def upper_gamma_times_exp(a, x):
    """``Q(a, x) e^x``, with ``Q`` the regularised upper incomplete gamma function: by a
    continued fraction (modified Lentz) where ``x > a + 1``, where ``Q`` itself would
    underflow and ``e^x`` overflow, and directly elsewhere. Differentiable in ``a`` and
    ``x``."""
    a, x = jnp.broadcast_arrays(jnp.asarray(a), jnp.asarray(x))
    use_fraction = x > a + 1.0
    xf = jnp.where(use_fraction, x, a + 2.0)  # keeps the unused branch finite
    tiny = 1e-300 if xf.dtype == jnp.float64 else 1e-30

    # Gamma(a, x) = e^-x x^a / (x + 1 - a - 1(1-a)/(x + 3 - a - 2(2-a)/(x + 5 - a - ...)))
    b = xf + 1.0 - a
    c = jnp.full_like(b, 1.0 / tiny)
    d = 1.0 / b
    h = d

    def term(i, carry):
        b, c, d, h = carry
        an = -i * (i - a)
        b = b + 2.0
        d = an * d + b
        d = jnp.where(jnp.abs(d) < tiny, tiny, d)
        c = b + an / c
        c = jnp.where(jnp.abs(c) < tiny, tiny, c)
        d = 1.0 / d
        return b, c, d, h * d * c

    _, _, _, h = jax.lax.fori_loop(1, CONTINUED_FRACTION_TERMS, term, (b, c, d, h))
    from_fraction = jnp.exp(a * jnp.log(xf) - gammaln(a)) * h
    xd = jnp.where(use_fraction, 0.0, x)
    direct = gammaincc(a, xd) * jnp.exp(xd)
    return jnp.where(use_fraction, from_fraction, direct)


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be 'I' or 'II', got {kind!r}")


def omega(hurst, speeds: jax.Array, horizon: float, kind: str = "I") -> jax.Array:
    """The weights ``omega = A^-1 b`` that minimise ``int_0^T E (B_H(t) - sum_k omega_k
    (Y_k(t) - Y_k(0)))^2 dt``, in closed form; differentiable in ``hurst``.

    Args:
      hurst: the Hurst index ``H`` in (0, 1).
      speeds: ``gamma``, shape ``(K,)`` (``gammas``).
      horizon: ``T``.
      kind: ``"I"`` (Mandelbrot-van Ness) or ``"II"`` (Riemann-Liouville).

    Returns:
      ``omega``, shape ``(K,)``.
    """
    _check_kind(kind)
    g = jnp.asarray(speeds)
    h = jnp.asarray(hurst, g.dtype)
    t = jnp.asarray(horizon, g.dtype)
    a = h + 0.5
    gi, gj = g[:, None], g[None, :]
    total = gi + gj
    if kind == "II":
        matrix = (t - (1.0 - jnp.exp(-total * t)) / total) / total
        vector = t * g**-a * gammainc(a, g * t) - a * g ** -(a + 1.0) * gammainc(a + 1.0, g * t)
    else:
        decay_i, decay_j = (1.0 - jnp.exp(-gi * t)) / gi, (1.0 - jnp.exp(-gj * t)) / gj
        matrix = (2.0 * t - decay_i - decay_j) / total
        vector = (
            2.0 * t * g**-a
            - t**a / (g * jnp.exp(gammaln(a + 1.0)))
            + (jnp.exp(-g * t) - upper_gamma_times_exp(a, g * t)) * g ** -(a + 1.0)
        )
    return jnp.linalg.solve(matrix, vector)


def increment_covariance(speeds: jax.Array, horizon: float, kind: str = "I") -> jax.Array:
    """``Cov(Y_i(T) - Y_i(0), Y_j(T) - Y_j(0))``, shape ``(K, K)``."""
    _check_kind(kind)
    g = jnp.asarray(speeds)
    gi, gj = g[:, None], g[None, :]
    total = gi + gj
    if kind == "II":
        return (1.0 - jnp.exp(-total * horizon)) / total
    return (2.0 - jnp.exp(-gi * horizon) - jnp.exp(-gj * horizon)) / total


def approximate_variance(hurst, speeds, horizon: float, kind: str = "I") -> jax.Array:
    """``Var(sum_k omega_k (Y_k(T) - Y_k(0)))`` of the approximation at ``T``, with the
    optimal ``omega`` for the horizon ``T``."""
    weights = omega(hurst, speeds, horizon, kind)
    return weights @ increment_covariance(speeds, horizon, kind) @ weights


def exact_variance(hurst, horizon: float, kind: str = "I") -> jax.Array:
    """``Var B_H(T)``: ``T^(2H)`` for type I, ``T^(2H) / (2H Gamma(H + 1/2)^2)`` for II."""
    _check_kind(kind)
    h = jnp.asarray(hurst)
    if kind == "I":
        return horizon ** (2.0 * h)
    return horizon ** (2.0 * h) / (2.0 * h * jnp.exp(2.0 * gammaln(h + 0.5)))


def stationary_covariance(speeds: jax.Array) -> jax.Array:
    """The stationary covariance ``[1/(gamma_i + gamma_j)]`` of ``(Y_1..Y_K)``."""
    g = jnp.asarray(speeds)
    return 1.0 / (g[:, None] + g[None, :])


def stationary_factor(speeds: jax.Array) -> jax.Array:
    """The lower Cholesky factor of ``stationary_covariance``."""
    return jnp.linalg.cholesky(stationary_covariance(speeds))


def initial_state(rng_key, speeds: jax.Array, kind: str) -> jax.Array:
    """A draw of ``Y(0)``: from the stationary law for type I, zero for type II."""
    _check_kind(kind)
    if kind == "II":
        return jnp.zeros_like(speeds)
    return stationary_factor(speeds) @ jax.random.normal(rng_key, speeds.shape, speeds.dtype)


def ou_transition(speeds: jax.Array, dt: float):
    """The exact one-step law of ``Y`` over ``dt`` driven by one shared Brownian increment:
    ``Y' = e^(-gamma dt) Y + xi``, with ``Cov(xi) = (1 - e^(-(g_i+g_j) dt))/(g_i + g_j)``.
    Returns ``(decay, covariance factor)``."""
    g = jnp.asarray(speeds)
    total = g[:, None] + g[None, :]
    covariance = -jnp.expm1(-total * dt) / total
    jitter = 1e-12 * jnp.trace(covariance) * jnp.eye(g.shape[0], dtype=g.dtype)
    return jnp.exp(-g * dt), jnp.linalg.cholesky(covariance + jitter)


def sample_paths(
    rng_key,
    hurst,
    speeds,
    times: jax.Array,
    num_paths: int,
    kind: str = "I",
    horizon: float | None = None,
) -> jax.Array:
    """MA-fBM paths ``sum_k omega_k (Y_k(t) - Y_k(0))`` at ``times`` (increasing, starting
    at 0), with ``Y`` stepped by its exact Gaussian transition; ``omega`` is fitted on
    ``[0, horizon]`` (default: the last time). Shape ``(num_paths, len(times))``."""
    times = jnp.asarray(times)
    weights = omega(hurst, speeds, times[-1] if horizon is None else horizon, kind)
    init_key, step_key = jax.random.split(rng_key)

    def one_path(key):
        start_key, noise_key = jax.random.split(key)
        start = initial_state(start_key, speeds, kind)

        def step(y, xs):
            dt, k = xs
            decay, factor = ou_transition(speeds, dt)
            y = decay * y + factor @ jax.random.normal(k, speeds.shape, speeds.dtype)
            return y, weights @ (y - start)

        keys = jax.random.split(noise_key, times.shape[0] - 1)
        _, values = jax.lax.scan(step, start, (jnp.diff(times), keys))
        return jnp.concatenate([jnp.zeros(1, values.dtype), values])

    del init_key
    return jax.vmap(one_path)(jax.random.split(step_key, num_paths))


__all__ = [
    "KINDS",
    "approximate_variance",
    "exact_variance",
    "gammas",
    "increment_covariance",
    "initial_state",
    "omega",
    "ou_transition",
    "sample_paths",
    "stationary_covariance",
    "stationary_factor",
    "upper_gamma_times_exp",
]
