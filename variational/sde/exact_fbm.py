"""Exact fractional Brownian motion on a small grid, by the Cholesky factor of its
covariance: for generating data and as a reference for the Markov approximation."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def fbm_covariance(hurst, times: jax.Array) -> jax.Array:
    """``Cov(B_H(s), B_H(t)) = (s^2H + t^2H - |t - s|^2H) / 2`` (Mandelbrot-van Ness)."""
    times = jnp.asarray(times)
    s, t = times[:, None], times[None, :]
    two_h = 2.0 * jnp.asarray(hurst, times.dtype)
    return 0.5 * (s**two_h + t**two_h - jnp.abs(t - s) ** two_h)


def sample_fbm(rng_key, hurst: float, times, num_paths: int) -> jax.Array:
    """``num_paths`` exact fBM paths at ``times`` (positive, increasing; ``B_H(0) = 0`` is
    not included), shape ``(num_paths, len(times))``. The cost is ``O(n^3)`` in the grid
    size ``n``, so this is for grids of a few thousand points at most.

    Raises:
      ValueError: ``hurst`` outside (0, 1), or times that are not positive and increasing.
    """
    if not (0.0 < hurst < 1.0):
        raise ValueError(f"hurst must be in (0, 1), got {hurst!r}")
    times = jnp.asarray(times)
    if times.ndim != 1 or bool(jnp.any(times <= 0)) or bool(jnp.any(jnp.diff(times) <= 0)):
        raise ValueError("times must be a positive increasing 1-D grid (B_H(0) = 0 is implied)")
    factor = jnp.linalg.cholesky(fbm_covariance(hurst, times))
    noise = jax.random.normal(rng_key, (num_paths, times.shape[0]), times.dtype)
    return noise @ factor.T


__all__ = ["fbm_covariance", "sample_fbm"]
