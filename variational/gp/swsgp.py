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

PREDICT_CHUNK = 1024
"""Test points per chunk of the neighbour search in ``predict``."""

KL_RULES = ("vecchia", "neighbour_average")
"""The ELBO's prior term: ``"vecchia"``, ``KL(q(u) || p(u))`` over all ``M`` inducing
values with ``K^-1`` in its Vecchia form (each inducing point conditioned on its ``H``
nearest predecessors); ``"neighbour_average"``, Tran et al.'s mean over the batch's points
of ``KL(q(u_a) || p(u_a))`` on each point's ``H`` neighbours."""


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
    ``B`` is ``(n/|B|) sum_i E log p(y_i | f_i) - KL``. With ``kl="vecchia"``
    ``KL`` is ``KL(q(u) || p(u))`` over all ``M`` values, with ``K^-1`` replaced by its
    Vecchia form ``sum_j (e_j - c_j)(e_j - c_j)^T / F_j`` (``c_j = K_NN^-1 k_Nj`` on the
    ``H`` nearest predecessors ``N`` of ``u_j``, ``F_j`` its conditional variance), summed
    over a random batch of the ``M`` inducing points and scaled up; it is exact when each
    ``u_j`` conditions on all its predecessors. With ``kl="neighbour_average"`` (the
    default) it is Tran et al.'s ``mean_i KL(q(u_a_i) || p(u_a_i))``: one
    ``H``-dimensional KL, about ``H / M`` of the whole, so the prior is outweighed. With
    ``H = M`` both are SVGP's (unwhitened) ELBO.

    Covariance parameterisation: ``S = D Kuu D + W W^T``, ``D = diag(softplus(raw_scale))``
    and ``W (M, R)`` (``R = rank``, default 0). Its marginal ``S_aa = D_a K_aa D_a +
    W_a W_a^T`` is exact and costs ``O(H^2 (D + R))``: no ``M x M`` factor is stored, and
    unlike a sub-block ``L[a, a]`` of a global Cholesky factor, ``S_aa`` is the marginal of
    one global ``q(u)``. ``D Kuu D`` keeps the prior's correlations between close inducing
    points (a diagonal ``S`` cannot sit below a near-singular ``K_aa``), and the scaling
    shrinks it where the data inform ``u``.
    """

    kernel: AbstractCovariance
    likelihood: AbstractLikelihood
    inducing: Any
    mean: Any = None
    raw_scale: Any = None
    factor: Any = None
    scaling: Any = None
    num_inducing: int = static_field(default=0)
    num_neighbours: int = static_field(default=32)
    rank: int = static_field(default=0)
    jitter: float = static_field(default=1e-3)
    standardize: bool = static_field(default=True)
    kl: str = static_field(default="neighbour_average")

    def initialize(self, rng_key, X, y):
        del y
        inducing_key, factor_key = jax.random.split(rng_key)
        Z = initial_inducing(inducing_key, self, X)
        size = Z.shape[0]
        if self.num_neighbours > size:
            raise ValueError(
                f"num_neighbours={self.num_neighbours} exceeds the {size} inducing points"
            )
        return dataclasses.replace(
            self,
            inducing=Z,
            mean=jnp.zeros(size, X.dtype),
            raw_scale=jnp.full(size, softplus_inverse(1.0), X.dtype),
            factor=1e-3 * jax.random.normal(factor_key, (size, self.rank), X.dtype),
        )

    def local_terms(self, X, neighbours, with_kl=True):
        """Per point: the latent mean and variance and (``with_kl``) ``KL(q(u_a) ||
        p(u_a))``, from its neighbour indices ``(n, H)``."""

        # One factorisation of the stack: under vmap a jitter retry's cond would run every
        # branch for every point.
        Kaa = jax.vmap(
            lambda index: self.kernel.matrix(self.inducing[index], self.inducing[index])
        )(neighbours)
        factors, used = cholesky_with_jitter(Kaa, self.jitter)

        def one(x, index, Kaa, factor):
            Za = self.inducing[index]
            size = index.shape[0]
            eye = jnp.eye(size, dtype=x.dtype)
            Kaa = Kaa + used * eye
            kia = self.kernel.matrix(Za, x[None, :])[:, 0]
            weights = cho_solve((factor, True), kia)
            scale = jax.nn.softplus(self.raw_scale[index])
            Wa = self.factor[index]
            ma = self.mean[index]
            scaled = scale * weights
            f_mean = weights @ ma
            f_var = (
                self.kernel.diag(x[None, :])[0]
                - kia @ weights
                + scaled @ (Kaa @ scaled)
                + jnp.sum((Wa.T @ weights) ** 2)
            )
            f_var = jnp.maximum(f_var, 1e-12)
            if not with_kl:
                return f_mean, f_var, jnp.zeros((), x.dtype)
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
        factors, used = cholesky_with_jitter(blocks, self.jitter)

        def one(j, near, ok, Knn, factor):
            Knn = Knn + used * jnp.eye(near.shape[0], dtype=Knn.dtype)
            knj = ok * self.kernel.matrix(self.inducing[near], self.inducing[j][None, :])[:, 0]
            kjj = self.kernel.diag(self.inducing[j][None, :])[0] + used
            c = cho_solve((factor, True), knj)
            conditional = jnp.maximum(kjj - knj @ c, 1e-12)
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

        terms, g = jax.vmap(one)(rows, index, okf, blocks, factors)
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
        with_kl = self.kl == "neighbour_average"
        f_mean, f_var, kl, used = self.local_terms(X, neighbours, with_kl)
        expected = jnp.sum(self.likelihood.expected_log_prob(y, f_mean, f_var))
        if self.kl == "vecchia":
            if prior_rows is None:
                prior_rows = jnp.arange(self.inducing.shape[0])
            kl, prior_used = self.vecchia_kl(prior_rows)
            used = jnp.maximum(jnp.max(used), prior_used)
        else:
            kl = jnp.mean(kl)
        value = (num_data / X.shape[0]) * expected - kl
        return value, jnp.max(used)

    def latent(self, X):
        n = X.shape[0]
        chunks = -(-n // PREDICT_CHUNK)
        padded = jnp.concatenate(
            [X, jnp.zeros((chunks * PREDICT_CHUNK - n, X.shape[1]), X.dtype)]
        ).reshape(chunks, PREDICT_CHUNK, X.shape[1])

        def chunk(rows):
            neighbours = nearest_inducing(self.kernel, self.inducing, rows, self.num_neighbours)
            f_mean, f_var, _, used = self.local_terms(rows, neighbours, with_kl=False)
            return f_mean, f_var, jnp.max(used)

        f_mean, f_var, used = jax.lax.map(chunk, padded)
        return f_mean.reshape(-1)[:n], f_var.reshape(-1)[:n], jnp.max(used)

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
        K = self.kernel.matrix(Z, Z) + self.jitter * jnp.eye(Z.shape[0], dtype=Z.dtype)
        scale = jax.nn.softplus(self.raw_scale)
        return scale[:, None] * K * scale[None, :] + self.factor @ self.factor.T


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
    kl: str = "neighbour_average",
) -> SWSGP:
    """A sparse-within-sparse GP: ``M`` inducing points, ``H = num_neighbours`` per point.

    A step costs ``O(B (M D + H^3))`` for a minibatch of ``B``: the neighbour search, then
    an ``H x H`` factorisation per point. The optimizer (Adam by default) trains all
    parameters.

    Args:
      inducing: inducing inputs ``Z (M, D)`` in the units of ``X``, or an integer ``M``.
      kernel: default ``rbf()``.
      likelihood: default ``gaussian()``.
      num_neighbours: ``H``, the inducing points each data point reads.
      rank: ``R``, the rank of the ``W W^T`` part of ``S``.
      jitter: a nugget added to each ``K_aa``'s diagonal, in the prior and the
        conditional alike. Near neighbours make ``K_aa`` nearly singular, and the weights
        ``K_aa^-1 k_ai`` then amplify every wobble of the optimised ``m``; a larger nugget
        than SVGP's keeps them tame (``docs/sparse-gp.md`` compares ``1e-3`` with
        ``1e-6``).
      standardize: standardise ``X`` (and ``y`` for a Gaussian likelihood) before fitting.
      kl: the prior term, one of ``KL_RULES``: ``"neighbour_average"`` (Tran et al.'s
        average of ``H``-dimensional KLs, which weighs the prior about ``H / M`` as much) or
        ``"vecchia"`` (the whole ``M``-dimensional KL, ``K^-1`` in Vecchia form; slower to
        converge under Adam, see ``docs/sparse-gp.md``).

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
    )


__all__ = ["KL_RULES", "SWSGP", "SWSGPStep", "nearest_inducing", "preceding_neighbours", "swsgp"]
