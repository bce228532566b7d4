"""A sparse GP's data: input checks, and the standardisation between user units and the
units the models work in."""

from __future__ import annotations

import dataclasses
from typing import final

import jax
import jax.numpy as jnp
import numpy as np

from inferax.pytree import pytree_dataclass


def check_inputs(X, y=None, *, dim: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """``X`` as an ``(n, D)`` float array and ``y`` as ``(n,)``, or a clear error.

    Raises:
      ValueError: NaN or infinite values, wrong ranks, mismatched lengths or a ``D`` other
        than ``dim``.
    """
    X = np.asarray(X)
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim != 2:
        raise ValueError(f"X must have shape (n, D), got shape {X.shape}")
    if X.shape[0] == 0:
        raise ValueError("X has no rows")
    if not np.issubdtype(X.dtype, np.number):
        raise TypeError(f"X must be numeric, got dtype {X.dtype}")
    if not np.all(np.isfinite(X)):
        bad = int(np.sum(~np.isfinite(X).all(axis=1)))
        raise ValueError(f"X has {bad} row(s) with NaN or infinite values")
    if dim is not None and X.shape[1] != dim:
        raise ValueError(f"X has {X.shape[1]} columns; the model was fitted on {dim}")
    if y is None:
        return X, None
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(f"y must have shape (n,) or (n, 1), got shape {y.shape}")
    if y.shape[0] != X.shape[0]:
        raise ValueError(f"X has {X.shape[0]} rows but y has {y.shape[0]} values")
    if not np.all(np.isfinite(y)):
        raise ValueError(f"y has {int(np.sum(~np.isfinite(y)))} NaN or infinite value(s)")
    return X, y


@final
@pytree_dataclass
class Scaling:
    """The affine maps between user units and the standardised units the model works in:
    ``x_std = (x - x_shift) / x_scale`` and ``y_std = (y - y_shift) / y_scale``."""

    x_shift: jax.Array
    x_scale: jax.Array
    y_shift: jax.Array
    y_scale: jax.Array

    @classmethod
    def identity(cls, dim: int, dtype) -> Scaling:
        """No change of units, for ``dim`` input columns."""
        zero, one = jnp.zeros((), dtype), jnp.ones((), dtype)
        return cls(jnp.zeros(dim, dtype), jnp.ones(dim, dtype), zero, one)

    @classmethod
    def from_data(cls, X, y, *, standardize_x: bool, standardize_y: bool, dtype) -> Scaling:
        """Each column of ``X`` (and ``y``) to mean 0 and standard deviation 1, where asked;
        a constant column keeps scale 1."""
        scaling = cls.identity(X.shape[1], dtype)
        if standardize_x:
            scale = X.std(axis=0)
            scaling = dataclasses.replace(
                scaling,
                x_shift=jnp.asarray(X.mean(axis=0), dtype),
                x_scale=jnp.asarray(np.where(scale > 0, scale, 1.0), dtype),
            )
        if standardize_y:
            scale = y.std()
            scaling = dataclasses.replace(
                scaling,
                y_shift=jnp.asarray(y.mean(), dtype),
                y_scale=jnp.asarray(scale if scale > 0 else 1.0, dtype),
            )
        return scaling

    def x(self, X):
        """``X`` in standardised units."""
        return (X - self.x_shift[None, :]) / self.x_scale[None, :]

    def y(self, y):
        """``y`` in standardised units."""
        return (y - self.y_shift) / self.y_scale


__all__ = ["Scaling", "check_inputs"]
