"""The dual-parameterised SVGP (t-SVGP): ``q(u)`` held as the data's site parameters
summed in the inducing space, ``(lambda_1, Lambda_2)``, and trained by the dual update."""

from __future__ import annotations

import dataclasses
from typing import Any, final

import jax
import jax.numpy as jnp
import optax
from jax.scipy.linalg import cho_solve, solve_triangular

from inferax.pytree import pytree_dataclass, static_field
from inferax.variational.gp.covariances import AbstractCovariance
from inferax.variational.gp.inducing import inducing_inputs, initial_inducing
from inferax.variational.gp.likelihoods import AbstractLikelihood
from inferax.variational.gp.linalg import cholesky_with_jitter
from inferax.variational.gp.model import AbstractSparseGP, stop_fixed, training_batch

SITE_FLOOR = 1e-8
"""The smallest site precision ``beta_i``: keeps ``Lambda_2`` positive semi-definite for
likelihoods that are not log-concave."""


def point_sites(likelihood, y, f_mean, f_var):
    """Each point's dual parameters ``(alpha_i, beta_i)`` at its marginal ``N(f_mean,
    f_var)``: ``alpha = g_m - 2 g_v m`` and ``beta = -2 g_v`` for the gradients ``g_m``,
    ``g_v`` of ``E log p(y_i | f_i)`` in the marginal's mean and variance (the gradient in
    the marginal's expectation parameters). For a Gaussian likelihood they are
    ``(y / sigma^2, 1 / sigma^2)`` whatever the marginal."""

    def total(mean, var):
        return jnp.sum(likelihood.expected_log_prob(y, mean, var))

    g_m, g_v = jax.grad(total, argnums=(0, 1))(f_mean, f_var)
    beta = jnp.maximum(-2.0 * g_v, SITE_FLOOR)
    return g_m + beta * f_mean, beta


def site_sums(Kuf, alpha, beta):
    """``(Kuf alpha, Kuf diag(beta) Kfu)``: points' sites summed in the inducing space."""
    return Kuf @ alpha, (Kuf * beta[None, :]) @ Kuf.T


@final
@dataclasses.dataclass(frozen=True)
class DualPosterior:
    """``q(u)`` from its dual parameters: precision ``K^-1 + K^-1 Lambda_2 K^-1`` and
    ``precision @ mean = K^-1 lambda_1``, so ``mean = K (K + Lambda_2)^-1 lambda_1`` and
    ``cov = K (K + Lambda_2)^-1 K``. Holds the two factors that every quantity needs."""

    prior_factor: jax.Array
    total_factor: jax.Array
    lambda_1: jax.Array
    jitter: jax.Array

    @classmethod
    def build(cls, K, lambda_1, lambda_2, jitter):
        prior_factor, used = cholesky_with_jitter(K, jitter)
        total_factor, used_total = cholesky_with_jitter(K + 0.5 * (lambda_2 + lambda_2.T), jitter)
        return cls(prior_factor, total_factor, lambda_1, jnp.maximum(used, used_total))

    def marginals(self, Kuf, kff):
        """``(mean, var)`` of ``q(f)`` at the points with cross-covariance ``Kuf``."""
        mean = Kuf.T @ cho_solve((self.total_factor, True), self.lambda_1)
        prior = solve_triangular(self.prior_factor, Kuf, lower=True)
        total = solve_triangular(self.total_factor, Kuf, lower=True)
        var = kff - jnp.sum(prior**2, axis=0) + jnp.sum(total**2, axis=0)
        return mean, jnp.maximum(var, 1e-12)

    def kl(self):
        """``KL(q(u) || p(u))``: ``0.5 (tr(B^-1 K) + c^T K c - M + log|B| - log|K|)`` with
        ``B = K + Lambda_2`` and ``c = B^-1 lambda_1``."""
        size = self.lambda_1.shape[0]
        trace = jnp.sum(solve_triangular(self.total_factor, self.prior_factor, lower=True) ** 2)
        c = cho_solve((self.total_factor, True), self.lambda_1)
        quad = jnp.sum((self.prior_factor.T @ c) ** 2)
        log_det = 2 * jnp.sum(jnp.log(jnp.diag(self.total_factor))) - 2 * jnp.sum(
            jnp.log(jnp.diag(self.prior_factor))
        )
        return 0.5 * (trace + quad - size + log_det)

    def mean_and_cov(self):
        """The dense ``(m, S)`` of ``q(u)``, for checks on small problems."""
        K = self.prior_factor @ self.prior_factor.T
        inv_b_k = cho_solve((self.total_factor, True), K)
        return K @ cho_solve((self.total_factor, True), self.lambda_1), K @ inv_b_k


@final
@pytree_dataclass
class DualSVGP(AbstractSparseGP):
    """SVGP with ``q(u)`` in the dual parameterisation of Adam, Chang, Khan, Solin (2021):
    ``q(u) ∝ p(u) exp(u^T K^-1 lambda_1 - u^T K^-1 Lambda_2 K^-1 u / 2)``, where
    ``lambda_1 = sum_i k_ui alpha_i`` and ``Lambda_2 = sum_i k_ui beta_i k_iu`` sum the data
    points' sites (``point_sites``). The ELBO is SVGP's; at its optimum in ``q`` the two
    models are the same distribution.

    Build it with ``svgp(..., parametrization="dual")``; ``lambda_1`` and ``lambda_2`` are
    ``None`` before ``fit``.
    """

    kernel: AbstractCovariance
    likelihood: AbstractLikelihood
    inducing: Any
    lambda_1: Any = None
    lambda_2: Any = None
    scaling: Any = None
    num_inducing: int = static_field(default=0)
    jitter: float = static_field(default=1e-6)
    standardize: bool = static_field(default=True)

    def initialize(self, rng_key, X, y):
        del y
        Z = initial_inducing(rng_key, self, X)
        size = Z.shape[0]
        return dataclasses.replace(
            self,
            inducing=Z,
            lambda_1=jnp.zeros(size, X.dtype),
            lambda_2=jnp.zeros((size, size), X.dtype),
        )

    def posterior(self, lambda_1=None, lambda_2=None) -> DualPosterior:
        """``q(u)`` for the model's dual parameters (or the ones given)."""
        lambda_1 = self.lambda_1 if lambda_1 is None else lambda_1
        lambda_2 = self.lambda_2 if lambda_2 is None else lambda_2
        K = self.kernel.matrix(self.inducing, self.inducing)
        return DualPosterior.build(K, lambda_1, lambda_2, self.jitter)

    def cross(self, X):
        """``(Kuf, kff)`` at standardised ``X``."""
        return self.kernel.matrix(self.inducing, X), self.kernel.diag(X)

    def latent(self, X):
        posterior = self.posterior()
        mean, var = posterior.marginals(*self.cross(X))
        return mean, var, posterior.jitter

    def elbo_standardized(self, X, y, num_data):
        posterior = self.posterior()
        mean, var = posterior.marginals(*self.cross(X))
        expected = jnp.sum(self.likelihood.expected_log_prob(y, mean, var))
        return (num_data / X.shape[0]) * expected - posterior.kl(), posterior.jitter

    def mean_and_cov(self):
        """``q(u)``'s dense mean and covariance, in standardised units."""
        return self.posterior().mean_and_cov()

    def training_step(self, settings):
        step = DualStep(
            num_data=settings.pop("num_data"),
            batch_size=settings.pop("batch_size"),
            optimizer=settings.pop("optimizer"),
            fixed=settings.pop("fixed"),
            dual_step_size=float(settings.pop("dual_step_size", 0.1)),
        )
        if settings:
            raise TypeError(f"gp.fit: DualSVGP got unexpected setting(s) {sorted(settings)}")
        if not 0 < step.dual_step_size <= 1:
            raise ValueError(f"dual_step_size must be in (0, 1], got {step.dual_step_size}")
        return step, (self, step.optimizer.init(step.trained(self)))


@final
@dataclasses.dataclass(frozen=True)
class DualStep:
    """One dual step: a minibatch ``B``, the batch's sites at the current ``q`` and
    ``lambda <- (1 - r) lambda + r (n / |B|) sum_B (k_ui alpha_i, k_ui beta_i k_iu)``,
    and an optimizer step for the hyperparameters (and ``Z``) against the ELBO at the
    current ``lambda``, both from one evaluation of the ELBO's gradient."""

    num_data: int
    batch_size: int | None
    optimizer: optax.GradientTransformation
    fixed: tuple[str, ...]
    dual_step_size: float

    def trained(self, model):
        """The parts the optimizer steps."""
        return {"kernel": model.kernel, "likelihood": model.likelihood, "inducing": model.inducing}

    def __call__(self, state, rng_key, data):
        model, opt_state = state
        X, y = training_batch(rng_key, data, self.batch_size)
        params = self.trained(model)
        zeros = jnp.zeros(X.shape[0], X.dtype)
        scale = self.num_data / X.shape[0]

        # The shifts' gradients are the likelihood's in the marginals, which give the sites.
        def objective(params, mean_shift, var_shift):
            current = dataclasses.replace(model, **stop_fixed(params, self.fixed))
            posterior = current.posterior()
            Kuf, kff = current.cross(X)
            mean, var = posterior.marginals(Kuf, kff)
            expected = jnp.sum(
                current.likelihood.expected_log_prob(y, mean + mean_shift, var + var_shift)
            )
            aux = (posterior.jitter, jax.lax.stop_gradient((mean, Kuf)))
            return scale * expected - posterior.kl(), aux

        (elbo, (used, (mean, Kuf))), (hyper_grads, g_m, g_v) = jax.value_and_grad(
            objective, argnums=(0, 1, 2), has_aux=True
        )(params, zeros, zeros)
        beta = jnp.maximum(-2.0 * g_v / scale, SITE_FLOOR)
        alpha = g_m / scale + beta * mean
        batch_1, batch_2 = site_sums(Kuf, alpha, beta)
        r = self.dual_step_size
        lambda_1 = (1 - r) * model.lambda_1 + r * scale * batch_1
        lambda_2 = (1 - r) * model.lambda_2 + r * scale * batch_2
        neg = jax.tree.map(jnp.negative, hyper_grads)
        updates, opt_state = self.optimizer.update(neg, opt_state, params)
        params = optax.apply_updates(params, updates)
        model = dataclasses.replace(model, **params, lambda_1=lambda_1, lambda_2=lambda_2)
        return (model, opt_state), {"loss": -elbo, "jitter": used}


def dual_svgp(inducing, kernel, likelihood, *, jitter: float, standardize: bool) -> DualSVGP:
    """An unfitted ``DualSVGP`` (``svgp(..., parametrization="dual")`` calls this)."""
    Z, size = inducing_inputs(inducing)
    return DualSVGP(
        kernel, likelihood, Z, num_inducing=size, jitter=float(jitter), standardize=standardize
    )


__all__ = ["DualPosterior", "DualSVGP", "DualStep", "dual_svgp", "point_sites", "site_sums"]
