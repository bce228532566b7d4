"""The Vecchia factor of a GP prior over inducing values, and the sparse algebra that lets
SWSGP whiten its ``q(u)`` by it: ``u_j = c_j^T u_N(j) + sqrt(F_j) v_j`` with ``N(j)`` the
``H`` nearest predecessors of ``u_j``, so ``v ~ N(0, I)`` under the Vecchia prior."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.scipy.linalg import cho_solve

from inferax.variational.gp.linalg import cholesky_with_jitter


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def gp_conditionals(blocks, cross, diag, jitter):
    """A stack of GP conditionals ``u_0 | u_N``: the regression weights ``c = (K_NN + j
    I)^-1 k_N0`` and the variances ``v = k_00 - k_N0^T c``, with ``j`` from one
    ``cholesky_with_jitter`` of the whole stack (add ``j`` to ``v`` where ``k_00`` carries
    the nugget too).

    Its gradient is written out rather than taken through the Cholesky factor's JVP, which
    reverse mode turns into several ``H x H`` triangular solves and products per block:
    with ``g = (K_NN + j I)^-1 c_bar``, ``k_N0_bar = g - 2 v_bar c``, ``K_NN_bar = v_bar c
    c^T - (g c^T + c g^T) / 2`` and ``k_00_bar = v_bar``, one solve per block.

    Args:
      blocks: ``(B, H, H)`` symmetric covariances ``K_NN``.
      cross: ``(B, H)`` covariances ``k_N0``.
      diag: ``(B,)`` variances ``k_00``.
      jitter: the first diagonal jitter.

    Returns:
      ``(c, v, j)``: ``(B, H)``, ``(B,)`` and the jitter used.
    """
    return _conditionals_forward(blocks, cross, diag, jitter)[0]


def _conditionals_forward(blocks, cross, diag, jitter):
    factors, used = cholesky_with_jitter(blocks, jitter)
    weights = jax.vmap(lambda factor, k: cho_solve((factor, True), k))(factors, cross)
    variances = diag - jnp.sum(cross * weights, axis=-1)
    return (weights, variances, used), (factors, weights)


def _conditionals_backward(jitter, residuals, cotangents):
    del jitter
    factors, weights = residuals
    weights_bar, variances_bar, _ = cotangents
    g = jax.vmap(lambda factor, k: cho_solve((factor, True), k))(factors, weights_bar)
    cross_bar = g - 2 * variances_bar[:, None] * weights
    outer = weights[:, :, None] * (
        variances_bar[:, None, None] * weights[:, None, :] - g[:, None, :]
    )
    blocks_bar = 0.5 * (outer + jnp.swapaxes(outer, -1, -2))
    return blocks_bar, cross_bar, variances_bar


gp_conditionals.defvjp(_conditionals_forward, _conditionals_backward)


def vecchia_coefficients(kernel, Z, index, jitter):
    """``(c, F, jitter used)`` of the Vecchia prior: for each inducing point ``j`` with
    predecessor indices ``index[j]`` (``(M, H)``, ``-1`` in empty slots), the regression
    coefficients ``c_j = K_NN^-1 k_Nj`` (zero in empty slots) and the conditional variance
    ``F_j = k_jj - k_jN c_j``, all with ``K + jitter I``.

    The ``H x H`` blocks are factorised as one stack (one jitter decision for all)."""
    valid = index >= 0
    safe = jnp.where(valid, index, 0)
    okf = valid.astype(Z.dtype)

    def block(near, ok):
        both = ok[:, None] * ok[None, :]
        Knn = both * kernel.matrix(Z[near], Z[near])
        # Empty slots become unit, uncorrelated ones, so the block stays positive definite.
        return Knn + (1 - both) * jnp.eye(near.shape[0], dtype=Knn.dtype)

    blocks = jax.vmap(block)(safe, okf)
    cross = jax.vmap(lambda z, near, ok: ok * kernel.matrix(Z[near], z[None, :])[:, 0])(
        Z, safe, okf
    )
    c, F, used = gp_conditionals(blocks, cross, kernel.diag(Z), jitter)
    return c, jnp.maximum(F + used, 1e-12), used


@jax.custom_vjp
def vecchia_solve(coefficients, index, rhs):
    """``x`` with ``x_j = rhs_j + coefficients[j] . x[index[j]]`` for ``j = 0 .. M-1``:
    the solve ``(I - C) x = rhs`` with ``C`` strictly lower triangular, ``H`` entries a
    row (``index[j] < j``; empty slots hold coefficient 0 and any index).

    One pass in index order (``lax.scan``), ``O(M H)``; its gradient is the transposed
    solve, one pass back."""
    return _solve(coefficients, index, rhs)


def _solve(coefficients, index, rhs):
    coefficients, index, rhs = jnp.asarray(coefficients), jnp.asarray(index), jnp.asarray(rhs)

    def row(x, j):
        return x.at[j].set(rhs[j] + coefficients[j] @ x[index[j]]), None

    x, _ = jax.lax.scan(row, jnp.zeros_like(rhs), jnp.arange(rhs.shape[0]))
    return x


def _solve_forward(coefficients, index, rhs):
    x = _solve(coefficients, index, rhs)
    return x, (coefficients, index, x)


def _solve_backward(residuals, x_bar):
    coefficients, index, x = residuals

    # lambda = (I - C)^-T x_bar: lambda_j is complete once every later row has passed its
    # share back, so the pass runs from the last row to the first.
    def row(lam, j):
        return lam.at[index[j]].add(coefficients[j] * lam[j]), None

    size = x.shape[0]
    lam, _ = jax.lax.scan(row, x_bar, jnp.arange(size - 1, -1, -1))
    return lam[:, None] * x[index], None, lam


vecchia_solve.defvjp(_solve_forward, _solve_backward)


def sparse_rows_norm(weights, values, columns):
    """``|sum_r weights[r] L[r, :]|^2`` for rows of a sparse matrix ``L`` given by their
    nonzero ``values`` and ``columns`` (``(T, Q)`` each; a zero value may sit at any
    column), without forming a row of length ``M``.

    The ``T Q`` products are sorted by column and summed per column: ``O(T Q log(T Q))``.
    """
    products = (weights[:, None] * values).reshape(-1)
    keys = columns.reshape(-1)
    order = jnp.argsort(keys)
    keys, products = keys[order], products[order]
    segment = jnp.cumsum(jnp.concatenate([jnp.zeros(1, jnp.int32), keys[1:] != keys[:-1]]))
    sums = jax.ops.segment_sum(products, segment, num_segments=keys.shape[0])
    return jnp.sum(sums**2)


__all__ = ["gp_conditionals", "sparse_rows_norm", "vecchia_coefficients", "vecchia_solve"]
