"""``FractionalSDE``: variational inference for an SDE driven by Markov-approximate fBM.

The prior on ``(X, Y_1..Y_K)`` is

    dX   = b(t, X) dt + s(t, X) sum_k omega_k dY_k,
    dY_k = -gamma_k Y_k dt + dW,

with one Brownian motion ``W`` shared by every ``Y_k``. The posterior adds a control
``u(t, X, Y)`` to the drift of ``W`` (so to every ``dY_k``), and by Girsanov

    ELBO = E_q sum_i log p(o_i | X(t_i)) - KL(q(Y0) || p(Y0))
           - E_q 1/2 int_0^T u^2 dt

(``X(0)`` is fixed; ``Y(0)`` is random for type I and zero for type II, which has no KL
term). The solver is Euler-Maruyama in ``lax.scan`` on any increasing grid, with one
shared Brownian increment per step for ``X`` and all ``Y_k``; the control cost is carried
as an extra state component.

References:
  Daems, Opper, Crevecoeur, Birdal, "Variational Inference for SDEs Driven by Fractional
  Noise", ICLR 2024.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, final

import jax
import jax.numpy as jnp
import numpy as np
import optax

from inferax.flows.mlp import mlp_apply, mlp_init
from inferax.pytree import pytree_dataclass, static_field
from inferax.training import train
from inferax.typing import PRNGKey
from inferax.validation import check_count, check_key
from inferax.variational.sde import fbm

STABILITY_LIMIT = 0.5
"""The largest ``gamma_max * dt`` the explicit scheme accepts."""

CONTEXT_WINDOWS = (1.0, 4.0, 16.0)
"""Lengths, in mean spacings of a series' observations, of the exponential windows through
which the control sees the observations ahead of it, besides the next one."""
CONTEXT_SIZE = len(CONTEXT_WINDOWS) + 3
BRIDGE_OFFSETS = (1.0 / 16.0, 0.25, 1.0)
"""``c`` in the control's bridge inputs ``(o_next - X) / (tau + c)`` (``tau`` the time to
the next observation, both in mean spacings): the Doob h-transform drift that steers
Brownian motion to an observation with noise variance ``c``."""
DATA_FEATURES = 2 + CONTEXT_SIZE + len(BRIDGE_OFFSETS)
"""The length of ``_data_features``: ``t``, ``X``, the context's entries, the bridges."""


def zero_drift(params, t, x):
    """``b = 0``."""
    del params, t
    return jnp.zeros_like(x)


def unit_diffusion(params, t, x):
    """``s = 1``."""
    del params, t
    return jnp.ones_like(x)


@final
@pytree_dataclass
class FractionalSDE:
    """A one-dimensional SDE driven by MA-fBM, with a variational control.

    Build it with ``fractional_sde`` and fit it with ``sde.fit``.
    ``drift(drift_params, t, x)`` and ``diffusion(diffusion_params, t, x)`` are the prior's
    ``b`` and ``s``. The control is a tanh perceptron (``flows.mlp``), whose last layer
    starts at zero so that the posterior starts at the prior, of ``t``, ``X``,
    ``sqrt(2 gamma_k) Y_k`` and what the series' observations ahead say
    (``_data_features``), so each series' posterior is steered by its own data. For
    type I, ``Y(0)`` has a Gaussian variational law, ``C (m + L z)`` with ``C`` the
    Cholesky factor of the stationary covariance, ``m`` linear in the data features at
    ``t = 0`` and ``L`` lower triangular (``initial_params``; at the start ``m = 0`` and
    ``L = I``, the prior); its ``KL`` to the prior is part of the ELBO. The Hurst index is
    ``sigmoid(hurst_logit)``; it is learned when ``learn_hurst`` is set.
    """

    drift_params: Any
    diffusion_params: Any
    control_params: Any
    initial_params: Any
    hurst_logit: jax.Array
    x0: jax.Array
    drift: Callable = static_field()
    diffusion: Callable = static_field()
    num_processes: int = static_field(default=5)
    gamma_max: float = static_field(default=20.0)
    kind: str = static_field(default="I")
    horizon: float = static_field(default=1.0)
    learn_hurst: bool = static_field(default=False)

    @property
    def hurst(self) -> jax.Array:
        return jax.nn.sigmoid(self.hurst_logit)

    def _hurst_for_training(self):
        logit = self.hurst_logit if self.learn_hurst else jax.lax.stop_gradient(self.hurst_logit)
        return jax.nn.sigmoid(logit)

    def _check_grid(self, times) -> np.ndarray:
        times = np.asarray(times, dtype=float)
        if times.ndim != 1 or times.size < 2 or times[0] != 0.0:
            raise ValueError("times must be an increasing 1-D grid that starts at 0")
        steps = np.diff(times)
        if np.any(steps <= 0):
            raise ValueError("times must be an increasing 1-D grid that starts at 0")
        if self.gamma_max * steps.max() >= STABILITY_LIMIT:
            raise ValueError(
                f"gamma_max * dt = {self.gamma_max} * {steps.max():.4g} = "
                f"{self.gamma_max * steps.max():.3g} >= {STABILITY_LIMIT} (dt the longest "
                "step of times): the explicit scheme is unstable there; use a finer grid or "
                "a smaller gamma_max"
            )
        return times

    def _solve(self, rng_key, times, controlled: bool, context=None, reach=1.0):
        """One path on ``times``: ``X`` at every time and the control cost
        ``1/2 int u^2 dt`` plus ``KL(q(Y0) || p(Y0))``; ``context[i]`` is the control's
        view of the observations ahead of ``times[i]`` (``_observation_context``; zeros
        when ``None``) and ``reach`` the unit of its distances (``_reach``)."""
        # Everything in the dtype of the model's parameters, whatever the x64 setting now.
        dtype = self.x0.dtype
        times = times.astype(dtype)
        reach = jnp.asarray(reach, dtype)
        speeds = fbm.gammas(self.num_processes, self.gamma_max).astype(dtype)
        hurst = self._hurst_for_training()
        weights = fbm.omega(hurst, speeds, self.horizon, self.kind)
        scale = jnp.sqrt(2.0 * speeds)
        start_key, noise_key = jax.random.split(rng_key)
        steps = jnp.diff(times)
        noises = jax.random.normal(noise_key, steps.shape, dtype) * jnp.sqrt(steps)
        if context is None:
            context = jnp.zeros((times.shape[0] - 1, CONTEXT_SIZE), dtype)
        context = context.astype(dtype)
        if controlled and self.kind == "I":
            features = _data_features(times[0], self.x0, context[0], reach)
            y0, start_cost = variational_initial_state(
                self.initial_params, speeds, features, start_key
            )
        else:
            y0 = fbm.initial_state(start_key, speeds, self.kind)
            start_cost = jnp.zeros_like(self.x0)

        def step(carry, xs):
            x, y, cost = carry
            t, dt, dw, ahead = xs
            if controlled:
                features = jnp.concatenate([_data_features(t, x, ahead, reach), scale * y])
                u = mlp_apply(self.control_params, features, jnp.tanh)[0] / reach
            else:
                u = jnp.zeros_like(x)
            dy = (-speeds * y + u) * dt + dw
            x = (
                x
                + self.drift(self.drift_params, t, x) * dt
                + self.diffusion(self.diffusion_params, t, x) * (weights @ dy)
            )
            return (x, y + dy, cost + 0.5 * u**2 * dt), x

        start = (self.x0, y0, start_cost)
        (_, _, cost), path = jax.lax.scan(step, start, (times[:-1], steps, noises, context))
        return jnp.concatenate([self.x0[None], path]), cost

    def sample_paths(
        self,
        rng_key,
        times,
        num_paths: int,
        posterior: bool = True,
        observed_index=None,
        observed_values=None,
    ) -> jax.Array:
        """``num_paths`` paths of ``X`` on the increasing grid ``times`` (starting at 0),
        under the posterior (controlled, given one series' observations, as in ``fit``)
        or the prior; shape ``(num_paths, len(times))``."""
        times = jnp.asarray(self._check_grid(times))
        keys = jax.random.split(rng_key, num_paths)
        if observed_index is None:
            context, reach = jnp.zeros((times.shape[0] - 1, CONTEXT_SIZE)), 1.0
        else:
            index, values = _check_observations(times, observed_index, observed_values, 1.0)
            context, reach = _observation_context(times, index, values), _reach(times, index)
        return _sample(self, keys, times, context, reach, posterior)

    def elbo(
        self,
        rng_key: PRNGKey,
        times,
        observed_index,
        observed_values,
        noise_sd: float,
        num_paths: int = 32,
    ) -> jax.Array:
        """The ELBO on ``num_paths`` paths per series: ``E_q sum_i log N(o_i; X(t_i),
        noise_sd^2) - KL(q(Y0) || p(Y0)) - E_q 1/2 int u^2 dt``, summed over series;
        ``observed_index`` indexes ``times``; ``observed_values`` is ``(num_obs,)`` for one
        series or ``(num_series, num_obs)``."""
        times = jnp.asarray(self._check_grid(times))
        observed_index, observed_values = _check_observations(
            times, observed_index, observed_values, noise_sd
        )
        keys = jax.random.split(rng_key, num_paths)
        return _elbo(self, keys, times, observed_index, observed_values, float(noise_sd))


def _check_observations(times, observed_index, observed_values, noise_sd):
    index = np.asarray(observed_index)
    values = np.asarray(observed_values, dtype=float)
    if index.ndim != 1 or values.ndim not in (1, 2) or values.shape[-1] != index.shape[0]:
        raise ValueError(
            "observed_index must be 1-D and observed_values (num_obs,) or (num_series, "
            f"num_obs) with the same num_obs, got {index.shape} and {values.shape}"
        )
    if index.size == 0:
        raise ValueError("observed_index must hold at least one observation")
    if np.any(np.diff(index) <= 0):
        raise ValueError("observed_index must be increasing")
    if (
        not np.issubdtype(index.dtype, np.integer)
        or np.any(index < 0)
        or np.any(index >= times.shape[0])
    ):
        raise ValueError(f"observed_index must be integers in [0, {times.shape[0]})")
    if not np.all(np.isfinite(values)):
        raise ValueError("observed_values must be finite")
    if not (math.isfinite(noise_sd) and noise_sd > 0):
        raise ValueError(f"noise_sd must be a finite positive number, got {noise_sd!r}")
    return jnp.asarray(index), jnp.asarray(values)


def _data_features(t, x, ahead, reach):
    """What the control (and, at ``t = 0``, ``q(Y0)``) sees besides ``Y``: ``t``, ``X``,
    the time to the next observation and whether there is one, the next observation and
    the window means minus ``X`` in units of ``reach``, and the bridge inputs
    ``(o_next - X) / (tau + c)`` for each ``c`` in ``BRIDGE_OFFSETS``."""
    num_values = len(CONTEXT_WINDOWS) + 1
    distances = (ahead[:num_values] - x) / reach
    to_next, any_ahead = ahead[num_values], ahead[num_values + 1]
    bridges = any_ahead * distances[0] / (to_next + jnp.asarray(BRIDGE_OFFSETS, x.dtype))
    return jnp.concatenate([jnp.stack([t, x, to_next, any_ahead]), distances, bridges])


def variational_initial_state(params, speeds, features, rng_key):
    """A draw of ``Y(0) = C (m + L z)`` from the type I variational ``q(Y0)``, and
    ``KL(q(Y0) || p(Y0))``.

    ``C`` is the Cholesky factor of the OU processes' stationary covariance (at ``speeds``),
    ``m = features @ params["weights"] + params["bias"]`` and ``L`` lower triangular with
    off-diagonal ``params["lower"]`` and diagonal ``exp(params["log_diag"])``. The KL is
    computed in the whitened coordinates ``C^-1 Y(0)``, where the prior is ``N(0, I)``, so
    the ill-conditioned stationary covariance is never inverted.

    Returns:
      ``(Y(0), KL)``.
    """
    factor = fbm.stationary_factor(speeds)
    mean = features @ params["weights"] + params["bias"]
    lower = jnp.tril(params["lower"], -1) + jnp.diag(jnp.exp(params["log_diag"]))
    whitened = mean + lower @ jax.random.normal(rng_key, speeds.shape, speeds.dtype)
    kl = 0.5 * (jnp.sum(lower**2) + jnp.sum(mean**2) - speeds.shape[0]) - jnp.sum(
        params["log_diag"]
    )
    return factor @ whitened, kl


def _mean_spacing(times, observed_index):
    return (times[observed_index[-1]] - times[0]) / observed_index.shape[0]


def _reach(times, observed_index):
    """``sqrt`` of the mean spacing of the observations: how far unit noise carries ``X``
    from one to the next. The control sees distances in this unit and its output is divided
    by it, so that the gains it needs (``u`` about ``(o - X) / spacing`` between dense
    observations) are of order one for Adam, whose steps are bounded by its rate."""
    return jnp.sqrt(_mean_spacing(times, observed_index))


def _observation_context(times, observed_index, values):
    """For each step ``i`` (``times[i]`` to ``times[i+1]``), the control's view of the
    observations at or after ``times[i+1]``: the next one, their means weighted by
    ``exp(-lag / window)`` for each of ``CONTEXT_WINDOWS`` (lags counted from the next one,
    so the weights never all underflow), the time to the next one in mean spacings, and 1;
    past the last observation, the last value, 0 and 0. Shape
    ``(len(times) - 1, CONTEXT_SIZE)``."""
    spacing = _mean_spacing(times, observed_index)
    ahead = observed_index[None, :] >= jnp.arange(1, times.shape[0])[:, None]
    lag = jnp.where(ahead, times[observed_index][None, :] - times[:-1, None], jnp.inf)
    to_next = jnp.min(lag, axis=1, keepdims=True)
    any_ahead = jnp.isfinite(to_next)
    from_next = jnp.where(ahead, lag - jnp.where(any_ahead, to_next, 0.0), jnp.inf)
    means = [jnp.where(any_ahead[:, 0], values[jnp.argmin(lag, axis=1)], values[-1])]
    for window in CONTEXT_WINDOWS:
        weights = jnp.exp(-from_next / (window * spacing))
        mean = (weights @ values) / jnp.maximum(weights.sum(axis=1), 1.0)
        means.append(jnp.where(any_ahead[:, 0], mean, values[-1]))
    features = [
        *means,
        jnp.where(any_ahead, to_next / spacing, 0.0)[:, 0],
        any_ahead[:, 0].astype(values.dtype),
    ]
    return jnp.stack(features, axis=1)


@jax.jit(static_argnums=5)
def _sample(sde, keys, times, context, reach, posterior):
    return jax.vmap(lambda k: sde._solve(k, times, posterior, context, reach)[0])(keys)


def _series_context(times, observed_index, observed_values):
    """``(values, contexts, reach)`` for the ELBO: the observations as ``(num_series,
    num_obs)``, each series' ``_observation_context`` and the common ``_reach``. They
    depend on the data alone, so a fit computes them once, outside its loop."""
    values = observed_values if observed_values.ndim == 2 else observed_values[None]
    contexts = jax.vmap(lambda v: _observation_context(times, observed_index, v))(values)
    return values, contexts, _reach(times, observed_index)


def _elbo_value(sde, keys, times, observed_index, series_context, noise_sd):
    values, contexts, reach = series_context

    def one_series(series_values, context, series_keys):
        paths, costs = jax.vmap(lambda k: sde._solve(k, times, True, context, reach))(series_keys)
        residual = (paths[:, observed_index] - series_values[None, :]) / noise_sd
        log_lik = jnp.sum(
            -0.5 * residual**2 - math.log(noise_sd) - 0.5 * math.log(2 * math.pi), axis=1
        )
        return jnp.mean(log_lik - costs)

    num_series = values.shape[0]
    series_keys = jnp.stack(
        [
            jax.random.split(jax.random.fold_in(keys[0], i), keys.shape[0])
            for i in range(num_series)
        ]
    )
    return jnp.sum(jax.vmap(one_series)(values, contexts, series_keys))


@jax.jit(static_argnums=5)
def _elbo(sde, keys, times, observed_index, observed_values, noise_sd):
    series_context = _series_context(times, observed_index, observed_values)
    return _elbo_value(sde, keys, times, observed_index, series_context, noise_sd)


@final
@dataclasses.dataclass(frozen=True)
class SDEFit:
    """The result of ``sde.fit``.

    Attributes:
      sde: the fitted ``FractionalSDE``.
      elbo: the ELBO estimate at each step.
      timing: seconds spent compiling and optimising.
    """

    sde: FractionalSDE
    elbo: np.ndarray
    timing: dict[str, float]


@final
@dataclasses.dataclass(frozen=True)
class SDEStep:
    """One optimizer step on the negative ELBO of ``num_paths`` paths per series; the data
    are ``(times, observed_index, _series_context(...))``."""

    optimizer: optax.GradientTransformation
    num_paths: int
    noise_sd: float

    def __call__(self, state, rng_key, data):
        sde, opt_state = state
        times, observed_index, series_context = data

        def loss(sde):
            keys = jax.random.split(rng_key, self.num_paths)
            return -_elbo_value(sde, keys, times, observed_index, series_context, self.noise_sd)

        value, grads = jax.value_and_grad(loss)(sde)
        updates, opt_state = self.optimizer.update(grads, opt_state, sde)
        return (optax.apply_updates(sde, updates), opt_state), {"loss": value}


def fit(
    sde: FractionalSDE,
    rng_key: PRNGKey,
    times,
    observed_index,
    observed_values,
    noise_sd: float,
    *,
    optimizer: optax.GradientTransformation,
    num_steps: int,
    num_paths: int = 32,
    chunk_size: int | None = None,
    progress: bool | None = None,
) -> SDEFit:
    """Fits a ``FractionalSDE`` to noisy observations by maximising its ELBO.

    The ELBO (``FractionalSDE.elbo``) is maximised over the control, ``q(Y0)``, the drift
    and diffusion parameters, and the Hurst index when ``learn_hurst``, on the core's
    training loop: step ``t`` draws its paths with ``fold_in(rng_key, t)``, so the fit does
    not depend on ``chunk_size``; a non-finite ELBO stops the fit. The compiled chunks are
    kept with the class, so a refit with the same optimizer object and shapes does not
    compile again.

    Args:
      sde: the model, from ``fractional_sde``.
      rng_key: the key for the paths.
      times: the solver's grid, increasing from 0.
      observed_index: increasing indices into ``times`` of the observations.
      observed_values: ``(num_obs,)`` for one series or ``(num_series, num_obs)``.
      noise_sd: the observation noise's standard deviation.
      optimizer: an optax optimizer.
      num_steps: optimisation steps.
      num_paths: paths per series in each step's ELBO estimate.
      chunk_size: steps per compiled chunk; ``None``: picked by ``inferax.training.train``
        (see ``inferax.chunking``).
      progress: show a progress bar; ``None``: on an interactive terminal, not under CI.

    Returns:
      An ``SDEFit``: the fitted SDE and the ELBO trace.

    Examples:
      >>> import jax, numpy as np, optax
      >>> from inferax.variational import sde
      >>> model = sde.fractional_sde(jax.random.key(0), hurst=0.7)
      >>> result = sde.fit(model, jax.random.key(1), np.linspace(0.0, 1.0, 51), [25, 50],
      ...                  [0.3, 0.0], 0.1, optimizer=optax.adam(1e-2), num_steps=20,
      ...                  num_paths=4, progress=False)
      >>> result.elbo.shape
      (20,)
    """
    if not isinstance(sde, FractionalSDE):
        raise TypeError(f"sde.fit takes a FractionalSDE, got {type(sde).__name__}")
    rng_key = check_key(rng_key)
    check_count("num_steps", num_steps, minimum=1)
    check_count("num_paths", num_paths, minimum=1)
    if not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(
            f"optimizer must be an optax GradientTransformation, got {type(optimizer).__name__}"
        )
    times = jnp.asarray(sde._check_grid(times))
    observed_index, observed_values = _check_observations(
        times, observed_index, observed_values, noise_sd
    )
    data = (times, observed_index, _series_context(times, observed_index, observed_values))
    step = SDEStep(optimizer, num_paths, float(noise_sd))
    result = train(
        step,
        (sde, optimizer.init(sde)),
        rng_key,
        data,
        num_steps=num_steps,
        chunk_size=chunk_size,
        progress=progress,
        description="FractionalSDE",
        owner=FractionalSDE,
        on_chunk=_check_finite,
    )
    return SDEFit(sde=result.state[0], elbo=-result.trace["loss"], timing=result.timing)


def _check_finite(first: int, state: Any, metrics: dict) -> None:
    # The host hook between chunks: stop on a non-finite ELBO.
    del state
    finite = np.isfinite(metrics["loss"])
    if not np.all(finite):
        raise FloatingPointError(
            f"sde.fit: the ELBO is not finite at step {first + int(np.argmin(finite))}; "
            "lower the learning rate or refine the grid"
        )


def fractional_sde(
    rng_key,
    *,
    hurst: float = 0.5,
    learn_hurst: bool = False,
    num_processes: int = 5,
    gamma_max: float = 20.0,
    kind: str = "I",
    horizon: float = 1.0,
    x0: float = 0.0,
    drift: Callable = zero_drift,
    drift_params: Any = None,
    diffusion: Callable = unit_diffusion,
    diffusion_params: Any = None,
    control_hidden: tuple[int, ...] = (32, 32),
) -> FractionalSDE:
    """A ``FractionalSDE`` with a fresh control network.

    Args:
      rng_key: initialises the control network.
      hurst: the Hurst index, in (0, 1); the starting value when ``learn_hurst``.
      learn_hurst: learn ``H = sigmoid(h)`` with the other parameters.
      num_processes: ``K``, the OU processes of the approximation.
      gamma_max: the fastest speed; the slowest is ``1/gamma_max``.
      kind: ``"I"`` (Mandelbrot-van Ness, stationary start) or ``"II"``
        (Riemann-Liouville, zero start).
      horizon: ``T`` over which ``omega`` is fitted.
      x0: the fixed initial value of ``X``.
      drift, drift_params: ``b(drift_params, t, x)`` and its parameters (a pytree).
      diffusion, diffusion_params: ``s(diffusion_params, t, x)`` and its parameters.
      control_hidden: hidden widths of the control's perceptron.
    """
    if not (0.0 < hurst < 1.0):
        raise ValueError(f"hurst must be in (0, 1), got {hurst!r}")
    if kind not in fbm.KINDS:
        raise ValueError(f"kind must be 'I' or 'II', got {kind!r}")
    fbm.gammas(num_processes, gamma_max)  # validates both
    sizes = (DATA_FEATURES + num_processes, *control_hidden, 1)
    initial_params = None
    if kind == "I":
        initial_params = {
            "weights": jnp.zeros((DATA_FEATURES, num_processes)),
            "bias": jnp.zeros(num_processes),
            "lower": jnp.zeros((num_processes, num_processes)),
            "log_diag": jnp.zeros(num_processes),
        }
    return FractionalSDE(
        drift_params=drift_params,
        diffusion_params=diffusion_params,
        control_params=mlp_init(rng_key, sizes, zero_last=True, hidden_bias="zero"),
        initial_params=initial_params,
        hurst_logit=jnp.asarray(math.log(hurst / (1.0 - hurst))),
        x0=jnp.asarray(float(x0)),
        drift=drift,
        diffusion=diffusion,
        num_processes=num_processes,
        gamma_max=float(gamma_max),
        kind=kind,
        horizon=float(horizon),
        learn_hurst=bool(learn_hurst),
    )


__all__ = [
    "FractionalSDE",
    "SDEFit",
    "SDEStep",
    "fit",
    "fractional_sde",
    "unit_diffusion",
    "variational_initial_state",
    "zero_drift",
]
