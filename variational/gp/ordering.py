"""Maximin orderings and the nearest-neighbour sparsity patterns of sparse inverse-Cholesky
(Vecchia) approximations, computed on the host with a k-d tree."""

from __future__ import annotations

import heapq

import numpy as np
from scipy.spatial import cKDTree

BRUTE_FORCE_COLUMNS = 2048
"""Early columns have wide balls; their sets come from direct distances instead."""


def maximin_order(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The maximin ordering: each next point is the one farthest from those already chosen.

    The first point is the one nearest the centroid. Lazy updates on a heap: choosing ``i``
    at distance ``l_i`` can only lower the distances of points within ``l_i`` of it, found
    by a k-d tree ball query.

    Args:
      points: ``(n, D)``, already scaled (by the lengthscales).

    Returns:
      ``(order, lengths)``: ``order[k]`` is the index of the ``k``-th point and
      ``lengths[k]`` its distance to the points before it (``inf`` for the first).

    References:
      Schäfer, Katzfuss, Owhadi, "Sparse Cholesky Factorization by Kullback-Leibler
      Minimization", 2021.
    """
    n = points.shape[0]
    tree = cKDTree(points)
    first = int(np.argmin(np.sum((points - points.mean(axis=0)) ** 2, axis=1)))
    distance = np.sqrt(np.sum((points - points[first]) ** 2, axis=1))
    chosen = np.zeros(n, dtype=bool)
    chosen[first] = True
    order, lengths = [first], [np.inf]
    heap = [(-d, i) for i, d in enumerate(distance.tolist()) if i != first]
    heapq.heapify(heap)
    while heap:
        negative, i = heapq.heappop(heap)
        if chosen[i] or -negative != distance[i]:
            continue
        chosen[i] = True
        order.append(i)
        lengths.append(distance[i])
        near = np.asarray(tree.query_ball_point(points[i], distance[i]), dtype=np.int64)
        if near.size == 0:
            continue
        near = near[~chosen[near]]
        new = np.sqrt(np.sum((points[near] - points[i]) ** 2, axis=1))
        closer = new < distance[near]
        for k, d in zip(near[closer].tolist(), new[closer].tolist(), strict=True):
            distance[k] = d
            heapq.heappush(heap, (-d, k))
    return np.asarray(order, dtype=np.int64), np.asarray(lengths)


def neighbour_sets(
    ordered: np.ndarray, lengths: np.ndarray, rho: float, max_size: int
) -> np.ndarray:
    """For each column ``j`` of the ordered points, the set ``{i <= j : |x_i - x_j| <=
    rho min(l_i, l_j)}`` (``l_j <= l_i`` for ``i < j``, so the bound is ``rho l_j``), cut to
    ``j`` and its ``max_size - 1`` nearest earlier points.

    Returns:
      ``(n, max_size)`` int32, each row ascending with ``j`` last, padded in front with
      ``-1``.
    """
    n = ordered.shape[0]
    sets = np.full((n, max_size), -1, dtype=np.int32)
    tree = cKDTree(ordered)
    radius = rho * lengths
    for j in range(n):
        if j < BRUTE_FORCE_COLUMNS:
            candidates = np.arange(j)
        else:
            candidates = np.asarray(tree.query_ball_point(ordered[j], radius[j]), dtype=np.int64)
            candidates = candidates[candidates < j]
        distance = np.sqrt(np.sum((ordered[candidates] - ordered[j]) ** 2, axis=1))
        keep = distance <= radius[j]
        candidates, distance = candidates[keep], distance[keep]
        if candidates.size > max_size - 1:
            candidates = candidates[np.argsort(distance, kind="stable")[: max_size - 1]]
        row = np.sort(candidates)
        sets[j, max_size - 1 - row.size : max_size - 1] = row
        sets[j, -1] = j
    return sets


__all__ = ["maximin_order", "neighbour_sets"]
