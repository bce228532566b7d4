"""Affine coupling flows (RealNVP)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import final

import distrax
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from inferax.flows.flow import AbstractTransform, Flow, check_num_layers
from inferax.flows.mlp import mlp_apply, mlp_init
from inferax.typing import PRNGKey


def alternating_mask(dim: int, layer: int) -> jax.Array:
    """The coordinates layer ``layer`` keeps fixed: even ones, then odd ones, alternately."""
    return (jnp.arange(dim) + layer) % 2 == 0


def check_coupling_dim(dim: int) -> None:
    """Refuses a target of fewer than 2 coordinates, which a coupling layer cannot split."""
    if dim < 2:
        raise ValueError(f"coupling flows need at least 2 coordinates, the target has {dim}")


def check_hidden(hidden) -> tuple[int, ...]:
    """``hidden``, checked to be a tuple of positive layer widths."""
    hidden = tuple(hidden)
    if not all(isinstance(h, int) and h > 0 for h in hidden):
        raise ValueError(f"hidden must be a tuple of positive layer widths, got {hidden!r}")
    return hidden


SCALE_KINDS = ("softplus", "tanh")

# softplus(0 + _SOFTPLUS_AT_ZERO) + MIN_SCALE = 1: a zero conditioner output is the identity.
MIN_SCALE = 0.01
_SOFTPLUS_AT_ZERO = math.log(math.expm1(1.0 - MIN_SCALE))


def coupling_indices(dim: int, layer: int) -> tuple[np.ndarray, np.ndarray]:
    """The coordinates layer ``layer`` keeps fixed and those it moves: those where
    ``alternating_mask`` is set, then the others."""
    mask = (np.arange(dim) + layer) % 2 == 0
    return np.flatnonzero(mask), np.flatnonzero(~mask)


def coupling_layer_sizes(dim: int, num_layers: int, hidden: tuple[int, ...]):
    """Each coupling layer's MLP widths: the half it keeps fixed, ``hidden``, and a shift
    and a scale for each coordinate of the half it moves."""
    sizes = []
    for index in range(num_layers):
        fixed, moved = coupling_indices(dim, index)
        sizes.append((fixed.size, *hidden, 2 * moved.size))
    return sizes


FLAT_WEIGHTS_LIMIT = 8192
"""``RealNVP`` keeps its MLPs' weights in one flat vector up to this many, and as each
layer's list of ``(W, b)`` above it. An optimiser updates a flat vector in one operation,
not one per array, which saves more than copying it costs while it is small: the vector
is cut into its arrays every step, and its gradient joined back, a copy of every weight
each way."""


def split_weights(weights: jax.Array, layer_sizes) -> list:
    """The MLPs ``[[(W, b), ...], ...]`` of layers of widths ``layer_sizes``, cut from one
    flat vector (``RealNVP``'s parameters) in the order ``ravel_pytree`` lays them out."""
    shapes = [
        shape
        for sizes in layer_sizes
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True)
        for shape in ((fan_in, fan_out), (fan_out,))
    ]
    ends = np.cumsum([math.prod(shape) for shape in shapes])
    if ends[-1] != weights.shape[0]:
        raise ValueError(
            f"the coupling layers take {ends[-1]} weights, got a vector of {weights.shape[0]}"
        )
    # One split, whose gradient is one concatenation (a slice each would pad its gradient
    # to the whole vector).
    parts = iter(
        part.reshape(shape)
        for part, shape in zip(jnp.split(weights, ends[:-1]), shapes, strict=True)
    )
    return [[(next(parts), next(parts)) for _ in range(len(sizes) - 1)] for sizes in layer_sizes]


@final
class AffineCoupling(distrax.Bijector):
    """Affine coupling layers in order: layer ``i`` keeps the coordinates of
    ``alternating_mask(dim, i)`` fixed and moves the others by ``x * s + t``, with
    ``(t, raw) = output_multiplier * mlp_i(x[fixed])`` and ``(s, log s) = scale_fn(raw)``
    elementwise.

    Each conditioner sees only the coordinates its layer keeps fixed and returns the shift
    and scale of only those it moves (distrax's ``MaskedCoupling`` feeds it the whole
    masked vector and asks for all of them: twice the weights at the input and output).
    The point is split into its even and odd coordinates once, and the layers, a Python
    loop (the halves differ in size when ``dim`` is odd), move one half each in turn.

    Args:
      weights: every layer's MLP weights, ``[[(W, b), ...], ...]`` or in one flat vector
        (see ``split_weights``).
      num_layers: the coupling layers.
      hidden: the MLPs' hidden widths.
      scale_fn: ``raw -> (s, log s)``.
      output_multiplier: multiplies each conditioner's output.
    """

    def __init__(
        self,
        weights,
        num_layers: int,
        hidden: tuple[int, ...],
        scale_fn: Callable,
        output_multiplier: float = 1.0,
    ):
        super().__init__(event_ndims_in=1)
        self.weights = weights
        self.num_layers = num_layers
        self.hidden = hidden
        self.scale_fn = scale_fn
        self.output_multiplier = output_multiplier

    def _run(self, x: jax.Array, inverse: bool) -> tuple[jax.Array, jax.Array]:
        layers = self.weights
        if isinstance(layers, jax.Array):
            sizes = coupling_layer_sizes(x.shape[0], self.num_layers, self.hidden)
            layers = split_weights(layers, sizes)
        halves = [x[0::2], x[1::2]]
        log_det = jnp.zeros((), x.dtype)
        order = range(self.num_layers)
        for index in reversed(order) if inverse else order:
            # Layer ``index`` keeps the even coordinates fixed when ``index`` is even.
            fixed, moved = halves[index % 2], halves[1 - index % 2]
            out = mlp_apply(layers[index], fixed).reshape(moved.shape[0], 2)
            if self.output_multiplier != 1.0:
                out = self.output_multiplier * out
            scale, log_scale = self.scale_fn(out[:, 1])
            if inverse:
                moved = (moved - out[:, 0]) / scale
                log_det = log_det - jnp.sum(log_scale)
            else:
                moved = moved * scale + out[:, 0]
                log_det = log_det + jnp.sum(log_scale)
            halves[1 - index % 2] = moved
        return x.at[0::2].set(halves[0]).at[1::2].set(halves[1]), log_det

    def forward_and_log_det(self, x):
        return self._run(x, inverse=False)

    def inverse_and_log_det(self, y):
        return self._run(y, inverse=True)


@final
@dataclasses.dataclass(frozen=True)
class RealNVP(AbstractTransform):
    """Affine coupling layers: the coordinates a layer keeps fixed condition a shift and a
    scale for the others, through an MLP. The scale is ``softplus(raw + c) + 0.01``
    (``scale="softplus"``, flowjax's choice) or ``exp(scale_bound * tanh(raw /
    scale_bound))`` (``"tanh"``).

    The parameters are the layers' MLPs, ``[[(W, b), ...], ...]``, or, up to
    ``FLAT_WEIGHTS_LIMIT`` weights, all of them in one flat vector that ``split_weights``
    cuts up: on a small target an optimiser's update of each array is a compiled operation
    of its own, and two arrays per MLP layer cost more than the flow itself."""

    num_layers: int
    hidden: tuple[int, ...]
    scale: str = "softplus"
    scale_bound: float = 2.0
    output_multiplier: float = 1.0

    def init(self, rng_key: PRNGKey, dim: int):
        check_coupling_dim(dim)
        keys = jax.random.split(rng_key, self.num_layers)
        sizes = coupling_layer_sizes(dim, self.num_layers, self.hidden)
        layers = [mlp_init(key, widths) for key, widths in zip(keys, sizes, strict=True)]
        flat = ravel_pytree(layers)[0]
        return flat if flat.size <= FLAT_WEIGHTS_LIMIT else layers

    def scale_and_log(self, raw: jax.Array) -> tuple[jax.Array, jax.Array]:
        """A layer's scales and their logs, from its conditioner's raw output."""
        if self.scale == "tanh":
            log_scale = self.scale_bound * jnp.tanh(raw / self.scale_bound)
            return jnp.exp(log_scale), log_scale
        scale = jax.nn.softplus(raw + _SOFTPLUS_AT_ZERO) + MIN_SCALE
        return scale, jnp.log(scale)

    def bijector(self, params) -> distrax.Bijector:
        return AffineCoupling(
            params, self.num_layers, self.hidden, self.scale_and_log, self.output_multiplier
        )


def realnvp(
    num_layers: int,
    hidden: tuple[int, ...] = (64, 64),
    *,
    scale: str = "softplus",
    scale_bound: float = 2.0,
    base_scale: float = 0.1,
    output_multiplier: float = 1.0,
) -> Flow:
    """An affine coupling flow: ``num_layers`` layers, each fixing half the coordinates
    (alternately) and moving the others by ``x * s + t``, with ``(s, t)`` an MLP of the
    fixed half. Each layer starts as the identity, so the flow starts as its base,
    ``N(loc, base_scale^2 I)`` around ``fit``'s starting point.

    The scale ``s`` is ``softplus(raw + c) + 0.01`` by default, as in flowjax's coupling
    flow: at least 0.01 and unbounded above. ``scale="tanh"`` bounds the log-scale instead,
    ``log s = scale_bound * tanh(raw / scale_bound)``.

    Args:
      num_layers: coupling layers.
      hidden: the MLP's hidden widths.
      scale: ``"softplus"`` or ``"tanh"``, how the conditioner's output becomes a scale.
      scale_bound: the bound on each layer's log-scale under ``scale="tanh"``.
      output_multiplier: multiplies each conditioner's output. Adam moves each weight of
        the last layer by about its learning rate a step, all of them at once at the
        start, so the output moves by about ``hidden[-1]`` times the learning rate: with
        hundreds of hidden units at 0.01, a few steps can move the draws far enough that
        the target's log density overflows. ``1 / hidden[-1]`` (muP's output multiplier)
        keeps that step near the learning rate whatever the width; the default 1 trains
        small conditioners (tens of units) on low-dimensional targets faster.
      base_scale: the base's standard deviation at the start (it is trained): 0.1, as
        the Gaussian families' ``init_scale`` and NumPyro's autoguides' ``init_scale``,
        so the first draws stay near ``fit``'s starting point; a target spread over
        a wide box with no informative start (the 2-D test energies) fits sooner
        from a base of that box's width.

    Returns:
      A ``Flow``, for ``variational.fit`` or ``variational.normalizing_flow``.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from inferax import flows
      >>> flow = flows.realnvp(4, (16,))
      >>> f = flow.transform.bijector(flow.transform.init(jax.random.key(0), 2))
      >>> x, log_det = f.forward_and_log_det(jnp.array([0.5, -1.0]))
      >>> bool(jnp.allclose(f.inverse(x), jnp.array([0.5, -1.0]), atol=1e-5))
      True

    References:
      Dinh, Sohl-Dickstein, Bengio, "Density estimation using Real NVP", 2017.
    """
    check_num_layers(num_layers)
    if scale not in SCALE_KINDS:
        raise ValueError(f"scale must be one of {SCALE_KINDS}, got {scale!r}")
    if not scale_bound > 0:
        raise ValueError(f"scale_bound must be positive, got {scale_bound!r}")
    if not (math.isfinite(output_multiplier) and output_multiplier > 0):
        raise ValueError(f"output_multiplier must be positive, got {output_multiplier!r}")
    transform = RealNVP(
        num_layers, check_hidden(hidden), scale, float(scale_bound), float(output_multiplier)
    )
    return Flow(transform, float(base_scale))


__all__ = [
    "FLAT_WEIGHTS_LIMIT",
    "AffineCoupling",
    "RealNVP",
    "alternating_mask",
    "coupling_indices",
    "coupling_layer_sizes",
    "check_coupling_dim",
    "check_hidden",
    "realnvp",
    "split_weights",
]
