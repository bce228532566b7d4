"""DKLGP: the double-KL variational sparse inverse-Cholesky GP, whose ELBO separates over
the columns of a sparse factor, so minibatches of columns scale it to many points."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, final

import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.sparse
import scipy.sparse.linalg
from jax.scipy.linalg import cho_solve, solve_triangular
from scipy.spatial import cKDTree

from inferax.minibatch import minibatch_indices
from inferax.pytree import pytree_dataclass, static_field
from inferax.validation import check_count
from inferax.variational.gp.covariances import AbstractCovariance, rbf
from inferax.variational.gp.likelihoods import AbstractLikelihood, gaussian
from inferax.variational.gp.linalg import cholesky_with_jitter
from inferax.variational.gp.model import AbstractSparseGP, descend
from inferax.variational.gp.ordering import maximin_order, neighbour_sets

PREDICT_CHUNK = 512
"""Test points per compiled chunk of ``predict``."""


def _scaled(kernel, X):
    scale = np.broadcast_to(np.asarray(kernel.lengthscales), X.shape[-1:])[None, :]
    return np.asarray(X) / scale


def _masked_covariance(kernel, X, index):
    """``K`` on the rows ``index`` (``-1`` padding), identity on the padded part."""
    valid = index >= 0
    rows = X[jnp.where(valid, index, 0)]
    both = valid[:, None] & valid[None, :]
    eye = jnp.eye(index.shape[0], dtype=X.dtype)
    return jnp.where(both, kernel.matrix(rows, rows), eye), valid


def prior_column(kernel, X, index, jitter):
    """Column ``j`` of the upper factor ``U`` (``K^-1 ~ U U^T``) on its set ``index`` (``j``
    last): ``K_s^-1 e_last / sqrt(e_last^T K_s^-1 e_last)``, the KL-optimal column given
    the pattern (Schäfer, Katzfuss, Owhadi 2021). Returns ``(column, jitter used)``."""
    covariance, _ = _masked_covariance(kernel, X, index)
    factor, used = cholesky_with_jitter(covariance, jitter)
    last = jnp.zeros(index.shape[0], X.dtype).at[-1].set(1.0)
    solved = cho_solve((factor, True), last)
    return solved / jnp.sqrt(solved[-1]), used


def restricted_factor(sets, column_values, index):
    """``V[index, index]`` (upper triangular, ``index`` ascending with ``-1`` padding, the
    padding an identity block) from the columns ``index`` of ``V`` stored on the pattern:
    ``column_values[b, k] = V[sets[index[b], k], index[b]]``."""
    valid = index >= 0
    safe = jnp.where(valid, index, 0)
    column_sets = sets[safe]  # (m, m): the rows stored for each column index[b]

    def entry_column(column_set, column_value):
        position = jnp.clip(jnp.searchsorted(column_set, index), 0, index.shape[0] - 1)
        found = column_set[position] == index
        return jnp.where(found & valid, column_value[position], 0.0)

    matrix = jax.vmap(entry_column, out_axes=1)(column_sets, column_values)
    both = valid[:, None] & valid[None, :]
    eye = jnp.eye(index.shape[0], dtype=column_values.dtype)
    return jnp.where(both, matrix, eye)


@final
@pytree_dataclass
class DKLGP(AbstractSparseGP):
    """The double-KL variational GP of Cao, Kang, Jimenez, Sang, Schäfer, Katzfuss (2023).

    The ``n`` training points are put in maximin order (in lengthscale units) and each
    column ``j`` gets the set ``s_j = {i <= j : |x_i - x_j| <= rho min(l_i, l_j)}``. The
    prior is the Vecchia approximation ``K^-1 ~ U U^T``, ``U`` upper triangular on that
    pattern with columns in closed form from the current kernel; the variational
    ``q(f) = N(mu, (V V^T)^-1)``, ``V`` upper triangular on the same pattern, held as
    ``V = U + offset`` so that it follows the prior as the kernel moves (and Adam's steps on
    the offsets do not break the near-cancellations inside ``U``'s columns). The ELBO is a
    sum over columns,

    ``sum_j [log U_jj - log V_jj - (U_:j^T mu)^2 / 2 - |V^-1 U_:j|^2 / 2 + 1/2
    + E_q log p(y_j | f_j)]``, ``Var_q f_j = |V^-1 e_j|^2``,

    with the solves restricted to ``V[s_j, s_j]`` (the authors' reduced ancestor sets; exact
    when the pattern is dense), so a minibatch of columns scaled by ``n / B`` is unbiased.
    The ``+1/2`` per column (the KL's ``-n/2``) is kept, so the dense bound at the optimal
    ``q`` is the exact log marginal likelihood; the authors' code drops it.

    Prediction at ``x*`` conditions on its ``max_set_size`` nearest training points ``c``:
    mean ``b^T mu_c`` and variance ``k** - k*c b + |V_cc^-1 b|^2``, ``b = K_cc^-1 k_c*``.
    """

    kernel: AbstractCovariance
    likelihood: AbstractLikelihood
    raw_mean: Any = None
    raw_factor: Any = None
    inputs: Any = None
    outputs: Any = None
    sets: Any = None
    order: Any = None
    ordering_lengthscales: Any = None
    scaling: Any = None
    rho: float = static_field(default=1.5)
    max_set_size: int = static_field(default=64)
    jitter: float = static_field(default=1e-6)
    standardize: bool = static_field(default=True)

    # --- structure ---------------------------------------------------------------------

    def initialize(self, rng_key, X, y):
        del rng_key
        return self.reordered(np.asarray(X), np.asarray(y), np.zeros(X.shape[0]))

    def reordered(self, X, y, mean_by_point) -> DKLGP:
        """The model ordered and patterned for the current lengthscales, with ``mu`` kept
        (``mean_by_point`` in the data's own order) and ``V`` restarted at ``U``."""
        order, lengths = maximin_order(_scaled(self.kernel, X))
        sets = neighbour_sets(_scaled(self.kernel, X)[order], lengths, self.rho, self.max_set_size)
        width = int(np.max(np.sum(sets >= 0, axis=1)))
        sets = jnp.asarray(sets[:, -width:])
        dtype = jnp.result_type(float)
        inputs = jnp.asarray(X[order], dtype)
        model = dataclasses.replace(
            self,
            inputs=inputs,
            outputs=jnp.asarray(y[order], dtype),
            sets=sets,
            order=jnp.asarray(order),
            raw_factor=jnp.zeros(sets.shape, dtype),
            ordering_lengthscales=jnp.asarray(self.kernel.lengthscales),
            raw_mean=jnp.zeros(order.shape, dtype),
        )
        model = model.with_mean(jnp.asarray(mean_by_point[order], dtype))
        if self.likelihood.gaussian:
            model = model.gaussian_start()
        return model

    def gaussian_start(self) -> DKLGP:
        """For a Gaussian likelihood, ``mu`` at the posterior mean under the sparse prior,
        ``(U U^T + I / sigma^2) mu = y / sigma^2`` (a sparse solve on the host), and ``V``'s
        diagonal at ``sqrt(U_jj^2 + 1 / sigma^2)``: the starting point the authors get from
        their Laplace initialisation. Adam alone moves ``mu`` slowly, because the prior
        precision along ``U``'s columns is stiff where points are dense."""
        prior = np.asarray(_prior_columns(self.kernel, self.inputs, self.sets, self.jitter)[0])
        sets = np.asarray(self.sets)
        n = sets.shape[0]
        valid = sets >= 0
        columns = np.broadcast_to(np.arange(n)[:, None], sets.shape)
        U = scipy.sparse.csc_matrix((prior[valid], (sets[valid], columns[valid])), shape=(n, n))
        noise = float(self.likelihood.variance)
        precision = (U @ U.T + scipy.sparse.identity(n) / noise).tocsr()
        rhs = np.asarray(self.outputs) / noise
        diagonal = precision.diagonal()
        preconditioner = scipy.sparse.linalg.LinearOperator((n, n), matvec=lambda v: v / diagonal)
        mean, _ = scipy.sparse.linalg.cg(precision, rhs, rtol=1e-8, maxiter=2000, M=preconditioner)
        offset = np.zeros(sets.shape)
        offset[:, -1] = np.sqrt(prior[:, -1] ** 2 + 1.0 / noise) - prior[:, -1]
        dtype = jnp.result_type(float)
        model = dataclasses.replace(self, raw_factor=jnp.asarray(offset, dtype))
        return model.with_mean(jnp.asarray(mean, dtype))

    @property
    def mean(self) -> jax.Array:
        """``mu``, the posterior mean of ``f`` at the ordered training points."""
        return _all_means(self)

    def with_mean(self, mean) -> DKLGP:
        """The model with ``mu`` set (in the maximin order)."""
        prior, _ = _prior_columns(self.kernel, self.inputs, self.sets, self.jitter)
        return dataclasses.replace(self, raw_mean=mean * prior[:, -1])

    def column_values(self, columns):
        """``V``'s values on the pattern for ``columns``: ``U``'s columns from the current
        kernel plus the trained offsets ``raw_factor`` (zero padding). Returns
        ``(values, jitter used)``."""
        prior, used = jax.vmap(
            lambda index: prior_column(self.kernel, self.inputs, index, self.jitter)
        )(self.sets[columns])
        offset = jnp.where(self.sets[columns] >= 0, self.raw_factor[columns], 0.0)
        return prior + offset, jnp.max(used), prior[:, -1]

    def mean_at(self, columns, prior_diagonal):
        """``mu`` at ``columns``: held as ``raw_mean = U_jj mu_j``, a Jacobi
        preconditioning, since the prior precision along ``U``'s columns is huge for dense
        points and Adam's steps on ``mu`` itself would break the cancellations in
        ``U^T mu``."""
        return self.raw_mean[columns] / prior_diagonal

    @property
    def factor_values(self) -> jax.Array:
        """All of ``V``'s values on the pattern, ``(n, m)``."""
        return _all_column_values(self)

    def with_factor(self, values) -> DKLGP:
        """The model with ``V``'s values on the pattern set to ``values``."""
        prior, _ = _prior_columns(self.kernel, self.inputs, self.sets, self.jitter)
        return dataclasses.replace(self, raw_factor=jnp.where(self.sets >= 0, values - prior, 0.0))

    # --- the bound ---------------------------------------------------------------------

    def column_terms(self, columns):
        """Per column ``j``: the KL part and ``(E f_j, Var f_j)`` and the jitter used."""

        def one(j):
            index = self.sets[j]
            valid = index >= 0
            safe = jnp.where(valid, index, 0)
            values, used, diagonal = self.column_values(safe)
            prior, _ = prior_column(self.kernel, self.inputs, index, self.jitter)
            mean = self.mean_at(safe, diagonal)
            factor = restricted_factor(self.sets, values, index)
            last = jnp.zeros(index.shape[0], factor.dtype).at[-1].set(1.0)
            var = jnp.sum(solve_triangular(factor, last, lower=False) ** 2)
            inner_cov = jnp.sum(solve_triangular(factor, prior, lower=False) ** 2)
            inner_mean = jnp.sum(jnp.where(valid, prior * mean, 0.0)) ** 2
            kl_part = (
                jnp.log(prior[-1])
                - jnp.log(jnp.abs(factor[-1, -1]))
                - 0.5 * inner_mean
                - 0.5 * inner_cov
                + 0.5
            )
            return kl_part, mean[-1], var, used

        return jax.vmap(one)(columns)

    def elbo_columns(self, columns, num_data):
        """``(ELBO estimate, jitter)`` from the columns ``columns``, scaled by ``n / B``."""
        kl_part, f_mean, f_var, used = self.column_terms(columns)
        expected = self.likelihood.expected_log_prob(self.outputs[columns], f_mean, f_var)
        return (num_data / columns.shape[0]) * jnp.sum(kl_part + expected), jnp.max(used)

    def elbo_standardized(self, X, y, num_data):
        del X, y
        return self.elbo_columns(jnp.arange(self.sets.shape[0]), num_data)

    def elbo(self, X=None, y=None) -> float:
        """The full ELBO on the training data the model holds (``X``, ``y`` are ignored:
        the bound is over the fitted points)."""
        self._check_fitted("elbo")
        value, _ = _full_elbo(self)
        return float(value)

    # --- training ----------------------------------------------------------------------

    def training_step(self, settings):
        step = DKLGPStep(
            num_data=settings.pop("num_data"),
            batch_size=settings.pop("batch_size"),
            optimizer=settings.pop("optimizer"),
            fixed=settings.pop("fixed"),
        )
        if settings:
            raise TypeError(f"gp.fit: DKLGP got unexpected setting(s) {sorted(settings)}")
        return step, (self, step.optimizer.init(step.trained(self)))

    @property
    def reorders(self) -> bool:
        return True

    def reorder(self, X, y, tolerance):
        """The model reordered and repatterned if a lengthscale moved by more than
        ``tolerance`` (relative) since the ordering was built, keeping ``mu`` and
        restarting ``V`` at ``U``; otherwise the model itself."""
        moved = jnp.max(jnp.abs(self.kernel.lengthscales / self.ordering_lengthscales - 1.0))
        if float(moved) <= tolerance:
            return self
        by_point = np.empty(X.shape[0])
        by_point[np.asarray(self.order)] = np.asarray(self.mean)
        return self.reordered(np.asarray(X), np.asarray(y), by_point)

    # --- prediction --------------------------------------------------------------------

    def latent(self, X):
        """``(mean, var, jitter)`` at standardised inputs; a host-side neighbour search,
        then compiled chunks."""
        tree = cKDTree(_scaled(self.kernel, np.asarray(self.inputs)))
        size = min(self.max_set_size, self.inputs.shape[0])
        _, neighbours = tree.query(_scaled(self.kernel, np.asarray(X)), k=size)
        neighbours = np.sort(np.asarray(neighbours).reshape(X.shape[0], size), axis=1)
        means, variances, used = [], [], 0.0
        for start in range(0, X.shape[0], PREDICT_CHUNK):
            rows = slice(start, start + PREDICT_CHUNK)
            index = jnp.asarray(neighbours[rows], jnp.int32)
            mean, var, jitter = _predict_chunk(self, jnp.asarray(X[rows]), index)
            means.append(np.asarray(mean))
            variances.append(np.asarray(var))
            used = max(used, float(jitter))
        return jnp.asarray(np.concatenate(means)), jnp.asarray(np.concatenate(variances)), used

    def latent_from_user(self, X):
        return self.latent(self.scaling.x(X))


@jax.jit
def _all_column_values(model):
    return model.column_values(jnp.arange(model.sets.shape[0]))[0]


@jax.jit
def _all_means(model):
    columns = jnp.arange(model.sets.shape[0])
    return model.mean_at(columns, model.column_values(columns)[2])


@functools.partial(jax.jit, static_argnames=("jitter",))
def _prior_columns(kernel, inputs, sets, jitter):
    return jax.vmap(lambda index: prior_column(kernel, inputs, index, jitter))(sets)


@jax.jit
def _full_elbo(model):
    return model.elbo_standardized(None, None, model.sets.shape[0])


@jax.jit
def _predict_chunk(model, Xs, neighbours):
    def one(x, index):
        rows = model.inputs[index]
        covariance = model.kernel.matrix(rows, rows)
        factor, used = cholesky_with_jitter(covariance, model.jitter)
        cross = model.kernel.matrix(rows, x[None, :])[:, 0]
        weights = cho_solve((factor, True), cross)
        values, _, diagonal = model.column_values(index)
        restricted = restricted_factor(model.sets, values, index)
        spread = jnp.sum(solve_triangular(restricted, weights, lower=False) ** 2)
        var = model.kernel.diag(x[None, :])[0] - cross @ weights + spread
        return weights @ model.mean_at(index, diagonal), jnp.maximum(var, 1e-12), used

    mean, var, used = jax.vmap(one)(Xs, neighbours)
    return mean, var, jnp.max(used)


@final
@dataclasses.dataclass(frozen=True)
class DKLGPStep:
    """One optimizer step (Adam by default) on ``mu``, ``V`` and the hyperparameters from a
    minibatch of distinct columns, ``U``'s columns recomputed from the current kernel."""

    num_data: int
    batch_size: int | None
    optimizer: optax.GradientTransformation
    fixed: tuple[str, ...]

    def trained(self, model):
        """The parts the optimizer steps."""
        names = ("kernel", "likelihood", "raw_mean", "raw_factor")
        return {name: getattr(model, name) for name in names}

    def __call__(self, state, rng_key, data):
        del data  # the model holds its ordered training points
        model, opt_state = state
        if self.batch_size is None:
            columns = jnp.arange(self.num_data)
        else:
            columns = minibatch_indices(rng_key, self.num_data, self.batch_size)
        model, opt_state, metrics = descend(
            self, model, opt_state, lambda current: current.elbo_columns(columns, self.num_data)
        )
        return (model, opt_state), metrics


def dklgp(
    kernel: AbstractCovariance | None = None,
    likelihood: AbstractLikelihood | None = None,
    *,
    rho: float = 1.5,
    max_set_size: int = 64,
    jitter: float = 1e-6,
    standardize: bool = True,
) -> DKLGP:
    """The double-KL sparse inverse-Cholesky variational GP (VIVA in the authors' code).

    Its parameters are per training point (``mu`` and ``V``'s columns), the cost per step is
    ``O(B m^3)`` for ``B`` columns with sets of up to ``m`` points, and nothing grows with
    ``n`` but storage. ``gp.fit`` takes ``num_stages`` (reorder between stages when the
    lengthscales moved) and ``batch_size`` in columns.

    Args:
      kernel: default ``rbf()``; its lengthscales scale the ordering and the pattern.
      likelihood: default ``gaussian()``.
      rho: the pattern's radius in units of the maximin lengths.
      max_set_size: the largest set (and the number of neighbours ``predict`` reads).
      jitter: added to the diagonal of each set's covariance.
      standardize: standardise ``X`` (and ``y`` for a Gaussian likelihood).

    Returns:
      An unfitted ``DKLGP``.

    References:
      Cao, Kang, Jimenez, Sang, Schäfer, Katzfuss, "Variational Sparse Inverse Cholesky
      Approximation for Latent Gaussian Processes via Double Kullback-Leibler
      Minimization", ICML 2023.
    """
    if not rho >= 1.0:
        raise ValueError(f"rho must be >= 1, got {rho}")
    check_count("max_set_size", max_set_size, minimum=1)
    kernel = rbf() if kernel is None else kernel
    likelihood = gaussian() if likelihood is None else likelihood
    return DKLGP(
        kernel,
        likelihood,
        rho=float(rho),
        max_set_size=max_set_size,
        jitter=float(jitter),
        standardize=standardize,
    )


__all__ = ["DKLGP", "DKLGPStep", "dklgp", "prior_column", "restricted_factor"]
