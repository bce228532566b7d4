"""The multilayer perceptron that flow conditioners and neural drifts are built from."""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from inferax.typing import PRNGKey


def mlp_init(
    rng_key: PRNGKey,
    sizes: tuple[int, ...],
    *,
    zero_last: bool = True,
    hidden_bias: str = "uniform",
) -> list:
    """A perceptron's weights ``[(W, b), ...]`` for layer widths ``sizes``.

    Weights are LeCun-normal. Hidden biases are uniform on ``+-1/sqrt(fan_in)``
    (``hidden_bias="uniform"``), which spreads ReLU kinks away from the origin, or zero
    (``"zero"``). The last layer's bias is zero, and with ``zero_last`` its weights too, so
    a network that parameterises a change starts as no change.

    Args:
      rng_key: the key.
      sizes: input width, hidden widths, output width.
      zero_last: start the output layer at zero.
      hidden_bias: ``"uniform"`` or ``"zero"``.
    """
    if hidden_bias not in ("uniform", "zero"):
        raise ValueError(f"hidden_bias must be 'uniform' or 'zero', got {hidden_bias!r}")
    params = []
    keys = jax.random.split(rng_key, 2 * (len(sizes) - 1))
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        weight_key, bias_key = keys[2 * i], keys[2 * i + 1]
        bound = 1.0 / math.sqrt(fan_in)
        weight = jax.random.normal(weight_key, (fan_in, fan_out)) * bound
        if hidden_bias == "uniform":
            bias = jax.random.uniform(bias_key, (fan_out,), minval=-bound, maxval=bound)
        else:
            bias = jnp.zeros(fan_out)
        if i == len(sizes) - 2:
            bias = jnp.zeros(fan_out)
            if zero_last:
                weight = jnp.zeros_like(weight)
        params.append((weight, bias))
    return params


def mlp_apply(
    params: list, x: jax.Array, activation: Callable[[jax.Array], jax.Array] = jax.nn.relu
) -> jax.Array:
    """The perceptron on one input vector, ``activation`` between layers."""
    for weight, bias in params[:-1]:
        x = activation(x @ weight + bias)
    weight, bias = params[-1]
    return x @ weight + bias


__all__ = ["mlp_apply", "mlp_init"]
