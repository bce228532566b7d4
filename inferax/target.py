"""The one log-density interface that every sampler and variational family reads."""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from inferax.pytree import pytree_dataclass, static_field
from inferax.sharding import DATA_AXIS, check_mesh, default_mesh, place_sharded
from inferax.typing import ArrayLikeTree, ArrayTree


def site_name(path: tuple) -> str:
    """A readable variable name for one leaf of a position pytree."""
    parts = []
    for entry in path:
        if isinstance(entry, jax.tree_util.DictKey):
            parts.append(str(entry.key))
        elif isinstance(entry, jax.tree_util.SequenceKey):
            parts.append(str(entry.idx))
        elif isinstance(entry, jax.tree_util.GetAttrKey):
            parts.append(entry.name)
        else:
            parts.append(str(entry))
    return ".".join(parts) if parts else "x"


def named_sites(params: ArrayTree) -> dict[str, jax.Array]:
    """Names each leaf of ``params`` by its path: ``{"a": ..., "b.0": ...}``; a bare array
    is ``x``."""
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    return {site_name(path): leaf for path, leaf in leaves}


class AbstractData(abc.ABC):
    """Data laid out other than as leaves that share a leading axis of data points, such as
    clients' shards padded to one size. It says how many data points it holds, so that
    ``Target.num_data`` keeps its meaning whatever the layout."""

    @property
    @abc.abstractmethod
    def num_data(self) -> int:
        """The number of data points."""


def _num_data(data: ArrayTree) -> int | None:
    if isinstance(data, AbstractData):
        return data.num_data
    leaves = jax.tree_util.tree_leaves(data)
    if not leaves:
        return None
    lengths = {np.shape(leaf)[0] if np.ndim(leaf) > 0 else None for leaf in leaves}
    if None in lengths:
        raise ValueError("data: every leaf needs a leading axis of data points; one is a scalar")
    if len(lengths) != 1:
        raise ValueError(
            "data: every leaf must share one leading axis of data points, "
            f"got lengths {sorted(lengths)}"
        )
    return lengths.pop()


@pytree_dataclass(eq=False)
class Target:
    """An unnormalised log density, split into prior and likelihood where there is data.

    The density is ``log_prior(x) + log_likelihood(x, data) - nonsmooth.value(x)``. Samplers
    and variational families read only this object. It is a pytree: ``data``, ``init`` and
    ``nonsmooth`` are its leaves, the functions its static structure, so a compiled program
    takes the data as an argument instead of baking it in as a constant, and the same target
    hits the compilation cache on a second call.

    Args:
      log_prior: ``params -> scalar``. With no data split this is the whole log density.
      init: an example position, a pytree of float arrays in unconstrained space.
      log_likelihood: ``(params, batch) -> scalar``, summed over the leading axis of
        ``batch``; ``None`` when there is no data split.
      data: a pytree whose leaves share a leading axis of data points.
      constrain: ``params -> dict[str, Array]``, the named sites in their own space, for
        output. The default names the leaves of ``params`` by their paths.
      nonsmooth: the part of the negative log density handled by a proximity operator
        rather than by gradients (proximal and Bregman samplers). Gradient kernels refuse
        a target that has one.
      observed_data: named observed values, for the DataTree's ``observed_data`` group.
      model: the ``NumPyroModel`` the target was built from (``inferax.from_numpyro`` sets
        it), for pointwise log likelihoods and predictive sampling; ``None`` otherwise.
      data_sharding: set by ``shard_data``: the ``NamedSharding`` that lays the data points
        out over a mesh axis; ``None`` when the data sit on one device.

    Examples:
      >>> import jax.numpy as jnp, inferax
      >>> target = inferax.Target.from_logdensity(lambda x: -0.5 * jnp.sum(x**2), jnp.zeros(3))
      >>> float(target.logdensity(jnp.ones(3)))
      -1.5
    """

    log_prior: Callable[[ArrayTree], jax.Array] = static_field()
    init: ArrayTree
    log_likelihood: Callable[[ArrayTree, ArrayTree], jax.Array] | None = static_field(default=None)
    data: ArrayTree = None
    constrain: Callable[[ArrayTree], dict[str, jax.Array]] = static_field(default=named_sites)
    nonsmooth: Any = None
    observed_data: dict[str, Any] = static_field(by_identity=True, default_factory=dict)
    model: Any = static_field(by_identity=True, default=None)
    data_sharding: Any = static_field(default=None)

    def __post_init__(self):
        if not callable(self.log_prior):
            raise TypeError(f"log_prior must be callable, got {type(self.log_prior).__name__}")
        if self.log_likelihood is not None and not callable(self.log_likelihood):
            raise TypeError(
                "log_likelihood must be callable or None, "
                f"got {type(self.log_likelihood).__name__}"
            )
        if (self.log_likelihood is None) != (self.data is None):
            raise ValueError("log_likelihood and data go together: give both or neither")
        if not callable(self.constrain):
            raise TypeError(f"constrain must be callable, got {type(self.constrain).__name__}")
        leaves = jax.tree_util.tree_leaves(self.init)
        if not leaves:
            raise ValueError("init: the example position has no array leaves")
        for path, leaf in jax.tree_util.tree_flatten_with_path(self.init)[0]:
            if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
                raise TypeError(
                    f"init: leaf '{site_name(path)}' has dtype {jnp.result_type(leaf)}; "
                    "positions must be floating point"
                )
        _num_data(self.data)

    @classmethod
    def from_logdensity(
        cls,
        logdensity_fn: Callable[[ArrayTree], jax.Array],
        init: ArrayLikeTree,
        *,
        constrain: Callable[[ArrayTree], dict[str, jax.Array]] = named_sites,
    ) -> Target:
        """A target from a plain JAX log density on any pytree.

        Args:
          logdensity_fn: ``params -> scalar``, the unnormalised log density.
          init: an example position with the pytree structure ``logdensity_fn`` takes.
          constrain: optional map to named output sites.

        Returns:
          A ``Target`` with no data split.
        """
        init = jax.tree.map(lambda leaf: jnp.asarray(leaf, dtype=_float_dtype(leaf)), init)
        return cls(log_prior=logdensity_fn, init=init, constrain=constrain)

    @property
    def num_data(self) -> int | None:
        """The number of data points: the length of the leading axis of ``data``."""
        return _num_data(self.data)

    @property
    def data_on_devices(self) -> bool:
        """Whether the data are laid out over several devices (``shard_data``, or a
        federated split's client shards)."""
        return self.data_sharding is not None or isinstance(self.data, AbstractData)

    def logdensity(self, params: ArrayTree) -> jax.Array:
        """Prior plus the full-data likelihood, minus the nonsmooth part where it is set."""
        value = self.log_prior(params)
        if self.data_sharding is not None:
            value = value + sharded_log_likelihood(self, params)
        elif self.log_likelihood is not None:
            value = value + self.log_likelihood(params, self.data)
        if self.nonsmooth is not None:
            value = value - self.nonsmooth.value(params)
        return value

    def minibatch_logdensity(self, params: ArrayTree, batch: ArrayTree) -> jax.Array:
        """An unbiased estimate of ``logdensity``: the prior plus ``num_data / batch_size``
        times the likelihood of ``batch``."""
        if self.log_likelihood is None:
            raise ValueError("minibatch_logdensity needs a target with log_likelihood and data")
        batch_size = jax.tree_util.tree_leaves(batch)[0].shape[0]
        value = self.log_prior(params) + (self.num_data / batch_size) * self.log_likelihood(
            params, batch
        )
        if self.nonsmooth is not None:
            value = value - self.nonsmooth.value(params)
        return value

    def shard_data(self, mesh=None, *, axis_name: str = DATA_AXIS) -> Target:
        """This target with its data points laid out over a mesh axis: each device holds
        ``num_data / size`` points, computes the likelihood of its own points, and the sums
        are added across devices (``jax.shard_map`` and ``psum``), in the full-data log
        density and its gradient alike. Every kernel reads the result as any other target:
        NUTS, HMC and MALA through ``logdensity``; stochastic-gradient kernels gather their
        minibatch from the sharded data. Works across processes (``inferax.sharding.
        initialize``) when every process holds the same data.

        Args:
          mesh: a ``jax.sharding.Mesh`` with an axis ``axis_name``; by default every device
            of every process along one axis.
          axis_name: the mesh axis to lay the data points out along.

        Returns:
          A ``Target`` with the same densities, up to floating-point summation order.

        Raises:
          ValueError: the target has no data, or ``num_data`` does not divide evenly over
            the axis (uneven data is refused, not padded: drop or add points, or pick a
            mesh whose axis size divides ``num_data``).

        Examples:
          >>> import jax, jax.numpy as jnp, numpy as np, inferax
          >>> target = inferax.Target(
          ...     log_prior=lambda mu: -0.5 * mu**2, init=jnp.zeros(()),
          ...     log_likelihood=lambda mu, y: -0.5 * jnp.sum((y - mu) ** 2),
          ...     data=np.arange(4.0, dtype=np.float32))
          >>> sharded = target.shard_data()
          >>> float(sharded.logdensity(jnp.float32(1.0)))
          -3.5
        """
        if self.data is None or isinstance(self.data, AbstractData):
            raise ValueError(
                "shard_data: the target needs data (a pytree with a leading axis of data "
                "points) and log_likelihood"
            )
        mesh = default_mesh(axis_name) if mesh is None else mesh
        check_mesh(mesh, axis_name, self.num_data, "data points")
        data = jax.tree.map(lambda leaf: place_sharded(mesh, leaf, axis_name), self.data)
        return dataclasses.replace(
            self, data=data, data_sharding=NamedSharding(mesh, P(axis_name))
        )

    def logdensity_and_grad(self, params: ArrayTree) -> tuple[jax.Array, ArrayTree]:
        """``(logdensity, its gradient)`` in one pass."""
        return jax.value_and_grad(self.logdensity)(params)

    def minibatch_logdensity_and_grad(
        self, params: ArrayTree, batch: ArrayTree
    ) -> tuple[jax.Array, ArrayTree]:
        """``(minibatch_logdensity, its gradient)`` in one pass."""
        return jax.value_and_grad(self.minibatch_logdensity)(params, batch)


def sharded_log_likelihood(target: Target, params: ArrayTree) -> jax.Array:
    """The full-data log likelihood of a target made by ``shard_data``: each device sums
    over its own data points, and ``psum`` adds the sums across the mesh axis."""
    sharding = target.data_sharding
    (axis_name,) = sharding.spec

    def local(params, shard):
        return jax.lax.psum(target.log_likelihood(params, shard), axis_name)

    data_specs = jax.tree.map(lambda _: P(axis_name), target.data)
    return jax.shard_map(local, mesh=sharding.mesh, in_specs=(P(), data_specs), out_specs=P())(
        params, target.data
    )


def _float_dtype(leaf) -> jnp.dtype:
    dtype = jnp.result_type(leaf)
    return dtype if jnp.issubdtype(dtype, jnp.floating) else jnp.result_type(float)
