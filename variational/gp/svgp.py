"""SVGP: the uncollapsed sparse variational GP of Hensman et al., trained on minibatches,
with natural-gradient steps for ``q(u)`` and Adam for the hyperparameters."""

from __future__ import annotations

import dataclasses
from typing import Any, final

import jax
import jax.numpy as jnp
import optax
from jax.scipy.linalg import cho_solve, solve_triangular

from inferax.pytree import pytree_dataclass, static_field
from inferax.variational.gp.covariances import AbstractCovariance, rbf
from inferax.variational.gp.dual import DualSVGP, dual_svgp
from inferax.variational.gp.inducing import (
    inducing_inputs,
    inducing_projection,
    initial_inducing,
    projected_marginals,
    whitened_projection,
)
from inferax.variational.gp.likelihoods import AbstractLikelihood, gaussian
from inferax.variational.gp.linalg import cholesky_with_jitter
from inferax.variational.gp.model import AbstractSparseGP, descend, stop_fixed, training_batch


def gaussian_kl_whitened(mean, cov=None, scale_tril=None):
    """``KL(N(m, S) || N(0, I))``, from ``S``'s Cholesky factor ``L_S`` in closed form,
    ``0.5 (|L_S|_F^2 + |m|^2 - M - 2 sum log diag L_S)``, or from ``S`` itself."""
    size = mean.shape[0]
    if scale_tril is not None:
        trace = jnp.sum(scale_tril**2)
        log_det = 2 * jnp.sum(jnp.log(jnp.abs(jnp.diag(scale_tril))))
    else:
        trace, log_det = jnp.trace(cov), 2 * jnp.sum(jnp.log(jnp.diag(jnp.linalg.cholesky(cov))))
    return 0.5 * (trace + jnp.sum(mean**2) - size - log_det)


def gaussian_kl(mean, prior_factor, cov=None, scale_tril=None):
    """``KL(N(m, S) || N(0, K))`` with ``K = L L^T`` given by ``prior_factor = L``."""
    white_mean = solve_triangular(prior_factor, mean, lower=True)
    if scale_tril is not None:
        white_scale = solve_triangular(prior_factor, scale_tril, lower=True)
        return gaussian_kl_whitened(white_mean, scale_tril=white_scale)
    white_cov = solve_triangular(
        prior_factor, solve_triangular(prior_factor, cov, lower=True).T, lower=True
    )
    return gaussian_kl_whitened(white_mean, cov=0.5 * (white_cov + white_cov.T))


@final
@pytree_dataclass
class SVGP(AbstractSparseGP):
    """``q(u) = N(m, S)`` at ``M`` inducing inputs ``Z``, ``f`` by the GP conditional.

    The ELBO is ``(n / |B|) sum_{i in B} E_q log p(y_i | f_i) - KL(q(u) || p(u))``: only the
    likelihood term is scaled. Whitened (``u = L v``, ``L = chol(Kuu)``, ``q(v) = N(m, S)``)
    the KL is ``0.5 (|L_S|_F^2 + |m|^2 - M - 2 sum log diag L_S)``.

    Build it with ``svgp(...)``; fields ``mean`` and ``scale_tril`` are ``None`` before
    ``fit``.
    """

    kernel: AbstractCovariance
    likelihood: AbstractLikelihood
    inducing: Any
    mean: Any = None
    scale_tril: Any = None
    scaling: Any = None
    num_inducing: int = static_field(default=0)
    whiten: bool = static_field(default=True)
    jitter: float = static_field(default=1e-6)
    standardize: bool = static_field(default=True)

    def initialize(self, rng_key, X, y):
        del y
        Z = initial_inducing(rng_key, self, X)
        size = Z.shape[0]
        if self.whiten:
            scale = jnp.eye(size, dtype=X.dtype)
        else:
            scale = jnp.linalg.cholesky(
                self.kernel.matrix(Z, Z) + self.jitter * jnp.eye(size, dtype=X.dtype)
            )
        return dataclasses.replace(
            self, inducing=Z, mean=jnp.zeros(size, X.dtype), scale_tril=scale
        )

    def _projection(self, X):
        """``(projection, factor, jitter)``; ``factor`` (``chol(Kuu)``) is ``None`` when
        whitened, where nothing reads it."""
        if self.whiten:
            projection, used = whitened_projection(self.kernel, self.inducing, X, self.jitter)
            return projection, None, used
        projection, factor, used = inducing_projection(self.kernel, self.inducing, X, self.jitter)
        return solve_triangular(factor.T, projection, lower=False), factor, used

    def latent(self, X):
        scale_tril = jnp.tril(self.scale_tril)
        mean, var, _, used = self.batch_marginals(X, self.mean, scale_tril=scale_tril)
        return mean, var, used

    def elbo_with(self, X, y, num_data, mean, cov=None, scale_tril=None):
        """``(ELBO, jitter)`` on the batch ``(X, y)`` for ``q(u) = N(mean, S)``, with ``S``
        given as ``cov`` or as its Cholesky factor ``scale_tril``."""
        expected, used = self.expected_log_likelihood(X, y, num_data, mean, cov, scale_tril)
        return expected - self.kl(
            mean, scale_tril if scale_tril is not None else cov, factored=scale_tril is not None
        ), used

    def expected_log_likelihood(self, X, y, num_data, mean, cov=None, scale_tril=None):
        """``((n / |B|) sum_B E_q log p(y_i | f_i), jitter)``."""
        f_mean, f_var, _, used = self.batch_marginals(X, mean, cov, scale_tril)
        expected = jnp.sum(self.likelihood.expected_log_prob(y, f_mean, f_var))
        return (num_data / X.shape[0]) * expected, used

    def batch_marginals(self, X, mean, cov=None, scale_tril=None):
        """``(mean, var, projection, jitter)`` of ``q(f)`` at standardised ``X``, with the
        ``(M, |B|)`` projection through which ``f``'s marginals read ``q(u)``."""
        projection, factor, used = self._projection(X)
        f_mean, spread = projected_marginals(projection, mean, cov, scale_tril)
        if self.whiten:
            prior_part = jnp.sum(projection**2, axis=0)
        else:
            prior_part = jnp.sum((factor.T @ projection) ** 2, axis=0)
        f_var = jnp.maximum(self.kernel.diag(X) - prior_part + spread, 1e-12)
        return f_mean, f_var, projection, used

    def kl(self, mean, covariance, factored=True):
        """``KL(q(u) || p(u))`` (of ``q(v) || N(0, I)`` when whitened); ``covariance`` is
        ``S``'s Cholesky factor when ``factored``, else ``S``."""
        key = "scale_tril" if factored else "cov"
        if self.whiten:
            return gaussian_kl_whitened(mean, **{key: covariance})
        factor, _ = cholesky_with_jitter(
            self.kernel.matrix(self.inducing, self.inducing), self.jitter
        )
        return gaussian_kl(mean, factor, **{key: covariance})

    def prior_precision(self):
        """The precision of ``p(u)`` (``I`` when whitened)."""
        size = self.inducing.shape[0]
        eye = jnp.eye(size, dtype=self.inducing.dtype)
        if self.whiten:
            return eye
        factor, _ = cholesky_with_jitter(
            self.kernel.matrix(self.inducing, self.inducing), self.jitter
        )
        return cho_solve((factor, True), eye)

    def elbo_standardized(self, X, y, num_data):
        return self.elbo_with(X, y, num_data, self.mean, scale_tril=jnp.tril(self.scale_tril))

    def training_step(self, settings):
        step = SVGPStep(
            num_data=settings.pop("num_data"),
            batch_size=settings.pop("batch_size"),
            optimizer=settings.pop("optimizer"),
            fixed=settings.pop("fixed"),
            natural_gradient=bool(settings.pop("natural_gradient", True)),
            natgrad_step_size=float(settings.pop("natgrad_step_size", 0.1)),
        )
        if settings:
            raise TypeError(f"SVGP.fit got unexpected setting(s) {sorted(settings)}")
        if not 0 < step.natgrad_step_size <= 1:
            raise ValueError(f"natgrad_step_size must be in (0, 1], got {step.natgrad_step_size}")
        precision = None
        if step.natural_gradient:
            inverse_factor = solve_triangular(
                jnp.tril(self.scale_tril),
                jnp.eye(self.mean.shape[0], dtype=self.mean.dtype),
                lower=True,
            )
            precision = inverse_factor.T @ inverse_factor
        return step, (self, step.optimizer.init(step.trained(self)), precision)


@final
@dataclasses.dataclass(frozen=True)
class SVGPStep:
    """One SVGP step: a minibatch, then a natural-gradient step for ``q(u)`` in its natural
    parameters (Salimbeni, Eleftheriadis, Hensman 2018) and an optimizer step (Adam by
    default) for the rest, both from one evaluation of the ELBO's gradient. Without natural
    gradients, the optimizer steps everything."""

    num_data: int
    batch_size: int | None
    optimizer: optax.GradientTransformation
    fixed: tuple[str, ...]
    natural_gradient: bool
    natgrad_step_size: float

    def trained(self, model):
        """The parts the optimizer steps."""
        parts = {
            "kernel": model.kernel,
            "likelihood": model.likelihood,
            "inducing": model.inducing,
        }
        if not self.natural_gradient:
            parts.update(mean=model.mean, scale_tril=model.scale_tril)
        return parts

    def __call__(self, state, rng_key, data):
        model, opt_state, precision = state
        X, y = training_batch(rng_key, data, self.batch_size)
        params = self.trained(model)
        if not self.natural_gradient:
            model, opt_state, metrics = descend(
                self,
                model,
                opt_state,
                lambda current: current.elbo_with(
                    X, y, self.num_data, current.mean, scale_tril=jnp.tril(current.scale_tril)
                ),
            )
            return (model, opt_state, precision), metrics

        scale_tril = jnp.tril(model.scale_tril)
        zeros = jnp.zeros(X.shape[0], X.dtype)

        # The likelihood term reads q(u) only through the batch's marginals, so its
        # gradients in (m, S) are g = A dm and G = A diag(dv) A^T for its gradients (dm, dv)
        # in the marginals' means and variances: O(|B| M^2), not the O(M^3) of
        # differentiating through S = L L^T.
        def objective(params, mean_shift, var_shift):
            current = dataclasses.replace(model, **stop_fixed(params, self.fixed))
            f_mean, f_var, projection, used = current.batch_marginals(
                X, model.mean, scale_tril=scale_tril
            )
            expected = jnp.sum(
                current.likelihood.expected_log_prob(y, f_mean + mean_shift, f_var + var_shift)
            )
            kl = current.kl(model.mean, scale_tril)
            elbo = (self.num_data / X.shape[0]) * expected - kl
            return elbo, (used, jax.lax.stop_gradient(projection))

        (elbo, (used, projection)), grads = jax.value_and_grad(
            objective, argnums=(0, 1, 2), has_aux=True
        )(params, zeros, zeros)
        hyper_grads, mean_shift_grad, var_shift_grad = grads
        mean, scale_tril, precision = natural_gradient_step(
            model.mean,
            precision,
            projection @ mean_shift_grad,
            (projection * var_shift_grad[None, :]) @ projection.T,
            model.prior_precision(),
            self.natgrad_step_size,
        )
        neg = jax.tree.map(jnp.negative, hyper_grads)
        updates, opt_state = self.optimizer.update(neg, opt_state, params)
        params = optax.apply_updates(params, updates)
        model = dataclasses.replace(model, **params, mean=mean, scale_tril=scale_tril)
        return (model, opt_state, precision), {"loss": -elbo, "jitter": used}


def natural_gradient_step(mean, precision, mean_grad, cov_grad, prior_precision, step_size):
    """One natural-gradient ascent step of ``q = N(m, S)``, ``S = P^-1``, against
    ``E_q[log-likelihood] - KL(q || N(0, K))``, with ``prior_precision = K^-1``.

    The natural gradient in the natural parameters ``(P m, -P / 2)`` is the ordinary
    gradient in the expectation parameters ``(m, S + m m^T)``: ``(g - 2 G m, G)`` for the
    gradients ``g``, ``G`` in ``(m, S)``. ``mean_grad`` and ``cov_grad`` are those of the
    likelihood term only; the KL's are added in closed form, which makes the step a convex
    combination, ``P' = (1 - r) P + r (K^-1 - 2 G)`` and
    ``P' m' = (1 - r) P m + r (g - 2 G m)``: positive definite for log-concave
    likelihoods. With a Gaussian likelihood and the full data, ``r = 1`` lands on the
    optimal ``q``.

    Returns:
      ``(m', L', P')`` after the step, with ``S' = L' L'^T`` and ``L'`` lower triangular.

    References:
      Salimbeni, Eleftheriadis, Hensman, "Natural Gradients in Practice: Non-Conjugate
      Variational Inference in Gaussian Process Models", 2018.
    """
    eye = jnp.eye(mean.shape[0], dtype=mean.dtype)
    cov_grad = 0.5 * (cov_grad + cov_grad.T)
    new_precision = (1.0 - step_size) * precision + step_size * (prior_precision - 2.0 * cov_grad)
    new_precision = 0.5 * (new_precision + new_precision.T)
    theta = (1.0 - step_size) * (precision @ mean) + step_size * (
        mean_grad - 2.0 * cov_grad @ mean
    )
    # S' = P'^-1 without forming it: chol(J P' J) = R gives P' = (J R J)(J R J)^T, so
    # S' = (J R J)^-T (J R J)^-1 and its lower factor is J R^-T J (J reverses the order).
    reversed_factor = jnp.linalg.cholesky(new_precision[::-1, ::-1])
    new_scale = solve_triangular(reversed_factor, eye, lower=True).T[::-1, ::-1]
    new_mean = new_scale @ (new_scale.T @ theta)
    return new_mean, new_scale, new_precision


def svgp(
    inducing,
    kernel: AbstractCovariance | None = None,
    likelihood: AbstractLikelihood | None = None,
    *,
    whiten: bool = True,
    jitter: float = 1e-6,
    standardize: bool = True,
    parametrization: str = "mean",
) -> SVGP | DualSVGP:
    """The SVGP of Hensman, Fusi, Lawrence (2013) and Hensman, Matthews, Ghahramani (2015).

    ``fit`` takes ``natural_gradient=True`` (default) and ``natgrad_step_size=0.1``: each
    step moves ``q(u)`` by a natural-gradient step and the hyperparameters (and ``Z``) by
    Adam. Step size 1 with a Gaussian likelihood and ``batch_size=None`` reaches the optimal
    ``q(u)`` in one step.

    With ``parametrization="dual"`` it is a ``DualSVGP`` (t-SVGP): ``q(u)`` is held as the
    data's sites summed in the inducing space, and ``fit`` takes ``dual_step_size=0.1``
    (the dual update, with the same property at step size 1) in place of the natural
    gradient's settings; ``gp.sequential`` takes such a model.

    Args:
      inducing: inducing inputs ``Z (M, D)`` in the units of ``X``, or an integer ``M``
        (then ``M`` rows of ``X`` drawn at random).
      kernel: default ``rbf()``.
      likelihood: default ``gaussian()``.
      whiten: parameterise ``q`` on ``v = chol(Kuu)^-1 u``.
      jitter: added to ``Kuu``'s diagonal; retried larger (and logged) if that fails.
      standardize: standardise ``X`` (and ``y`` for a Gaussian likelihood) before fitting.
      parametrization: ``"mean"`` (``q(u) = N(m, L L^T)``) or ``"dual"`` (site
        parameters; ``whiten`` does not apply).

    Returns:
      An unfitted ``SVGP``, or ``DualSVGP`` for ``parametrization="dual"``.

    References:
      Hensman, Fusi, Lawrence, "Gaussian Processes for Big Data", 2013.
      Hensman, Matthews, Ghahramani, "Scalable Variational Gaussian Process
      Classification", 2015.
      Salimbeni, Eleftheriadis, Hensman, "Natural Gradients in Practice: Non-Conjugate
      Variational Inference in Gaussian Process Models", 2018.
      Adam, Chang, Khan, Solin, "Dual Parameterization of Sparse Variational Gaussian
      Processes", NeurIPS 2021.
    """
    kernel = rbf() if kernel is None else kernel
    likelihood = gaussian() if likelihood is None else likelihood
    if parametrization == "dual":
        return dual_svgp(inducing, kernel, likelihood, jitter=jitter, standardize=standardize)
    if parametrization != "mean":
        raise ValueError(f"parametrization must be 'mean' or 'dual', got {parametrization!r}")
    Z, size = inducing_inputs(inducing)
    return SVGP(
        kernel,
        likelihood,
        Z,
        num_inducing=size,
        whiten=whiten,
        jitter=float(jitter),
        standardize=standardize,
    )


__all__ = [
    "SVGP",
    "SVGPStep",
    "gaussian_kl",
    "gaussian_kl_whitened",
    "natural_gradient_step",
    "svgp",
]
