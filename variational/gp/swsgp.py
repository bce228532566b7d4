"""SWSGP: sparse within sparse GPs, where each point reads only its ``H`` nearest inducing
points, so the number of inducing points ``M`` can grow without an ``M x M`` matrix."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, final

import jax
import jax.numpy as jnp
import optax
from jax.scipy.linalg import cho_solve

from inferax.minibatch import minibatch_indices
from inferax.pytree import pytree_dataclass, static_field
from inferax.validation import check_count
from inferax.variational.gp.covariances import AbstractCovariance, rbf, softplus_inverse
from inferax.variational.gp.inducing import inducing_inputs, initial_inducing
from inferax.variational.gp.likelihoods import AbstractLikelihood, gaussian
from inferax.variational.gp.linalg import cholesky_with_jitter
from inferax.variational.gp.model import AbstractSparseGP, descend, training_batch
from inferax.variational.gp.vecchia import (
    gp_conditionals,
    sparse_rows_norm,
    vecchia_coefficients,
    vecchia_solve,
)

PREDICT_CHUNK = 1024
"""Test points per chunk of the neighbour search in ``predict``."""

KL_RULES = ("vecchia", "neighbour_average")
"""The ELBO's prior term: ``"vecchia"``, ``KL(q(u) || p(u))`` over all ``M`` inducing
values with ``K^-1`` in its Vecchia form (each inducing point conditioned on its ``H``
nearest predecessors); ``"neighbour_average"``, Tran et al.'s mean over the batch's points
of ``KL(q(u_a) || p(u_a))`` on each point's ``H`` neighbours."""

PARAMETRIZATIONS = ("whitened", "scaled")
"""How ``q(u) = N(m, S)`` is held: ``"whitened"``, ``m = L_V v`` (``L_V`` the Vecchia
prior's factor, ``v`` the parameter) and ``S = L L^T`` with ``L`` lower triangular on the
Vecchia pattern; ``"scaled"``, ``m`` itself and ``S = D Kuu D + W W^T``."""


def nearest_inducing(kernel, Z, X, num_neighbours):
    """Indices ``(n, H)`` of the ``H`` inducing points nearest each row of ``X``, in the
    distance scaled by the kernel's lengthscales.

    Exact, by blocks: the columns are cut into blocks of ``b``; the ``H`` blocks with the
    smallest minima hold the ``H`` nearest points (``H`` distinct distances are no larger
    than the ``H``-th smallest block minimum, so no nearer point is left out), and one
    ``top_k`` over their ``H b`` entries picks them. With ``b ~ sqrt(M / H)`` both
    selections cost ``O(sqrt(M H))`` per row, against ``O(M log M)`` for ``top_k`` over all
    ``M`` columns: the search stays a small part of a step as ``M`` grows (``O(n M D)`` for
    the distances).
    """
    scale = jnp.broadcast_to(kernel.lengthscales, X.shape[-1:])[None, :]
    a, b = X / scale, Z / scale
    sq = jnp.sum(b**2, axis=-1)[None, :] - 2.0 * a @ b.T
    n, size = sq.shape
    block = max(1, round(math.sqrt(size / num_neighbours)))
    if size < 4 * num_neighbours * block:
        return jax.lax.top_k(-sq, num_neighbours)[1]
    sq = jnp.pad(sq, ((0, 0), (0, -size % block)), constant_values=jnp.inf)
    blocks = sq.reshape(n, -1, block)
    chosen = jax.lax.top_k(-jnp.min(blocks, axis=-1), num_neighbours)[1]
    candidates = jnp.take_along_axis(blocks, chosen[:, :, None], axis=1)
    columns = chosen[:, :, None] * block + jnp.arange(block)[None, None, :]
    picked = jax.lax.top_k(-candidates.reshape(n, -1), num_neighbours)[1]
    return jnp.take_along_axis(columns.reshape(n, -1), picked, axis=1)


def preceding_neighbours(kernel, Z, rows, num_neighbours):
    """For each inducing point in ``rows``, the indices ``(J, H)`` of its ``H`` nearest
    inducing points among those before it (index order, the kernel's scaled distance) and a
    mask of the slots that hold one (point ``j`` has only ``j`` predecessors)."""
    scale = jnp.broadcast_to(kernel.lengthscales, Z.shape[-1:])[None, :]
    a, b = Z[rows] / scale, Z / scale
    sq = jnp.sum(b**2, axis=-1)[None, :] - 2.0 * a @ b.T
    sq = jnp.where(jnp.arange(Z.shape[0])[None, :] < rows[:, None], sq, jnp.inf)
    negative, index = jax.lax.top_k(-sq, num_neighbours)
    return index, jnp.isfinite(negative)


@final
@pytree_dataclass
class SWSGP(AbstractSparseGP):
    """Sparse within sparse GP (Tran, Milios, Michiardi, Filippone 2021).

    ``q(u) = N(m, S)`` over ``M`` inducing values. Point ``i`` uses the GP conditional on
    its ``H`` nearest inducing points ``a_i`` only: ``f_i | u_a ~ N(k_ia K_aa^-1 u_a,
    k_ii - k_ia K_aa^-1 k_ai)``, with ``q(u_a) = N(m_a, S_aa)``. The ELBO on a minibatch
    ``B`` is ``(n/|B|) sum_i E log p(y_i | f_i) - KL``. With ``kl="vecchia"`` (the
    default) ``KL`` is ``KL(q(u) || p(u))`` over all ``M`` values, with ``K^-1`` replaced
    by its Vecchia form ``sum_j (e_j - c_j)(e_j - c_j)^T / F_j`` (``c_j = K_NN^-1 k_Nj`` on
    the ``H`` nearest predecessors ``N(j)`` of ``u_j``, ``F_j`` its conditional variance);
    it is exact when each ``u_j`` conditions on all its predecessors. With
    ``kl="neighbour_average"`` (``parametrization="scaled"`` only) it is Tran et al.'s
    ``mean_i KL(q(u_a_i) || p(u_a_i))``: one ``H``-dimensional KL, about ``H / M`` of the
    whole, so the prior is outweighed. With ``H = M`` both are SVGP's ELBO.

    ``parametrization="whitened"`` (the default) holds ``m = L_V v`` with ``L_V = (I -
    C)^-1 F^1/2`` the Vecchia prior's factor (``mean`` is ``v``: the prior's part of the KL
    is ``|v|^2 / 2``, as in a whitened SVGP, and a step on ``v`` moves ``m`` along the
    prior's correlations) and ``S = L L^T`` with ``L`` lower triangular on the Vecchia
    pattern: row ``j`` has ``L_jj = softplus(raw_scale_j)`` and ``factor[j]`` at the
    ``Q = factor_neighbours`` nearest of ``N(j)`` (``Q = 0``, the default: mean-field).
    Then ``f_i``'s variance reads ``|L[a_i, :]^T w_i|^2`` and the KL's trace
    ``sum_j |L^T (e_j - c_j)|^2 / F_j``, sums over ``H (Q + 1)`` entries each, and
    ``log |S| = 2 sum_j log L_jj``: the whole KL is exact and costs ``O(M H^3)``, no
    ``M x M`` matrix. The pattern (``prior_neighbours``, ``-1`` in empty slots) is set
    from ``Z`` when the fit starts and kept as ``Z`` moves (any pattern gives a valid
    prior). Computing ``m`` is one pass over the inducing points in order.

    ``parametrization="scaled"`` holds ``m`` itself and ``S = D Kuu D + W W^T``, ``D =
    diag(softplus(raw_scale))`` and ``W (M, R)`` (``R = rank``): its marginal ``S_aa = D_a
    K_aa D_a + W_a W_a^T`` costs ``O(H^2 (D + R))``, but shrinking the prior's covariance
    by ``D`` cannot match a posterior that the data shrink far more along smooth directions
    than rough ones, so its best ``S`` pays heavily in the KL's ``log |S|``
    (``docs/sparse-gp.md``); the Vecchia KL is then estimated from a random batch of the
    inducing points.
    """

    kernel: AbstractCovariance
    likelihood: AbstractLikelihood
    inducing: Any
    mean: Any = None
    raw_scale: Any = None
    factor: Any = None
    scaling: Any = None
    prior_neighbours: Any = None
    num_inducing: int = static_field(default=0)
    num_neighbours: int = static_field(default=32)
    rank: int = static_field(default=0)
    jitter: float = static_field(default=1e-3)
    standardize: bool = static_field(default=True)
    kl: str = static_field(default="vecchia")
    parametrization: str = static_field(default="whitened")
    factor_neighbours: int = static_field(default=0)

    @property
    def whitened(self) -> bool:
        return self.parametrization == "whitened"

    def initialize(self, rng_key, X, y):
        del y
        inducing_key, factor_key = jax.random.split(rng_key)
        Z = initial_inducing(inducing_key, self, X)
        size = Z.shape[0]
        if self.num_neighbours > size:
            raise ValueError(
                f"num_neighbours={self.num_neighbours} exceeds the {size} inducing points"
            )
        if self.whitened:
            index, valid = preceding_neighbours(
                self.kernel, Z, jnp.arange(size), self.num_neighbours
            )
            index = jnp.where(valid, index, -1)
            _, conditional, _ = vecchia_coefficients(self.kernel, Z, index, self.jitter)
            # q(u) starts at N(0, diag(F)): each u_j with its variance given its neighbours.
            return dataclasses.replace(
                self,
                inducing=Z,
                mean=jnp.zeros(size, X.dtype),
                raw_scale=softplus_inverse(jnp.sqrt(conditional)),
                factor=jnp.zeros((size, self.factor_neighbours), X.dtype),
                prior_neighbours=index,
            )
        return dataclasses.replace(
            self,
            inducing=Z,
            mean=jnp.zeros(size, X.dtype),
            raw_scale=jnp.full(size, softplus_inverse(1.0), X.dtype),
            factor=1e-3 * jax.random.normal(factor_key, (size, self.rank), X.dtype),
        )

    def whitened_posterior(self):
        """``(m, rows, c, F, jitter)`` for ``parametrization="whitened"``: the mean of
        ``q(u)``, the rows of ``L`` as ``(values, columns)`` (``(M, H + 1)`` each, the
        diagonal first), and the Vecchia coefficients and conditional variances."""
        index = self.prior_neighbours
        c, conditional, used = vecchia_coefficients(self.kernel, self.inducing, index, self.jitter)
        valid = index >= 0
        safe = jnp.where(valid, index, 0)
        m = vecchia_solve(c, safe, jnp.sqrt(conditional) * self.mean)
        size = index.shape[0]
        width = self.factor.shape[1]
        values = jnp.concatenate(
            [
                jax.nn.softplus(self.raw_scale)[:, None],
                jnp.where(valid[:, :width], self.factor, 0.0),
            ],
            axis=1,
        )
        columns = jnp.concatenate([jnp.arange(size)[:, None], safe[:, :width]], axis=1)
        return m, (values, columns), c, conditional, used

    def whitened_kl(self, rows, c, conditional):
        """``KL(q(u) || p(u))`` with ``K^-1`` in Vecchia form, exactly (``O(M H^3)``)."""
        values, columns = rows
        size = values.shape[0]
        neighbours = jnp.where(self.prior_neighbours >= 0, self.prior_neighbours, 0)
        block = jnp.concatenate([jnp.arange(size)[:, None], neighbours], axis=1)
        residual = jnp.concatenate([jnp.ones((size, 1), c.dtype), -c], axis=1)
        trace = jax.vmap(
            lambda near, weights: sparse_rows_norm(weights, values[near], columns[near])
        )(block, residual)
        value = (
            jnp.sum(trace / conditional)
            + jnp.sum(self.mean**2)
            - size
            + jnp.sum(jnp.log(conditional))
            - 2 * jnp.sum(jnp.log(values[:, 0]))
        )
        return 0.5 * value

    def local_terms(self, X, neighbours, with_kl=True, posterior=None):
        """Per point: the latent mean and variance and (``with_kl``) ``KL(q(u_a) ||
        p(u_a))``, from its neighbour indices ``(n, H)``; ``posterior`` is ``(m, rows)``
        from ``whitened_posterior`` when ``parametrization="whitened"``."""

        # One factorisation of the stack: under vmap a jitter retry's cond would run every
        # branch for every point.
        Kaa = jax.vmap(
            lambda index: self.kernel.matrix(self.inducing[index], self.inducing[index])
        )(neighbours)
        if with_kl and posterior is None:
            return self.neighbour_average_terms(X, neighbours, Kaa)
        kia = jax.vmap(lambda x, index: self.kernel.matrix(self.inducing[index], x[None, :]))(
            X, neighbours
        )[:, :, 0]
        weights, prior_var, used = gp_conditionals(Kaa, kia, self.kernel.diag(X), self.jitter)
        if posterior is not None:
            m, (values, columns) = posterior
            spread = jax.vmap(lambda w, index: sparse_rows_norm(w, values[index], columns[index]))(
                weights, neighbours
            )
            f_mean = jnp.sum(weights * m[neighbours], axis=1)
        else:
            # w^T S_aa w with S_aa = D_a (K_aa + j I) D_a + W_a W_a^T
            scaled = jax.nn.softplus(self.raw_scale)[neighbours] * weights
            spread = (
                jnp.einsum("ni,nij,nj->n", scaled, Kaa, scaled)
                + used * jnp.sum(scaled**2, axis=1)
                + jnp.sum(jnp.einsum("nh,nhr->nr", weights, self.factor[neighbours]) ** 2, axis=1)
            )
            f_mean = jnp.sum(weights * self.mean[neighbours], axis=1)
        f_var = jnp.maximum(prior_var + spread, 1e-12)
        return f_mean, f_var, jnp.zeros_like(f_mean), used

    def neighbour_average_terms(self, X, neighbours, Kaa):
        """``local_terms`` with ``KL(q(u_a) || p(u_a))`` for ``kl="neighbour_average"``
        (``parametrization="scaled"``), given the stack of ``K_aa``."""
        factors, used = cholesky_with_jitter(Kaa, self.jitter)

        def one(x, index, Kaa, factor):
            Za = self.inducing[index]
            size = index.shape[0]
            eye = jnp.eye(size, dtype=x.dtype)
            Kaa = Kaa + used * eye
            kia = self.kernel.matrix(Za, x[None, :])[:, 0]
            weights = cho_solve((factor, True), kia)
            prior_var = self.kernel.diag(x[None, :])[0] - kia @ weights
            scale = jax.nn.softplus(self.raw_scale[index])
            Wa = self.factor[index]
            ma = self.mean[index]
            scaled = scale * weights
            f_mean = weights @ ma
            f_var = prior_var + scaled @ (Kaa @ scaled) + jnp.sum((Wa.T @ weights) ** 2)
            f_var = jnp.maximum(f_var, 1e-12)
            K_inv = cho_solve((factor, True), eye)
            # KL(N(m_a, D K D + W W^T) || N(0, K)) without factorising S_aa: log|K| cancels,
            # and the determinant lemma gives log|S_aa| from an R x R matrix.
            trace = jnp.sum(K_inv * (scale[:, None] * Kaa * scale[None, :]))
            trace = trace + jnp.sum(Wa * (K_inv @ Wa))
            log_det_ratio = -2 * jnp.sum(jnp.log(scale))
            if self.rank:
                inner = Wa / scale[:, None]
                capacitance = jnp.eye(self.rank, dtype=x.dtype) + inner.T @ K_inv @ inner
                log_det_ratio = log_det_ratio - 2 * jnp.sum(
                    jnp.log(jnp.diag(jnp.linalg.cholesky(capacitance)))
                )
            kl = 0.5 * (trace + ma @ K_inv @ ma - size + log_det_ratio)
            return f_mean, f_var, kl

        f_mean, f_var, kl = jax.vmap(one)(X, neighbours, Kaa, factors)
        return f_mean, f_var, kl, used

    def prior_terms(self, rows):
        """For each inducing point ``j`` in ``rows``: its term of ``2 KL`` in the Vecchia
        form, ``((e_j - c_j)^T S (e_j - c_j) + (m_j - c_j^T m)^2) / F_j - 2 log d_j``, and
        its row ``g_j = (e_j - c_j)^T D^-1 W / sqrt(F_j)`` of the rank term."""
        index, valid = preceding_neighbours(self.kernel, self.inducing, rows, self.num_neighbours)
        index, valid = jax.lax.stop_gradient(index), jax.lax.stop_gradient(valid)
        scale = jax.nn.softplus(self.raw_scale)

        def block(near, ok):
            # Empty slots (j has fewer than H predecessors) become unit, uncorrelated ones.
            both = ok[:, None] * ok[None, :]
            Knn = both * self.kernel.matrix(self.inducing[near], self.inducing[near])
            return Knn + (1 - both) * jnp.eye(near.shape[0], dtype=Knn.dtype)

        okf = valid.astype(self.mean.dtype)
        blocks = jax.vmap(block)(index, okf)
        Z = self.inducing
        cross = jax.vmap(
            lambda j, near, ok: ok * self.kernel.matrix(Z[near], Z[j][None, :])[:, 0]
        )(rows, index, okf)
        coefficients, variances, used = gp_conditionals(
            blocks, cross, self.kernel.diag(Z[rows]), self.jitter
        )

        def one(j, near, Knn, knj, c, conditional):
            Knn = Knn + used * jnp.eye(near.shape[0], dtype=Knn.dtype)
            kjj = self.kernel.diag(self.inducing[j][None, :])[0] + used
            conditional = jnp.maximum(conditional + used, 1e-12)
            # (e_j - c_j)^T D K D (e_j - c_j) over the block {j} + N(j)
            weighted = -c * scale[near]
            quad = (
                scale[j] ** 2 * kjj + 2 * scale[j] * (weighted @ knj) + weighted @ Knn @ weighted
            )
            w_residual = self.factor[j] - c @ self.factor[near]
            m_residual = self.mean[j] - c @ self.mean[near]
            term = (quad + w_residual @ w_residual + m_residual**2) / conditional
            g = (self.factor[j] / scale[j] - c @ (self.factor[near] / scale[near][:, None])) / (
                jnp.sqrt(conditional)
            )
            return term - 2 * jnp.log(scale[j]), g

        terms, g = jax.vmap(one)(rows, index, blocks, cross, coefficients, variances)
        return terms, g, used

    def vecchia_kl(self, rows):
        """``KL(q(u) || p(u))`` with ``K^-1`` in its Vecchia form, estimated from the
        inducing points ``rows`` (all of them: exact for that form)."""
        size = self.inducing.shape[0]
        terms, g, used = self.prior_terms(rows)
        weight = size / rows.shape[0]
        value = weight * jnp.sum(terms) - size
        if self.rank:
            capacitance = jnp.eye(self.rank, dtype=g.dtype) + weight * g.T @ g
            value = value - 2 * jnp.sum(jnp.log(jnp.diag(jnp.linalg.cholesky(capacitance))))
        return 0.5 * value, jnp.max(used)

    def elbo_standardized(self, X, y, num_data, prior_rows=None):
        neighbours = nearest_inducing(self.kernel, self.inducing, X, self.num_neighbours)
        neighbours = jax.lax.stop_gradient(neighbours)
        if self.whitened:
            m, rows, c, conditional, prior_used = self.whitened_posterior()
            f_mean, f_var, _, used = self.local_terms(X, neighbours, False, (m, rows))
            kl = self.whitened_kl(rows, c, conditional)
            used = jnp.maximum(used, prior_used)
        else:
            with_kl = self.kl == "neighbour_average"
            f_mean, f_var, kl, used = self.local_terms(X, neighbours, with_kl)
            if self.kl == "vecchia":
                if prior_rows is None:
                    prior_rows = jnp.arange(self.inducing.shape[0])
                kl, prior_used = self.vecchia_kl(prior_rows)
                used = jnp.maximum(jnp.max(used), prior_used)
            else:
                kl = jnp.mean(kl)
        expected = jnp.sum(self.likelihood.expected_log_prob(y, f_mean, f_var))
        value = (num_data / X.shape[0]) * expected - kl
        return value, jnp.max(used)

    def latent(self, X):
        n = X.shape[0]
        chunks = -(-n // PREDICT_CHUNK)
        padded = jnp.concatenate(
            [X, jnp.zeros((chunks * PREDICT_CHUNK - n, X.shape[1]), X.dtype)]
        ).reshape(chunks, PREDICT_CHUNK, X.shape[1])
        posterior, prior_used = None, jnp.zeros((), X.dtype)
        if self.whitened:
            m, rows, _, _, prior_used = self.whitened_posterior()
            posterior = (m, rows)

        def chunk(rows):
            neighbours = nearest_inducing(self.kernel, self.inducing, rows, self.num_neighbours)
            f_mean, f_var, _, used = self.local_terms(rows, neighbours, False, posterior)
            return f_mean, f_var, jnp.max(used)

        f_mean, f_var, used = jax.lax.map(chunk, padded)
        used = jnp.maximum(jnp.max(used), prior_used)
        return f_mean.reshape(-1)[:n], f_var.reshape(-1)[:n], used

    def training_step(self, settings):
        step = SWSGPStep(
            num_data=settings.pop("num_data"),
            batch_size=settings.pop("batch_size"),
            optimizer=settings.pop("optimizer"),
            fixed=settings.pop("fixed"),
        )
        if settings:
            raise TypeError(f"gp.fit: SWSGP got unexpected setting(s) {sorted(settings)}")
        return step, (self, step.optimizer.init(step.trained(self)))

    def covariance(self) -> jax.Array:
        """The dense ``S`` (``M x M``), for checks on small problems only."""
        Z = self.inducing
        size = Z.shape[0]
        if self.whitened:
            _, (values, columns), _, _, _ = self.whitened_posterior()
            L = jnp.zeros((size, size), Z.dtype).at[jnp.arange(size)[:, None], columns].add(values)
            return L @ L.T
        K = self.kernel.matrix(Z, Z) + self.jitter * jnp.eye(size, dtype=Z.dtype)
        scale = jax.nn.softplus(self.raw_scale)
        return scale[:, None] * K * scale[None, :] + self.factor @ self.factor.T

    def posterior_mean(self) -> jax.Array:
        """``m``, the mean of ``q(u)`` (for ``"whitened"``, ``L_V v`` from ``mean = v``)."""
        return self.whitened_posterior()[0] if self.whitened else self.mean


@final
@dataclasses.dataclass(frozen=True)
class SWSGPStep:
    """One optimizer step (Adam by default) on everything, the neighbour sets recomputed for
    the batch (``Z`` moves)."""

    num_data: int
    batch_size: int | None
    optimizer: optax.GradientTransformation
    fixed: tuple[str, ...]

    def trained(self, model):
        """The parts the optimizer steps."""
        names = ("kernel", "likelihood", "inducing", "mean", "raw_scale", "factor")
        return {name: getattr(model, name) for name in names}

    def __call__(self, state, rng_key, data):
        model, opt_state = state
        batch_key, prior_key = jax.random.split(rng_key)
        X, y = training_batch(batch_key, data, self.batch_size)
        size = model.inducing.shape[0]
        # The prior's terms on as many inducing points as the batch has data points.
        rows = minibatch_indices(prior_key, size, min(size, X.shape[0]))
        model, opt_state, metrics = descend(
            self,
            model,
            opt_state,
            lambda current: current.elbo_standardized(X, y, self.num_data, rows),
        )
        return (model, opt_state), metrics


def swsgp(
    inducing,
    kernel: AbstractCovariance | None = None,
    likelihood: AbstractLikelihood | None = None,
    *,
    num_neighbours: int = 32,
    rank: int = 0,
    jitter: float = 1e-3,
    standardize: bool = True,
    kl: str = "vecchia",
    parametrization: str = "whitened",
    factor_neighbours: int = 0,
) -> SWSGP:
    """A sparse-within-sparse GP: ``M`` inducing points, ``H = num_neighbours`` per point.

    A step costs ``O(B (M D + H^3) + M H^3)`` for a minibatch of ``B``: the neighbour
    search, an ``H x H`` factorisation per point, and (``"whitened"``) one per inducing
    point for the Vecchia prior. The optimizer (Adam by default) trains all parameters.

    Args:
      inducing: inducing inputs ``Z (M, D)`` in the units of ``X``, or an integer ``M``.
      kernel: default ``rbf()``.
      likelihood: default ``gaussian()``.
      num_neighbours: ``H``, the inducing points each data point reads.
      rank: ``R``, the rank of the ``W W^T`` part of ``S`` (``parametrization="scaled"``
        only).
      jitter: a nugget added to each ``K_aa``'s diagonal, in the prior and the
        conditional alike. Near neighbours make ``K_aa`` nearly singular, and the weights
        ``K_aa^-1 k_ai`` then amplify every wobble of the optimised ``m``; a larger nugget
        than SVGP's keeps them tame (``docs/sparse-gp.md`` compares ``1e-3`` with
        ``1e-6``).
      standardize: standardise ``X`` (and ``y`` for a Gaussian likelihood) before fitting.
      kl: the prior term, one of ``KL_RULES``: ``"vecchia"`` (the whole
        ``M``-dimensional KL, ``K^-1`` in Vecchia form) or ``"neighbour_average"`` (Tran
        et al.'s average of ``H``-dimensional KLs, which weighs the prior about ``H / M``
        as much; ``parametrization="scaled"`` only).
      parametrization: one of ``PARAMETRIZATIONS``: ``"whitened"`` (``m = L_V v``,
        ``S = L L^T`` with ``L`` sparse on the Vecchia pattern) or ``"scaled"`` (``m`` and
        ``S = D Kuu D + W W^T``, the earlier form; its best ``S`` is far from the
        posterior's, see ``docs/sparse-gp.md``).
      factor_neighbours: ``Q <= H``, the entries of each row of ``L`` besides the
        diagonal, on the ``Q`` nearest predecessors (``"whitened"`` only): ``0`` is a
        mean-field ``S``; larger ``Q`` fits the posterior's local correlations, at
        ``O(H Q log(H Q))`` more per point and per inducing point.

    Returns:
      An unfitted ``SWSGP``.

    References:
      Tran, Milios, Michiardi, Filippone, "Sparse within Sparse Gaussian Processes using
      Neighbor Information", ICML 2021.
    """
    check_count("num_neighbours", num_neighbours, minimum=1)
    check_count("rank", rank, minimum=0)
    if kl not in KL_RULES:
        raise ValueError(f"kl must be one of {KL_RULES}, got {kl!r}")
    if parametrization not in PARAMETRIZATIONS:
        raise ValueError(
            f"parametrization must be one of {PARAMETRIZATIONS}, got {parametrization!r}"
        )
    if parametrization == "whitened" and kl != "vecchia":
        raise ValueError(
            f"kl={kl!r} needs parametrization='scaled': the whitened q(u) is whitened by the "
            "Vecchia prior, whose KL is kl='vecchia'"
        )
    check_count("factor_neighbours", factor_neighbours, minimum=0)
    if factor_neighbours > num_neighbours:
        raise ValueError(
            f"factor_neighbours={factor_neighbours} exceeds num_neighbours={num_neighbours}"
        )
    if parametrization == "whitened" and rank:
        raise ValueError("rank applies to parametrization='scaled' only (S = D Kuu D + W W^T)")
    kernel = rbf() if kernel is None else kernel
    likelihood = gaussian() if likelihood is None else likelihood
    Z, size = inducing_inputs(inducing)
    if Z is None and size < num_neighbours:
        raise ValueError(
            f"inducing: {size} inducing points are fewer than num_neighbours={num_neighbours}"
        )
    return SWSGP(
        kernel,
        likelihood,
        Z,
        num_inducing=size,
        num_neighbours=num_neighbours,
        rank=rank,
        jitter=float(jitter),
        standardize=standardize,
        kl=kl,
        parametrization=parametrization,
        factor_neighbours=factor_neighbours,
    )


__all__ = [
    "KL_RULES",
    "PARAMETRIZATIONS",
    "SWSGP",
    "SWSGPStep",
    "nearest_inducing",
    "preceding_neighbours",
    "swsgp",
]
