"""The kernel protocol: what every inferax sampler is.

A kernel is a frozen config that builds a blackjax ``SamplingAlgorithm`` for a ``Target``,
and a warmup that ``inferax.sample`` can run in compiled chunks. The samplers in
``inferax.samplers`` implement it; ``inferax.sample`` reads nothing else.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from inferax.target import Target

if TYPE_CHECKING:
    # Importing blackjax computes arrays, which starts JAX's backend; `import inferax` must
    # not, so that `jax.distributed.initialize` can still run after it.
    from blackjax.base import SamplingAlgorithm

    from inferax.chain_starts import Domain
from inferax.typing import ArrayLikeTree, ArrayTree, PRNGKey


class WarmupAlgorithm(NamedTuple):
    """A warmup that advances one step at a time, so a driver can run it in chunks.

    ``init(position) -> warmup_state``;
    ``step(rng_key, warmup_state, schedule_entry) -> warmup_state``, where the entry is one
    row of the kernel's ``warmup_schedule``;
    ``final(warmup_state) -> (chain_state, tuned)``, the state to sample from and the keyword
    arguments that ``build`` takes.

    A warmup whose step is "step the kernel with the current parameters, then adapt" also
    gives that step in parts (``stepwise_warmup`` makes one), and ``inferax.sample`` then
    runs warmup and sampling in one compiled program holding one kernel step:
    ``prepare(rng_key, warmup_state, schedule_entry) -> (warmup_state, step_key)``, the work
    before the kernel step (a step-size search) and the key the step takes;
    ``parameters(warmup_state) -> tuned``, the keyword arguments of ``build`` for this step,
    with the structure and dtypes of ``final``'s;
    ``adapt(warmup_state, chain_state, info, schedule_entry) -> warmup_state``, which records
    the step's new chain state and info. Such a warmup state is a ``NamedTuple`` whose
    ``chain`` field holds the chain state.
    """

    init: Callable[[ArrayTree], Any]
    step: Callable[[PRNGKey, Any, jax.Array], Any]
    final: Callable[[Any], tuple[Any, dict[str, jax.Array]]]
    prepare: Callable[[PRNGKey, Any, jax.Array], tuple[Any, PRNGKey]] | None = None
    parameters: Callable[[Any], dict[str, jax.Array]] | None = None
    adapt: Callable[[Any, Any, Any, jax.Array], Any] | None = None

    @property
    def stepwise(self) -> bool:
        """Whether the step is given in parts (``prepare``, ``parameters``, ``adapt``)."""
        return None not in (self.prepare, self.parameters, self.adapt)


def stepwise_warmup(
    build: Callable[..., SamplingAlgorithm],
    init: Callable[[ArrayTree], Any],
    prepare: Callable[[PRNGKey, Any, jax.Array], tuple[Any, PRNGKey]],
    parameters: Callable[[Any], dict[str, jax.Array]],
    adapt: Callable[[Any, Any, Any, jax.Array], Any],
    final: Callable[[Any], tuple[Any, dict[str, jax.Array]]],
) -> WarmupAlgorithm:
    """A ``WarmupAlgorithm`` whose step is ``prepare``, one step of
    ``build(**parameters(warmup_state))`` from ``warmup_state.chain``, then ``adapt``.

    ``inferax.sample``'s one program steps ``kernel.build(target, **parameters(state))``,
    in warmup and sampling alike, so ``build`` must be that kernel's own ``build``.

    Args:
      build: ``build(**tuned) -> SamplingAlgorithm``: ``kernel.build(target, **tuned)``.
      init: ``init(position) -> warmup_state``, a ``NamedTuple`` with a ``chain`` field.
      prepare: as in ``WarmupAlgorithm``.
      parameters: as in ``WarmupAlgorithm``.
      adapt: as in ``WarmupAlgorithm``.
      final: as in ``WarmupAlgorithm``.
    """

    def step(rng_key, warmup_state, schedule_entry):
        warmup_state, step_key = prepare(rng_key, warmup_state, schedule_entry)
        algorithm = build(**parameters(warmup_state))
        chain, info = algorithm.step(step_key, warmup_state.chain)
        return adapt(warmup_state, chain, info, schedule_entry)

    return WarmupAlgorithm(init, step, final, prepare, parameters, adapt)


class BurnInState(NamedTuple):
    """The warmup state of a kernel that tunes nothing: just its chain state."""

    chain: Any


SETTING_CLASSES: dict[str, type] = {}
"""Every class whose values may be saved as settings in a run directory, by qualified name:
kernel configs and the values they hold (mirror maps). A run directory names one of these
and its fields; ``inferax.resume`` rebuilds it from this table and nothing else."""


class AbstractSetting:
    """A config value that a checkpoint saves as data: its class's qualified name and its
    dataclass fields. Subclasses register themselves in ``SETTING_CLASSES``."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        SETTING_CLASSES[f"{cls.__module__}.{cls.__qualname__}"] = cls


class AbstractKernel(AbstractSetting, abc.ABC):
    """A sampler configuration. Subclasses are frozen dataclasses, so a config is hashable
    and a compiled program is reused for the same config.

    ``build(target, **tuned)`` returns blackjax's ``SamplingAlgorithm(init, step)``;
    ``warmup_algorithm(target)`` tunes it. Kernels with fixed settings burn in: warmup steps
    the built kernel and tunes nothing.
    """

    name: ClassVar[str]

    @abc.abstractmethod
    def build(self, target: Target, **tuned) -> SamplingAlgorithm:
        """The algorithm for ``target``, with tuned parameters where the kernel has them."""

    @abc.abstractmethod
    def sample_stats(
        self, state: Any, info: Any, tuned: dict[str, jax.Array]
    ) -> dict[str, jax.Array]:
        """Per-step statistics with ArviZ's names (``acceptance_rate``, ``diverging``, ...)."""

    def check_target(self, target: Target) -> None:
        """Refuses targets this kernel cannot sample. Gradient kernels refuse ``nonsmooth``."""
        if target.nonsmooth is not None:
            raise ValueError(
                f"{self.name}: the target has a nonsmooth part, which gradients cannot follow; "
                "use a proximal or mirror sampler (inferax.samplers.proximal, "
                "inferax.samplers.mirror), which handle it through its proximity operator"
            )

    def domain(self, target: Target) -> Domain | None:
        """The open set this kernel's chains live in (a mirror map's domain), or ``None``
        for none beyond the one ``target.nonsmooth`` declares. ``inferax.sample`` draws
        default starts inside it and refuses an explicit ``init`` outside it, before
        compiling. Must be hashable: it is a static argument of the start program."""
        return None

    def prepare_target(self, target: Target) -> Target:
        """The target ``build`` and ``warmup_algorithm`` receive, made from the user's once
        per call of ``inferax.sample``, before anything compiles. The identity here; a kernel
        that needs the target in another form (federated kernels place their clients' data
        on a device mesh) overrides it."""
        return target

    def warmup_schedule(self, num_steps: int) -> np.ndarray:
        """One row per warmup step, handed to ``WarmupAlgorithm.step``."""
        return np.zeros((num_steps, 0), dtype=np.int32)

    def warmup_algorithm(self, target: Target) -> WarmupAlgorithm:
        """Burn-in: step the kernel as built, tune nothing."""
        algorithm = self.build(target)

        def init(position):
            return BurnInState(algorithm.init(position))

        def prepare(rng_key, warmup_state, schedule_entry):
            del schedule_entry
            return warmup_state, rng_key

        def adapt(warmup_state, chain, info, schedule_entry):
            del warmup_state, info, schedule_entry
            return BurnInState(chain)

        def final(warmup_state):
            return warmup_state.chain, {}

        return stepwise_warmup(
            lambda: algorithm, init, prepare, lambda warmup_state: {}, adapt, final
        )

    def warmup(
        self, target: Target, rng_key: PRNGKey, position: ArrayLikeTree, num_steps: int
    ) -> tuple[Any, dict[str, jax.Array]]:
        """Runs the whole warmup for one chain in one scan.

        Args:
          target: the target to tune for.
          rng_key: the warmup's key; step ``t`` uses ``fold_in(rng_key, t)``.
          position: the chain's starting position.
          num_steps: the number of warmup steps.

        Returns:
          ``(state, tuned)``: the chain state after warmup and the keyword arguments to
          pass to ``build``.
        """
        algorithm = self.warmup_algorithm(target)
        schedule = jnp.asarray(self.warmup_schedule(num_steps))

        def one_step(warmup_state, xs):
            step_index, entry = xs
            return algorithm.step(
                jax.random.fold_in(rng_key, step_index), warmup_state, entry
            ), None

        warmup_state, _ = jax.lax.scan(
            one_step, algorithm.init(position), (jnp.arange(num_steps), schedule)
        )
        return algorithm.final(warmup_state)


def as_number(name: str, what: str, value) -> float:
    """``value`` as a Python float: a Python, NumPy or JAX real scalar is accepted, a bool,
    a string or an array with elements is refused with a message that names ``what``."""
    dtype = getattr(value, "dtype", None)
    scalar = isinstance(value, int | float | np.integer | np.floating) or (
        getattr(value, "shape", None) == ()
        and dtype is not None
        and np.issubdtype(dtype, np.number)
    )
    if not scalar or isinstance(value, bool | np.bool_) or np.iscomplexobj(value):
        raise TypeError(f"{name}: {what} must be a real number, got {type(value).__name__}")
    return float(value)


def check_step_size(kernel: AbstractKernel, field: str = "step_size") -> None:
    """Checks that ``kernel.<field>`` is a finite number > 0 and stores it as a Python float
    (a NumPy or JAX scalar would make the frozen config unhashable).

    Raises:
      TypeError: not a real number.
      ValueError: not finite, or not > 0.
    """
    value = as_number(kernel.name, field, getattr(kernel, field))
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{kernel.name}: {field} must be finite and > 0, got {value}")
    object.__setattr__(kernel, field, value)
