"""Cholesky factors that retry with growing jitter, inside and outside compiled code."""

from __future__ import annotations

import functools
import logging

import jax
import jax.numpy as jnp
from jax.scipy.linalg import solve_triangular

JITTER_GROWTH = 10.0
"""Each retry multiplies the jitter by this factor."""

JITTER_RETRIES = 4
"""Retries after the first attempt, so the largest jitter is ``jitter * 10^4``."""

logger = logging.getLogger("inferax.variational.gp")


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def cholesky_with_jitter(matrix: jax.Array, jitter: float) -> tuple[jax.Array, jax.Array]:
    """The lower Cholesky factor of ``matrix + j I`` with the smallest ``j`` in
    ``jitter * 10^k``, ``k = 0 .. JITTER_RETRIES``, for which it exists.

    The first attempt is made outright and the retries run in a ``lax.while_loop`` behind
    one ``lax.cond``, so a retry costs a factorisation only when the previous one failed
    (a chain of nested conds, one a level, cost more than the factorisation itself for a
    stack of a thousand small blocks). The derivative is the Cholesky factor's own, ``dL =
    L Phi(L^-1 dA L^-T)``, at the factor found, so a failed attempt's NaNs never reach a
    gradient. Callers check the returned jitter (and the result's finiteness) on the host to
    log retries and raise.

    Args:
      matrix: a symmetric ``(n, n)`` matrix, or a stack of them (one jitter for all).
      jitter: the first diagonal jitter.

    Returns:
      ``(L, j)``: the factor (NaN if every attempt failed) and the jitter used.
    """
    eye = jnp.broadcast_to(jnp.eye(matrix.shape[-1], dtype=matrix.dtype), matrix.shape)
    values = jnp.asarray(
        [jitter * JITTER_GROWTH**level for level in range(JITTER_RETRIES + 1)], matrix.dtype
    )

    def attempt(level):
        return jnp.linalg.cholesky(matrix + values[level] * eye), values[level]

    def failed(factor):
        return ~jnp.all(jnp.isfinite(factor))

    first = attempt(0)

    def retry():
        def again(state):
            level, factor, _ = state
            return (level < JITTER_RETRIES) & failed(factor)

        def step(state):
            return (state[0] + 1, *attempt(state[0] + 1))

        return jax.lax.while_loop(again, step, (jnp.zeros((), jnp.int32), *first))[1:]

    return jax.lax.cond(failed(first[0]), retry, lambda: first)


@cholesky_with_jitter.defjvp
def _cholesky_with_jitter_jvp(jitter, primals, tangents):
    (matrix,), (tangent,) = primals, tangents
    factor, used = cholesky_with_jitter(matrix, jitter)
    # Written for a stack of matrices too (leading axes): one retry decision for all.
    tangent = 0.5 * (tangent + jnp.swapaxes(tangent, -1, -2))
    inner = solve_triangular(factor, tangent, lower=True)
    inner = jnp.swapaxes(solve_triangular(factor, jnp.swapaxes(inner, -1, -2), lower=True), -1, -2)
    eye = jnp.broadcast_to(jnp.eye(inner.shape[-1], dtype=inner.dtype), inner.shape)
    phi = jnp.tril(inner) - 0.5 * inner * eye
    return (factor, used), (factor @ phi, jnp.zeros_like(used))


def max_jitter(jitter: float) -> float:
    """The largest jitter ``cholesky_with_jitter`` tries."""
    return jitter * JITTER_GROWTH**JITTER_RETRIES


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def whitening_solve(matrix: jax.Array, rhs: jax.Array, jitter: float):
    """``(L^-1 rhs, j)`` for ``L = cholesky_with_jitter(matrix, jitter)``: the whitened
    projection ``A = L^-1 Kuf`` of the sparse GPs, whose bounds read ``Kuu`` only through it.

    Its gradient is written out because reverse mode through the factor's JVP does not see
    that the factor's cotangent has rank ``|B|`` and costs more. Given ``A_bar``,
    ``rhs_bar = L^-T A_bar`` and ``L_bar = -rhs_bar A^T``, a matrix of rank ``|B|``, so
    ``L^T L_bar`` is formed as ``-(L^T rhs_bar) A^T``; then the Cholesky factor's adjoint,
    ``matrix_bar = L^-T Phi(L^T L_bar) L^-1``, symmetrised (Murray 2016).
    """
    factor, used = cholesky_with_jitter(matrix, jitter)
    return solve_triangular(factor, rhs, lower=True), used


def _whitening_solve_forward(matrix, rhs, jitter):
    factor, used = cholesky_with_jitter(matrix, jitter)
    projection = solve_triangular(factor, rhs, lower=True)
    return (projection, used), (factor, projection)


def _whitening_solve_backward(jitter, residuals, cotangents):
    del jitter
    factor, projection = residuals
    projection_bar, _ = cotangents
    rhs_bar = solve_triangular(factor, projection_bar, lower=True, trans=1)
    inner = -(factor.T @ rhs_bar) @ projection.T
    phi = jnp.tril(inner) - 0.5 * jnp.diag(jnp.diag(inner))
    matrix_bar = solve_triangular(factor, phi, lower=True, trans=1)
    matrix_bar = solve_triangular(factor, matrix_bar.T, lower=True, trans=1).T
    return 0.5 * (matrix_bar + matrix_bar.T), rhs_bar


whitening_solve.defvjp(_whitening_solve_forward, _whitening_solve_backward)


def report_jitter(used, jitter: float, finite: bool, where: str) -> None:
    """Logs a retried factorisation and raises if the retries did not help.

    Args:
      used: the largest jitter that was used (a scalar).
      jitter: the configured first jitter.
      finite: whether the result that depends on the factor is finite.
      where: what was being computed, for the messages.
    """
    used = float(used)
    if not finite and used >= max_jitter(jitter) * (1 - 1e-6):
        raise FloatingPointError(
            f"{where}: the Cholesky factorisation failed even after retrying with jitter "
            f"growing from {jitter:g} to {max_jitter(jitter):g}; the kernel matrix is not "
            "positive definite (duplicate inducing points, a tiny lengthscale, or float32 "
            "with too little jitter)"
        )
    if used > jitter * (1 + 1e-6):
        logger.warning(
            "%s: Cholesky failed with jitter %g; retried and succeeded with jitter %g",
            where,
            jitter,
            used,
        )


__all__ = [
    "JITTER_GROWTH",
    "JITTER_RETRIES",
    "cholesky_with_jitter",
    "max_jitter",
    "report_jitter",
    "whitening_solve",
]
