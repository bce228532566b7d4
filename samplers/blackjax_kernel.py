"""Any blackjax sampling algorithm as an inferax kernel: the user's own, or one of blackjax's
that inferax does not wrap, run by ``inferax.sample`` with chunking, checkpoints, fault
counts and ArviZ statistics."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from blackjax.base import SamplingAlgorithm

from inferax.kernel import AbstractKernel, WarmupAlgorithm, check_step_size
from inferax.samplers.adaptation import (
    unit_inverse_mass_matrix,
    window_adaptation_of,
    window_schedule,
)
from inferax.target import Target

INFO_FIELDS_TO_STATS = {
    "acceptance_rate": "acceptance_rate",
    "is_divergent": "diverging",
    "energy": "energy",
    "num_integration_steps": "n_steps",
    "num_trajectory_expansions": "tree_depth",
}
"""blackjax's info fields and the ArviZ ``sample_stats`` names they become."""

ADAPTATIONS = (None, "window")


@dataclasses.dataclass(frozen=True)
class from_blackjax(AbstractKernel):  # noqa: N801  (lower case, like the other constructors)
    """A blackjax ``SamplingAlgorithm`` as an inferax kernel.

    ``build(logdensity_fn, **tuned)`` must return a blackjax ``SamplingAlgorithm`` (any
    ``init(position) -> state`` and ``step(rng_key, state) -> (state, info)`` pair, as
    ``blackjax.base.SamplingAlgorithm(init, step)``). Its info fields that ArviZ knows
    become ``sample_stats`` (``acceptance_rate``, ``is_divergent`` as ``diverging``,
    ``energy``, ``num_integration_steps`` as ``n_steps``, ``num_trajectory_expansions`` as
    ``tree_depth``), and a state's ``logdensity`` becomes ``lp``.

    Without adaptation, warmup steps the algorithm as built (burn-in). With
    ``adaptation="window"``, warmup runs Stan's window adaptation of ``step_size`` and
    ``inverse_mass_matrix`` (dual averaging and Welford windows, as for ``nuts``), and
    ``build`` must take both as keyword arguments.

    A kernel is hashable through ``build``: pass the same function object to reuse the
    compiled program on a second call (a lambda written anew each time compiles anew).

    Args:
      build: ``build(logdensity_fn, **tuned) -> SamplingAlgorithm``.
      adaptation: ``None`` (burn-in) or ``"window"``.
      initial_step_size: where window adaptation starts.
      target_acceptance_rate: the mean acceptance rate window adaptation aims for.
      is_mass_matrix_diagonal: adapt a diagonal (True) or dense inverse mass matrix.
      name: the kernel's name in progress bars and output.

    Examples:
      >>> import blackjax, jax, jax.numpy as jnp, inferax
      >>> target = inferax.Target.from_logdensity(lambda x: -0.5 * jnp.sum(x**2), jnp.zeros(2))
      >>> def barker(logdensity_fn, step_size, inverse_mass_matrix):
      ...     return blackjax.barker_proposal(logdensity_fn, step_size, inverse_mass_matrix)
      >>> kernel = inferax.samplers.from_blackjax(barker, adaptation="window", name="barker")
      >>> post = inferax.sample(target, kernel, jax.random.key(0), num_chains=2,
      ...                       num_warmup=200, num_samples=100)
      >>> sorted(post.stats)
      ['acceptance_rate', 'diverging', 'lp', 'step_size']
    """

    build_fn: Callable[..., SamplingAlgorithm]
    adaptation: str | None = None
    initial_step_size: float = 1.0
    target_acceptance_rate: float = 0.8
    is_mass_matrix_diagonal: bool = True
    name: str = "blackjax"

    def __post_init__(self):
        if not callable(self.build_fn):
            raise TypeError(
                "from_blackjax: build must be callable, build(logdensity_fn, **tuned) -> "
                f"SamplingAlgorithm; got {type(self.build_fn).__name__}"
            )
        if self.adaptation not in ADAPTATIONS:
            raise ValueError(
                f"from_blackjax: adaptation must be one of {ADAPTATIONS}, got {self.adaptation!r}"
            )
        if not 0.0 < self.target_acceptance_rate < 1.0:
            raise ValueError(
                "from_blackjax: target_acceptance_rate must lie in (0, 1), "
                f"got {self.target_acceptance_rate}"
            )
        check_step_size(self, "initial_step_size")

    def build(self, target: Target, **tuned) -> SamplingAlgorithm:
        if self.adaptation == "window" and not tuned:
            tuned = self._untuned(target)
        algorithm = self.build_fn(target.logdensity, **tuned)
        if not (callable(getattr(algorithm, "init", None)) and callable(algorithm.step)):
            raise TypeError(
                f"from_blackjax: build returned {type(algorithm).__name__}, not a blackjax "
                "SamplingAlgorithm(init, step)"
            )
        return algorithm

    def sample_stats(
        self, state: Any, info: Any, tuned: dict[str, jax.Array]
    ) -> dict[str, jax.Array]:
        stats = {}
        if hasattr(state, "logdensity"):
            stats["lp"] = state.logdensity
        for field, stat in INFO_FIELDS_TO_STATS.items():
            if hasattr(info, field):
                stats[stat] = jnp.asarray(getattr(info, field))
        if "diverging" not in stats and "acceptance_rate" in stats:
            # A Metropolis kernel with no divergence flag: blackjax rejects a proposal whose
            # log density is not finite, with acceptance probability 0 or NaN.
            stats["diverging"] = ~(stats["acceptance_rate"] > 0.0)
        if "step_size" in tuned:
            stats["step_size"] = tuned["step_size"]
        return stats

    def warmup_schedule(self, num_steps: int) -> np.ndarray:
        if self.adaptation == "window":
            return window_schedule(num_steps)
        return super().warmup_schedule(num_steps)

    def warmup_algorithm(self, target: Target) -> WarmupAlgorithm:
        if self.adaptation == "window":
            return window_adaptation_of(self, target)
        return super().warmup_algorithm(target)

    def _untuned(self, target: Target) -> dict[str, jax.Array]:
        return {
            "step_size": jnp.asarray(self.initial_step_size),
            "inverse_mass_matrix": unit_inverse_mass_matrix(
                target.init, self.is_mass_matrix_diagonal
            ),
        }
