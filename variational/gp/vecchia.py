"""The Vecchia factor of a GP prior over inducing values, and the sparse algebra that lets
SWSGP whiten its ``q(u)`` by it: ``u_j = c_j^T u_N(j) + sqrt(F_j) v_j`` with ``N(j)`` the
``H`` nearest predecessors of ``u_j``, so ``v ~ N(0, I)`` under the Vecchia prior."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.linalg import cho_solve

from inferax.variational.gp.linalg import cholesky_with_jitter


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
    factors, used = cholesky_with_jitter(blocks, jitter)

    def one(z, near, ok, factor):
        knj = ok * kernel.matrix(Z[near], z[None, :])[:, 0]
        c = cho_solve((factor, True), knj)
        kjj = kernel.diag(z[None, :])[0] + used
        return c, jnp.maximum(kjj - knj @ c, 1e-12)

    c, F = jax.vmap(one)(Z, safe, okf, factors)
    return c, F, used


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


__all__ = ["sparse_rows_norm", "vecchia_coefficients", "vecchia_solve"]
