"""Sequential learning with a memory-based dual GP (Chang, Verma, John, Solin, Khan 2023):
data arrive in batches, ``q(u)`` is updated through its dual parameters, and a small
memory of past points keeps the hyperparameters and inducing points honest."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, final

import jax
import jax.numpy as jnp
import numpy as np
import optax

from inferax.pytree import pytree_dataclass, static_field
from inferax.training import train
from inferax.validation import check_count, check_key
from inferax.variational.gp.data import Scaling, check_inputs
from inferax.variational.gp.dual import DualSVGP, point_sites, site_sums
from inferax.variational.gp.fitting import FIXABLE, resolve_optimizer
from inferax.variational.gp.linalg import report_jitter
from inferax.variational.gp.model import stop_fixed
from inferax.variational.gp.svgp import SVGP

MEMORY_RULES = ("lambda", "random")
"""How the memory is chosen: ``"lambda"`` samples points in proportion to their dual
parameter's leverage ``beta_i var_i`` (the paper's rule); ``"random"`` uniformly."""

INDUCING_RULES = ("pivoted_cholesky", "gradient")
"""How ``Z`` follows the data: ``"pivoted_cholesky"`` re-picks ``M`` points from the old
``Z`` and the new batch by a greedy pivoted Cholesky of the kernel matrix, then the
optimizer refines them; ``"gradient"`` leaves it to the optimizer."""


def rest_scale(likelihood):
    """What the stored rest is multiplied by in ``q``: ``1 / sigma^2`` for a Gaussian
    likelihood, whose sites ``(y / sigma^2, 1 / sigma^2)`` are then held as noise-free sums
    that follow a change of ``sigma^2`` exactly; 1 otherwise."""
    return 1.0 / likelihood.variance if likelihood.gaussian else 1.0


def pivoted_cholesky(kernel, X, size):
    """Indices of ``size`` rows of ``X`` picked greedily by a pivoted Cholesky of the kernel
    matrix: each pick is the point whose conditional variance given the picks so far is the
    largest (``O(size^2 n)``)."""
    n = X.shape[0]

    def body(m, carry):
        residual, rows, chosen = carry
        i = jnp.argmax(residual)
        column = kernel.matrix(X[i][None, :], X)[0]
        row = (column - rows[:, i] @ rows) / jnp.sqrt(jnp.maximum(residual[i], 1e-30))
        residual = (residual - row**2).at[i].set(-jnp.inf)
        return residual, rows.at[m].set(row), chosen.at[m].set(i.astype(chosen.dtype))

    start = (kernel.diag(X), jnp.zeros((size, n), X.dtype), jnp.zeros(size, jnp.int32))
    return jax.lax.fori_loop(0, size, body, start)[2]


@functools.partial(jax.jit, static_argnames=("keep_old",))
def _move_inducing(model, rest_1, rest_2, X, keep_old=True):
    # The sites of points no longer held are known only through (rest_1, rest_2) at the
    # old Z; they move with u_new's projection on u_old, u_old ~ K_oo^-1 K_on u_new.
    old = model.inducing
    candidates = jnp.concatenate([old, X]) if keep_old else X
    new = candidates[pivoted_cholesky(model.kernel, candidates, old.shape[0])]
    posterior = model.posterior(rest_1, rest_2)
    factor = posterior.prior_factor
    projection = jax.scipy.linalg.cho_solve((factor, True), model.kernel.matrix(old, new))
    moved = dataclasses.replace(model, inducing=new)
    return moved, projection.T @ rest_1, projection.T @ rest_2 @ projection


@functools.partial(jax.jit, static_argnames=("steps", "step_size"))
def _refresh_sites(model, rest_1, rest_2, X, y, alpha, beta, mask, steps, step_size):
    """The points' sites after ``steps`` dual fixed-point steps, the rest held."""
    Kuc, kcc = model.cross(X)
    scale = rest_scale(model.likelihood)
    rest_1, rest_2 = scale * rest_1, scale * rest_2

    def body(_, sites):
        alpha, beta = sites
        sum_1, sum_2 = site_sums(Kuc, alpha * mask, beta * mask)
        posterior = model.posterior(rest_1 + sum_1, rest_2 + sum_2)
        new_alpha, new_beta = point_sites(model.likelihood, y, *posterior.marginals(Kuc, kcc))
        return (
            (1 - step_size) * alpha + step_size * new_alpha,
            (1 - step_size) * beta + step_size * new_beta,
        )

    return jax.lax.fori_loop(0, steps, body, (alpha, beta))


@functools.partial(jax.jit, static_argnames=("rule", "size"))
def _choose_memory(rng_key, model, rest_1, rest_2, X, y, alpha, beta, mask, rule, size):
    """``size`` points of the candidates to keep, sampled without replacement (Gumbel top-k)
    with weights by ``rule``; the sites of the others are folded into the rest."""
    Kuc, kcc = model.cross(X)
    scale = rest_scale(model.likelihood)
    if rule == "lambda":
        sum_1, sum_2 = site_sums(Kuc, alpha * mask, beta * mask)
        posterior = model.posterior(scale * rest_1 + sum_1, scale * rest_2 + sum_2)
        _, var = posterior.marginals(Kuc, kcc)
        log_weight = jnp.log(jnp.maximum(beta * var, 1e-30))
    else:
        log_weight = jnp.zeros_like(y)
    scores = jnp.where(
        mask > 0, log_weight + jax.random.gumbel(rng_key, y.shape, y.dtype), -jnp.inf
    )
    chosen = jax.lax.top_k(scores, size)[1]
    kept = jnp.zeros_like(mask).at[chosen].set(1.0) * mask
    dropped_1, dropped_2 = site_sums(Kuc, alpha * (mask - kept), beta * (mask - kept))
    rest_1, rest_2 = rest_1 + dropped_1 / scale, rest_2 + dropped_2 / scale
    memory = (X[chosen], y[chosen], alpha[chosen], beta[chosen], kept[chosen])
    held_1, held_2 = site_sums(
        Kuc[:, chosen], alpha[chosen] * kept[chosen], beta[chosen] * kept[chosen]
    )
    return rest_1, rest_2, memory, scale * rest_1 + held_1, scale * rest_2 + held_2


@final
@dataclasses.dataclass(frozen=True)
class HyperStep:
    """One optimizer step on the hyperparameters (and ``Z``) against the sequential ELBO:
    the batch's expected log-likelihood, the memory's scaled to stand for every past point,
    minus ``KL(q || p)``, with ``q`` from the rest's dual parameters (held in the inducing
    space) and the batch's and memory's sites (recomputed with the hyperparameters)."""

    optimizer: optax.GradientTransformation
    fixed: tuple[str, ...]

    def trained(self, model):
        return {"kernel": model.kernel, "likelihood": model.likelihood, "inducing": model.inducing}

    def __call__(self, state, rng_key, data):
        del rng_key
        model, opt_state = state
        rest_1, rest_2, X, y, alpha, beta, mask, weights = data

        def loss(params):
            current = dataclasses.replace(model, **stop_fixed(params, self.fixed))
            Kuc, kcc = current.cross(X)
            scale = rest_scale(current.likelihood)
            sites = (alpha, beta)
            if current.likelihood.gaussian:
                # Gaussian sites do not depend on q: they follow the noise exactly.
                sites = point_sites(current.likelihood, y, jnp.zeros_like(y), jnp.ones_like(y))
            sum_1, sum_2 = site_sums(Kuc, sites[0] * mask, sites[1] * mask)
            posterior = current.posterior(scale * rest_1 + sum_1, scale * rest_2 + sum_2)
            mean, var = posterior.marginals(Kuc, kcc)
            expected = jnp.sum(weights * current.likelihood.expected_log_prob(y, mean, var))
            return posterior.kl() - expected, posterior.jitter

        params = self.trained(model)
        (value, used), grads = jax.value_and_grad(loss, has_aux=True)(params)
        updates, opt_state = self.optimizer.update(grads, opt_state, params)
        model = dataclasses.replace(model, **optax.apply_updates(params, updates))
        return (model, opt_state), {"loss": value, "jitter": used}


@final
@pytree_dataclass
class SequentialGP:
    """A dual SVGP that learns from batches as they arrive: ``update(rng_key, X, y)``
    returns the model after one more batch; ``predict``, ``predict_y``,
    ``log_predictive_density`` and ``elbo`` are the current ``model``'s.

    ``q(u)``'s dual parameters are the sum of three parts: the rest (``rest_1``,
    ``rest_2``: every past point not in memory, summed in the inducing space), the
    memory's sites and the new batch's (one ``(alpha_i, beta_i)`` per point, kept with the
    point). With a Gaussian likelihood and fixed hyperparameters and ``Z`` each update is
    exact: after all batches ``q`` is the one-shot optimum on all the data. Build it with
    ``sequential(...)``.
    """

    model: DualSVGP
    rest_1: Any = None
    rest_2: Any = None
    memory: Any = None
    num_seen: int = 0
    memory_size: int = static_field(default=100)
    memory_rule: str = static_field(default="lambda")
    inducing_rule: str = static_field(default="pivoted_cholesky")
    num_hyper_steps: int = static_field(default=20)
    dual_steps: int = static_field(default=2)
    dual_step_size: float = static_field(default=1.0)
    optimizer: Any = static_field(default=None)
    fixed: tuple = static_field(default=())

    @property
    def fitted(self) -> bool:
        return self.model.fitted

    def update(self, rng_key, X, y) -> SequentialGP:
        """The model after the batch ``(X, y)`` (user units; the first batch sets the
        standardisation): ``Z`` re-picked (``inducing_rule``), the batch's and memory's
        sites by ``dual_steps`` dual steps, ``num_hyper_steps`` optimizer steps on the
        hyperparameters and ``Z``, the sites refreshed at the new hyperparameters, and the
        memory re-chosen from the old memory and the batch (``memory_rule``)."""
        rng_key = check_key(rng_key)
        model = self.model
        X, y = check_inputs(X, y, dim=model.scaling.x_shift.shape[0] if self.fitted else None)
        model.likelihood.check_y(y)
        dtype = jnp.result_type(float)
        select_key, init_key = jax.random.split(rng_key)
        state = self if self.fitted else self._start(init_key, X, y, dtype)
        model = state.model
        Xs = jnp.asarray(model.scaling.x(jnp.asarray(X, dtype)))
        ys = jnp.asarray(model.scaling.y(jnp.asarray(y, dtype)))
        rest_1, rest_2 = state.rest_1, state.rest_2
        if self.inducing_rule == "pivoted_cholesky" and "inducing" not in self.fixed:
            model, rest_1, rest_2 = _move_inducing(model, rest_1, rest_2, Xs)
        mem_x, mem_y, mem_alpha, mem_beta, mem_mask = state.memory
        batch = Xs.shape[0]
        Xc = jnp.concatenate([Xs, mem_x])
        yc = jnp.concatenate([ys, mem_y])
        alpha = jnp.concatenate([jnp.zeros(batch, dtype), mem_alpha])
        beta = jnp.concatenate([jnp.zeros(batch, dtype), mem_beta])
        mask = jnp.concatenate([jnp.ones(batch, dtype), mem_mask])
        refresh = functools.partial(
            _refresh_sites, steps=self.dual_steps, step_size=self.dual_step_size
        )
        alpha, beta = refresh(model, rest_1, rest_2, Xc, yc, alpha, beta, mask)
        held = float(jnp.sum(mem_mask))
        if self.num_hyper_steps and set(FIXABLE) - set(self.fixed):
            memory_weight = state.num_seen / held if held else 0.0
            weights = jnp.concatenate([jnp.ones(batch, dtype), memory_weight * mem_mask])
            step = HyperStep(self.optimizer, tuple(sorted(self.fixed)))
            data = (rest_1, rest_2, Xc, yc, alpha, beta, mask, weights)
            result = train(
                step,
                (model, self.optimizer.init(step.trained(model))),
                jax.random.key(0),
                data,
                num_steps=self.num_hyper_steps,
                progress=False,
                description="SequentialGP",
                owner=SequentialGP,
            )
            losses = result.trace["loss"]
            report_jitter(
                np.max(result.trace["jitter"]),
                model.jitter,
                bool(np.all(np.isfinite(losses))),
                "update",
            )
            if not np.all(np.isfinite(losses)):
                raise FloatingPointError(
                    "SequentialGP.update: the loss is not finite; lower the learning rate"
                )
            model = result.state[0]
            alpha, beta = refresh(model, rest_1, rest_2, Xc, yc, alpha, beta, mask)
        rest_1, rest_2, memory, lambda_1, lambda_2 = _choose_memory(
            select_key,
            model,
            rest_1,
            rest_2,
            Xc,
            yc,
            alpha,
            beta,
            mask,
            self.memory_rule,
            self.memory_size,
        )
        model = dataclasses.replace(model, lambda_1=lambda_1, lambda_2=lambda_2)
        return dataclasses.replace(
            state,
            model=model,
            rest_1=rest_1,
            rest_2=rest_2,
            memory=memory,
            num_seen=state.num_seen + batch,
        )

    def _start(self, rng_key, X, y, dtype) -> SequentialGP:
        model = self.model
        scaling = Scaling.from_data(
            X,
            y,
            standardize_x=model.standardize,
            standardize_y=model.standardize and model.likelihood.gaussian,
            dtype=dtype,
        )
        model = dataclasses.replace(model, scaling=scaling)
        Xs = jnp.asarray(scaling.x(jnp.asarray(X, dtype)))
        if model.inducing is None:
            if model.num_inducing > X.shape[0]:
                raise ValueError(
                    f"the first batch has {X.shape[0]} points, fewer than the "
                    f"{model.num_inducing} inducing points to pick from it"
                )
            Z = Xs[pivoted_cholesky(model.kernel, Xs, model.num_inducing)]
            model = dataclasses.replace(model.initialize(rng_key, Xs, None), inducing=Z)
        else:
            model = model.initialize(rng_key, Xs, None)
        size, dim = model.inducing.shape[0], X.shape[1]
        zeros = jnp.zeros(self.memory_size, dtype)
        memory = (jnp.zeros((self.memory_size, dim), dtype), zeros, zeros, zeros, zeros)
        return dataclasses.replace(
            self,
            model=model,
            rest_1=jnp.zeros(size, dtype),
            rest_2=jnp.zeros((size, size), dtype),
            memory=memory,
            num_seen=0,
        )

    def _check_fitted(self, what: str) -> None:
        if not self.fitted:
            raise ValueError(f"{what}: no batch yet; call update(rng_key, X, y) first")

    def predict(self, X) -> tuple[jax.Array, jax.Array]:
        """The latent ``f``'s posterior mean and variance at ``X`` (``model.predict``)."""
        self._check_fitted("predict")
        return self.model.predict(X)

    def predict_y(self, X) -> tuple[jax.Array, jax.Array]:
        """The predictive mean and variance of ``y`` at ``X`` (``model.predict_y``)."""
        self._check_fitted("predict_y")
        return self.model.predict_y(X)

    def log_predictive_density(self, X, y) -> jax.Array:
        """``log p(y_i | data)`` per test point (``model.log_predictive_density``)."""
        self._check_fitted("log_predictive_density")
        return self.model.log_predictive_density(X, y)

    def elbo(self, X, y) -> float:
        """The ELBO of the current ``q`` on ``(X, y)`` (``model.elbo``)."""
        self._check_fitted("elbo")
        return self.model.elbo(X, y)


def sequential(
    model: DualSVGP | SVGP,
    *,
    memory_size: int = 100,
    memory_rule: str = "lambda",
    inducing_rule: str = "pivoted_cholesky",
    num_hyper_steps: int = 20,
    optimizer: optax.GradientTransformation | None = None,
    learning_rate: float = 0.01,
    fixed: tuple[str, ...] = (),
    dual_steps: int = 2,
    dual_step_size: float = 1.0,
) -> SequentialGP:
    """A memory-based dual GP for data that arrive in batches (``SequentialGP.update``).

    Args:
      model: an unfitted ``svgp(Z or M, kernel, likelihood, parametrization="dual")`` (an
        unfitted ``svgp`` is taken as its dual form). With an integer ``M``, ``Z`` is
        picked from the first batch by pivoted Cholesky.
      memory_size: past points kept (0: streaming without memory).
      memory_rule: ``"lambda"`` (the paper's: sampled in proportion to ``beta_i var_i``)
        or ``"random"``.
      inducing_rule: ``"pivoted_cholesky"`` (re-pick ``Z`` from the old ``Z`` and each
        batch, as the paper) or ``"gradient"`` (the optimizer alone moves it).
      num_hyper_steps: optimizer steps on the hyperparameters and ``Z`` per batch.
      optimizer: an optax optimizer; default ``optax.adam(learning_rate)``.
      learning_rate: Adam's step size when no ``optimizer`` is given.
      fixed: parts held: any of ``"kernel"``, ``"likelihood"``, ``"inducing"``.
      dual_steps: dual fixed-point steps for the batch's and memory's sites (one is exact
        for a Gaussian likelihood at step size 1).
      dual_step_size: the damping of those steps, in ``(0, 1]``.

    Returns:
      A ``SequentialGP`` with no data yet.

    References:
      Chang, Verma, John, Solin, Khan, "Memory-Based Dual Gaussian Processes for
      Sequential Learning", ICML 2023.
    """
    if isinstance(model, SVGP):
        model = DualSVGP(
            model.kernel,
            model.likelihood,
            model.inducing,
            num_inducing=model.num_inducing,
            jitter=model.jitter,
            standardize=model.standardize,
        )
    if not isinstance(model, DualSVGP):
        raise TypeError(f"model: gp.sequential takes a gp.svgp model, got {type(model).__name__}")
    if model.fitted:
        raise ValueError("model: gp.sequential takes an unfitted model")
    check_count("memory_size", memory_size, minimum=0)
    check_count("num_hyper_steps", num_hyper_steps, minimum=0)
    check_count("dual_steps", dual_steps, minimum=1)
    if memory_rule not in MEMORY_RULES:
        raise ValueError(f"memory_rule must be one of {MEMORY_RULES}, got {memory_rule!r}")
    if inducing_rule not in INDUCING_RULES:
        raise ValueError(f"inducing_rule must be one of {INDUCING_RULES}, got {inducing_rule!r}")
    if not 0 < dual_step_size <= 1:
        raise ValueError(f"dual_step_size must be in (0, 1], got {dual_step_size}")
    unknown = set(fixed) - set(FIXABLE)
    if unknown:
        raise ValueError(
            f"fixed: unknown part(s) {sorted(unknown)}; choose from {', '.join(FIXABLE)}"
        )
    return SequentialGP(
        model,
        memory_size=int(memory_size),
        memory_rule=memory_rule,
        inducing_rule=inducing_rule,
        num_hyper_steps=int(num_hyper_steps),
        dual_steps=int(dual_steps),
        dual_step_size=float(dual_step_size),
        optimizer=resolve_optimizer(optimizer, learning_rate),
        fixed=tuple(sorted(fixed)),
    )


__all__ = [
    "INDUCING_RULES",
    "MEMORY_RULES",
    "HyperStep",
    "SequentialGP",
    "pivoted_cholesky",
    "sequential",
]
