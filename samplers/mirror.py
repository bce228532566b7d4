"""Mirror-Langevin samplers: Langevin steps taken in the dual space of a mirror map ``phi``,
so that every draw ``grad phi*(y)`` lies in the mirror's domain (a constrained support), and
the Bregman-Moreau variant for ``pi ∝ exp(-f - g)`` with a nonsmooth ``g``.

One integrator serves every kernel here, ``mirror_langevin_step`` from
``inferax.samplers.integrators``. It discretises the mirror-Langevin diffusion
``d grad phi(X) = grad log pi(X) dt + sqrt(2) hess phi(X)^(1/2) dW``, either with one
Euler-Maruyama step in the dual (``scheme="euler"``) or, as the mirror-Langevin algorithm
does, with an exact mirror-descent step followed by the dual diffusion
``dY = sqrt(2) hess phi(grad phi*(Y))^(1/2) dW`` run for time ``h`` with Euler substeps
(``scheme="mla"``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from blackjax.base import SamplingAlgorithm

from inferax.chain_starts import target_domain
from inferax.kernel import AbstractKernel, check_step_size
from inferax.nonsmooth import AbstractNonsmooth
from inferax.samplers.guarded import guarded
from inferax.samplers.integrators import mirror_langevin_step
from inferax.samplers.mirror_maps import AbstractMirrorMap
from inferax.samplers.proximal import (
    check_array_position,
    check_nonsmooth_target,
    check_smoothing,
    envelope_logdensity,
    smooth_logdensity,
)
from inferax.target import Target
from inferax.typing import PRNGKey

SCHEMES = ("euler", "mla")


class MirrorLangevinState(NamedTuple):
    """A mirror-Langevin chain: its position, with the log density and gradient cached."""

    position: jax.Array
    logdensity: jax.Array
    logdensity_grad: jax.Array


class MirrorLangevinInfo(NamedTuple):
    """``left_support``: the step's end point fell outside the mirror's domain (in floating
    point: ``grad phi*`` overflowed or underflowed to the boundary). ``nonfinite``: it lay
    inside, but its log density or gradient was not finite. ``diverging``: either; the chain
    then stayed put."""

    left_support: jax.Array
    nonfinite: jax.Array
    diverging: jax.Array


def mirror_langevin_algorithm(
    logdensity_fn: Callable,
    mirror: AbstractMirrorMap,
    step_size,
    scheme: str = "euler",
    num_substeps: int = 10,
    in_support: Callable | None = None,
) -> SamplingAlgorithm:
    """The unadjusted mirror-Langevin algorithm as a blackjax ``SamplingAlgorithm``.

    Args:
      logdensity_fn: the log density to follow.
      mirror: the mirror map.
      step_size: the step ``h``.
      scheme: ``"euler"`` or ``"mla"``.
      num_substeps: the dual diffusion's Euler substeps per step, for ``"mla"``.
      in_support: an extra support test of the new point (the nonsmooth term's domain),
        recorded in ``left_support`` but not undone: the smoothed density the chain
        follows lives on the whole mirror domain. A point off the mirror's domain is undone.

    Returns:
      ``SamplingAlgorithm(init, step)`` with ``MirrorLangevinState`` and
      ``MirrorLangevinInfo``.
    """
    logdensity_and_grad = jax.value_and_grad(logdensity_fn)

    def init(position, rng_key=None) -> MirrorLangevinState:
        del rng_key
        return MirrorLangevinState(position, *logdensity_and_grad(position))

    def step(rng_key: PRNGKey, state: MirrorLangevinState):
        position = mirror_langevin_step(
            rng_key, state.position, state.logdensity_grad, mirror, step_size, scheme, num_substeps
        )
        inside = mirror.in_domain(position) & jnp.all(jnp.isfinite(position))
        left = ~inside if in_support is None else ~(inside & in_support(position))
        # Evaluate at a point known to be inside, so nothing off the domain is traced into
        # the log density; the result is discarded when the point was outside.
        safe = jnp.where(inside, position, state.position)
        logdensity, grad = logdensity_and_grad(safe)
        new_state, diverging = guarded(
            MirrorLangevinState(safe, logdensity, grad), state, (logdensity, grad), valid=inside
        )
        return new_state, MirrorLangevinInfo(
            left_support=left, nonfinite=diverging & inside, diverging=diverging
        )

    return SamplingAlgorithm(init, step)


def _check_scheme(name: str, scheme: str, num_substeps: int) -> None:
    if scheme not in SCHEMES:
        raise ValueError(f"{name}: scheme must be one of {SCHEMES}, got {scheme!r}")
    if not isinstance(num_substeps, int) or isinstance(num_substeps, bool) or num_substeps < 1:
        raise ValueError(f"{name}: num_substeps must be an integer >= 1, got {num_substeps}")


def check_mirror(name: str, mirror) -> None:
    """Refuses, naming ``mirror``, anything but one of the library's mirror maps."""
    if not isinstance(mirror, AbstractMirrorMap):
        raise TypeError(
            f"{name}: mirror must be a mirror map from inferax.samplers (Burg, Entropy, "
            f"FermiDirac, LogBarrierBox, Hypentropy, SimplexEntropy, SimplexLogBarrier), "
            f"got {type(mirror).__name__}"
        )


def check_envelope(name: str, envelope) -> None:
    """Refuses an envelope side other than ``"left"`` or ``"right"``."""
    if envelope not in ("left", "right"):
        raise ValueError(f"{name}: envelope must be 'left' or 'right', got {envelope!r}")


def check_mirror_target(name: str, target: Target, mirror: AbstractMirrorMap) -> None:
    """A smooth mirror kernel's target: no nonsmooth part, one 1-D array position, and an
    ``init`` in the mirror's domain."""
    if target.nonsmooth is not None:
        raise ValueError(
            f"{name}: the target has a nonsmooth part, which gradients cannot follow; "
            "use bregman_moreau_langevin or bregman_moreau_mamla, which smooth it with a "
            "Bregman-Moreau envelope, or, for a constraint, a mirror whose domain is the "
            "constraint set"
        )
    check_array_position(name, target)
    check_init_in_domain(name, target, mirror)


def check_bregman_target(
    name: str, target: Target, mirror: AbstractMirrorMap, smoothing, envelope: str
) -> None:
    """A Bregman-Moreau kernel's target: a nonsmooth part whose Bregman prox for the mirror
    and envelope has a closed form, and an ``init`` in the mirror's domain."""
    g = check_nonsmooth_target(name, target)
    check_init_in_domain(name, target, mirror)
    try:
        jax.eval_shape(lambda x: g.bregman_prox(x, smoothing, mirror, envelope), target.init)
    except NotImplementedError as error:
        raise ValueError(f"{name}: {error}; pick another mirror or envelope") from None


def mirror_domain(target: Target, mirror: AbstractMirrorMap):
    """Where a mirror kernel's chains start: the domain ``target.nonsmooth`` declares if it
    declares one (an indicator's set, which the draws must not leave), else the mirror's."""
    if target_domain(target, None) is not None:
        return None  # chain_starts reads it from the target
    return mirror.support()


def check_init_in_domain(name: str, target: Target, mirror: AbstractMirrorMap) -> None:
    """Refuses a target whose ``init`` lies outside the mirror's domain."""
    if not bool(mirror.in_domain(jnp.asarray(target.init))):
        raise ValueError(
            f"{name}: target.init lies outside the domain of {type(mirror).__name__} "
            f"({mirror.domain}); the mirror must fit the target's support"
        )


def _mirror_stats(kernel, state, info, extra: dict) -> dict[str, jax.Array]:
    dtype = state.logdensity.dtype
    return {
        "lp": state.logdensity,
        "diverging": info.diverging,
        "left_support": info.left_support,
        "nonfinite": info.nonfinite,
        "step_size": jnp.asarray(kernel.step_size, dtype=dtype),
        **{key: jnp.asarray(value, dtype=dtype) for key, value in extra.items()},
    }


@dataclasses.dataclass(frozen=True)
class mirror_langevin(AbstractKernel):  # noqa: N801  (lower case, like blackjax's kernels)
    """The unadjusted mirror-Langevin algorithm, for a target whose support is the domain
    of the mirror map.

    Each step moves in the dual space, ``y = grad phi(x) + h grad log pi(x) + noise``, and
    maps back with ``x' = grad phi*(y)``, which lies in the domain whatever ``y`` is: no
    draw leaves the support, and no gradient has to see a wall. ``scheme="euler"`` takes
    one Euler-Maruyama step with noise ``sqrt(2h) hess phi(x)^(1/2) xi``; ``scheme="mla"``
    takes an exact mirror-descent step and then runs the dual diffusion for time ``h``
    (``num_substeps`` Euler substeps). Both carry an O(h) bias. Fit the mirror to the
    support: ``Burg`` or ``Entropy`` for ``x > 0``, ``FermiDirac`` or ``LogBarrierBox`` for a
    box, ``SimplexEntropy`` for the simplex in free coordinates.

    Args:
      mirror: the mirror map.
      step_size: the step ``h`` > 0.
      scheme: ``"euler"`` or ``"mla"``.
      num_substeps: dual-diffusion substeps for ``"mla"``.

    Examples:
      >>> import jax, jax.numpy as jnp, inferax
      >>> from inferax import samplers
      >>> gamma = inferax.Target.from_logdensity(
      ...     lambda x: jnp.sum(-0.5 * jnp.log(x) - x), jnp.ones(1))
      >>> post = inferax.sample(gamma, samplers.mirror_langevin(samplers.Burg(), 0.05),
      ...                       jax.random.key(0), num_chains=2, num_warmup=100,
      ...                       num_samples=100, init=jnp.ones((2, 1)), progress=False)
      >>> bool((post.draws["x"] > 0).all())
      True

    References:
      Zhang, Peyré, Fadili, Pereyra, "Wasserstein control of mirror Langevin Monte Carlo",
      COLT 2020.
      Ahn, Chewi, "Efficient constrained sampling via the mirror-Langevin algorithm",
      NeurIPS 2021.
    """

    mirror: AbstractMirrorMap
    step_size: float
    scheme: str = "euler"
    num_substeps: int = 10

    name = "mirror_langevin"

    def __post_init__(self):
        check_mirror(self.name, self.mirror)
        check_step_size(self)
        _check_scheme(self.name, self.scheme, self.num_substeps)

    def check_target(self, target: Target) -> None:
        check_mirror_target(self.name, target, self.mirror)

    def domain(self, target: Target):
        return self.mirror.support()

    def build(self, target: Target) -> SamplingAlgorithm:
        return mirror_langevin_algorithm(
            target.logdensity, self.mirror, self.step_size, self.scheme, self.num_substeps
        )

    def sample_stats(self, state: Any, info: MirrorLangevinInfo, tuned: dict):
        return _mirror_stats(self, state, info, {})


def bregman_moreau_logdensity(
    logdensity_fn: Callable, g: AbstractNonsmooth, mirror: AbstractMirrorMap, smoothing, envelope
):
    """``-f - env``: the log density with ``g`` replaced by its Bregman-Moreau envelope.

    Left: ``env(x) = g(p) + D_phi(p, x) / lam`` with ``p`` the left Bregman prox, and
    ``grad env(x) = hess phi(x) (x - p) / lam``. Right: ``env(x) = g(p) + D_phi(x, p) / lam``
    with ``p`` the right Bregman prox, and ``grad env(x) = (grad phi(x) - grad phi(p)) / lam``.
    """

    def value_and_grad(x):
        p = g.bregman_prox(x, smoothing, mirror, envelope)
        gp = g.value(p)
        gp = jnp.where(jnp.isfinite(gp), gp, 0.0)
        if envelope == "left":
            value = gp + mirror.bregman_divergence(p, x) / smoothing
            return value, mirror.hess_matvec(x, x - p) / smoothing
        value = gp + mirror.bregman_divergence(x, p) / smoothing
        return value, (mirror.grad(x) - mirror.grad(p)) / smoothing

    return envelope_logdensity(logdensity_fn, value_and_grad)


@dataclasses.dataclass(frozen=True)
class bregman_moreau_langevin(AbstractKernel):  # noqa: N801  (lower case, like blackjax's kernels)
    """The Bregman-Moreau unadjusted mirror-Langevin algorithm (BMUMLA) for
    ``pi ∝ exp(-f - g)`` with ``g = target.nonsmooth``.

    ``g`` is replaced by its left or right Bregman-Moreau envelope for the mirror ``phi``,
    and the mirror-Langevin step of ``mirror_langevin`` is taken on ``f + env``:
    ``y = grad phi(x) - h grad f(x) - h grad env(x) + sqrt(2h) hess phi(x)^(1/2) xi``,
    ``x' = grad phi*(y)``, with ``grad env(x) = hess phi(x)(x - leftprox(x)) / lam`` (left) or
    ``(grad phi(x) - grad phi(rightprox(x))) / lam`` (right). It needs the closed-form
    Bregman prox of ``g`` for the mirror (see ``docs/proximal.md``); a pair without one is
    refused before anything compiles. ``left_support`` counts steps whose end point left the
    mirror's domain (such a step is undone and counted in ``diverging``) or the domain of
    ``g`` (kept, as MYULA keeps it: the smoothed target has mass there).

    Args:
      mirror: the mirror map.
      step_size: the step ``h`` > 0.
      smoothing: the envelope parameter ``lam`` > 0.
      envelope: ``"left"`` or ``"right"``.
      scheme: ``"euler"`` or ``"mla"``, as in ``mirror_langevin``.
      num_substeps: dual-diffusion substeps for ``"mla"``.

    Examples:
      >>> import jax, jax.numpy as jnp, inferax
      >>> from inferax import samplers
      >>> target = inferax.Target(log_prior=lambda x: -0.5 * jnp.sum((x - 0.5) ** 2),
      ...                         init=jnp.zeros(1), nonsmooth=samplers.L1(2.0))
      >>> kernel = samplers.bregman_moreau_langevin(samplers.Hypentropy(1.0), step_size=0.01,
      ...                                           smoothing=0.01, envelope="left")
      >>> algorithm = kernel.build(target)
      >>> state, info = algorithm.step(jax.random.key(0), algorithm.init(jnp.zeros(1)))
      >>> bool(info.left_support), bool(info.diverging)
      (False, False)

    References:
      Lau, Liu, "Bregman Proximal Langevin Monte Carlo via Bregman-Moreau Envelopes",
      ICML 2022.
    """

    mirror: AbstractMirrorMap
    step_size: float
    smoothing: float
    envelope: str = "left"
    scheme: str = "euler"
    num_substeps: int = 10

    name = "bregman_moreau_langevin"

    def __post_init__(self):
        check_mirror(self.name, self.mirror)
        check_step_size(self)
        check_smoothing(self.name, self.smoothing)
        check_envelope(self.name, self.envelope)
        _check_scheme(self.name, self.scheme, self.num_substeps)

    def check_target(self, target: Target) -> None:
        check_bregman_target(self.name, target, self.mirror, self.smoothing, self.envelope)

    def domain(self, target: Target):
        return mirror_domain(target, self.mirror)

    def build(self, target: Target) -> SamplingAlgorithm:
        g = target.nonsmooth
        smoothed = bregman_moreau_logdensity(
            smooth_logdensity(target), g, self.mirror, self.smoothing, self.envelope
        )
        return mirror_langevin_algorithm(
            smoothed,
            self.mirror,
            self.step_size,
            self.scheme,
            self.num_substeps,
            in_support=lambda x: jnp.isfinite(g.value(x)),
        )

    def sample_stats(self, state: Any, info: MirrorLangevinInfo, tuned: dict):
        return _mirror_stats(self, state, info, {"smoothing": self.smoothing})


__all__ = [
    "MirrorLangevinInfo",
    "MirrorLangevinState",
    "bregman_moreau_langevin",
    "bregman_moreau_logdensity",
    "check_bregman_target",
    "check_envelope",
    "check_init_in_domain",
    "check_mirror",
    "check_mirror_target",
    "mirror_domain",
    "mirror_langevin",
    "mirror_langevin_algorithm",
]
