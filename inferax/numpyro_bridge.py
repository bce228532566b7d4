"""NumPyro models in: a ``Target`` in unconstrained space, with the likelihood split by
observed sites when the caller names the data arguments."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from numpyro import handlers
from numpyro.distributions import Delta, ImproperUniform, Unit
from numpyro.infer import init_to_uniform

# initialize_model's first half, without its search for a start (``_initialize``).
from numpyro.infer.util import (
    ModelInfo,
    ParamInfo,
    _get_model_transforms,
    _prepare_model_for_potential,
    constrain_fn,
    get_potential_fn,
    initialize_model,
    potential_energy,
    transform_fn,
)

from inferax.compile_cache import RUN_ONCE_OPTIONS, ensure_compilation_cache
from inferax.target import Target

ENUM_EXTRA = "pip install 'inferax[enum]'"
"""How a user gets funsor, which NumPyro needs to enumerate discrete sites."""


@dataclasses.dataclass(frozen=True, eq=False)
class NumPyroModel:
    """A NumPyro model together with the arguments a ``Target`` was built from: what
    predictive sampling, pointwise log likelihoods and discrete-site recovery rerun.

    Attributes:
      model: the model function.
      args: its positional arguments.
      kwargs: its keyword arguments.
      observed: the observed sites (``numpyro.factor`` terms excluded), in trace order.
      enumerated: the discrete latent sites that NumPyro marginalises by enumeration.
      improper: the latent sites with an improper prior (``dist.ImproperUniform``).
      dims: dim names by site, from the model's plates, as ``arviz_base.from_numpyro``
        infers them.
      constant_data: the array arguments that are not observed values, by argument name.
      max_plate_nesting: how deeply the model's plates nest.
    """

    model: Callable
    args: tuple
    kwargs: dict[str, Any]
    observed: tuple[str, ...]
    enumerated: tuple[str, ...]
    improper: tuple[str, ...]
    dims: dict[str, list[str]]
    constant_data: dict[str, np.ndarray]
    max_plate_nesting: int


def from_numpyro(
    model: Callable,
    *args,
    data: Sequence[str] | None = None,
    **kwargs,
) -> Target:
    """A ``Target`` for a NumPyro model: every model NumPyro's NUTS runs, with continuous
    latent sites or discrete ones that NumPyro enumerates.

    The position is the model's continuous latent sites in unconstrained space, through
    ``numpyro.infer.util.initialize_model``; the log density includes the Jacobians of the
    transforms, improper priors (``dist.ImproperUniform``), ``numpyro.factor`` terms, masks,
    scales and reparametrisations, and sums out enumerated discrete sites
    (``infer={"enumerate": "parallel"}``, which needs ``funsor``: ``pip install
    'inferax[enum]'``). ``constrain`` is the model's postprocess function, so output holds
    every sample and deterministic site in its own space. Observed sites go to
    ``observed_data``; ``target.model`` keeps the model and its arguments, for pointwise log
    likelihoods (``inferax.sample``), ``inferax.predictive``, ``inferax.prior_predictive``
    and ``inferax.infer_discrete``.

    The example position ``target.init`` is the origin of unconstrained space when the log
    density and its gradient are finite there; otherwise it is found as NumPyro finds one,
    uniformly within a radius of the origin over up to 100 tries, the radius growing from
    0.01 to 2 until one is found. Chains start within 2 of it, as NumPyro's do of the
    origin.

    When ``data`` names model arguments, those arguments become ``target.data``: their
    leading axis indexes data points. ``log_likelihood(params, batch)`` is then the log
    probability of the observed sites with the batch in place of the data, and
    ``log_prior`` is everything else, evaluated on a single data point so that its cost does
    not grow with the data. Stochastic-gradient and federated samplers need this split.

    Args:
      model: a NumPyro model function.
      *args: the model's positional arguments.
      data: names of model arguments that hold the data, each with a leading axis of data
        points. A model argument that is itself called ``data`` must be passed positionally.
      **kwargs: the model's keyword arguments.

    Returns:
      A ``Target``.

    Raises:
      ValueError: the model has a discrete latent site that is not enumerated (named in the
        message, with how to enumerate it), or an enumerated one and ``funsor`` is missing;
        a name in ``data`` is not a model argument, or a data argument has no leading axis of
        data points, or a latent site has one value per data point, or the model has
        enumerated sites (these cannot be split into minibatches); or no finite initial
        position exists.

    Examples:
      >>> import jax.numpy as jnp, numpyro, numpyro.distributions as dist, inferax
      >>> def model(y):
      ...     mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
      ...     numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)
      >>> target = inferax.from_numpyro(model, jnp.array([0.5, 1.5]))
      >>> sorted(target.constrain(target.init))
      ['mu']
    """
    if isinstance(data, str):
        data = (data,)  # one name, not its letters
    # What is compiled here (the check at the origin) is kept for the next process too.
    ensure_compilation_cache()
    info = _initialize(model, args, kwargs)
    trace = info.model_trace
    enumerated = _enumerated_sites(trace)
    numpyro_model = NumPyroModel(
        model=model,
        args=args,
        kwargs=kwargs,
        observed=_observed_sites(trace),
        enumerated=enumerated,
        improper=_improper_sites(trace),
        dims=_plate_dims(trace),
        constant_data=_constant_data(model, args, kwargs, trace),
        max_plate_nesting=_max_plate_nesting(trace),
    )
    observed = {name: np.asarray(trace[name]["value"]) for name in numpyro_model.observed}
    init = info.param_info.z
    constrain = info.postprocess_fn

    if data is None:
        potential_fn = info.potential_fn
        return Target(
            # Jitted, so that the model is traced once per process: the programs that hold
            # the density (the start, the chunk) and the shapes traced before them reuse
            # the trace, and their gradients and batches transform it, not the model.
            log_prior=jax.jit(lambda params: -potential_fn(params)),
            init=init,
            constrain=constrain,
            observed_data=observed,
            model=numpyro_model,
        )

    if enumerated:
        raise ValueError(
            f"data: the model enumerates the discrete sites {list(enumerated)}, and an "
            "enumerated likelihood does not split into a sum over minibatches; sample the "
            "whole model (drop data=)"
        )
    bind = _DataBinder(model, args, kwargs, tuple(data))
    data_tree = {name: jnp.asarray(bind.values[name]) for name in bind.names}
    _check_leading_axis(data_tree)
    _refuse_latents_per_data_point(trace, data_tree)
    one_point = jax.tree.map(lambda leaf: leaf[:1], data_tree)
    latent_only = handlers.block(model, hide_fn=lambda site: site.get("is_observed", False))

    def log_prior(params):
        model_args, model_kwargs = bind(one_point)
        return -potential_energy(latent_only, model_args, model_kwargs, params)

    def log_likelihood(params, batch):
        model_args, model_kwargs = bind(batch)
        values = constrain_fn(model, model_args, model_kwargs, params)
        trace = handlers.trace(handlers.substitute(model, data=values)).get_trace(
            *model_args, **model_kwargs
        )
        return _observed_log_prob(trace)

    _check_runs_on_a_batch(log_likelihood, init, data_tree)
    return Target(
        log_prior=log_prior,
        init=init,
        log_likelihood=log_likelihood,
        data=data_tree,
        constrain=constrain,
        observed_data=observed,
        model=numpyro_model,
    )


INIT_SEARCH_RADII = (0.0, 0.01, 0.1, 0.5, 2.0)
"""Where ``from_numpyro`` looks for its example position: the origin of unconstrained space,
then uniformly within each radius in turn (100 tries each, NumPyro's ``init_to_uniform``).
Chains start within 2 of the example position, so one near the origin gives them the
starts NumPyro gives its chains."""


def _initialize(model: Callable, args: tuple, kwargs: dict) -> ModelInfo:
    """NumPyro's initialisation, at the origin of unconstrained space where the density and
    its gradient are finite there, else as near it as NumPyro's search finds a position.

    At the origin only one evaluation is compiled, of the density and its gradient at one
    point: NumPyro's search compiles a loop around them, a second program holding the
    model's gradient beside the one ``inferax.sample``'s start program compiles (on a model
    whose gradient is slow to compile, such as a Beta's, the larger part of a first call's
    set-up). The search runs only where the origin is not usable."""
    _refuse_unenumerated_discrete(model, args, kwargs)
    try:
        info = _at_the_origin(model, args, kwargs)
    except (ImportError, ModuleNotFoundError) as error:
        raise _funsor_missing(error) from error
    origin = info.param_info.z
    check = jax.jit(jax.value_and_grad(info.potential_fn)).lower(origin)
    # Run once: XLA's optimisations would cost more compile time than they save.
    value, gradient = check.compile(RUN_ONCE_OPTIONS)(origin)
    # On the host: jnp's checks would each compile a small program.
    host = jax.tree.leaves(jax.device_get((value, gradient)))
    usable = all(np.all(np.isfinite(leaf)) for leaf in host)
    if usable:
        return info._replace(param_info=ParamInfo(origin, value, gradient))
    return _search(model, args, kwargs)


def _at_the_origin(model: Callable, args: tuple, kwargs: dict) -> ModelInfo:
    """What ``initialize_model`` builds (the potential, the postprocess function, the
    model's trace) with the origin of unconstrained space as the position, without its
    search: the first half of ``initialize_model``, which gives its search's start as the
    prototype."""
    seeded = handlers.substitute(
        handlers.seed(model, jax.random.key(0)), substitute_fn=init_to_uniform(radius=0.0)
    )
    inv_transforms, replay_model, enumerate_support, trace = _get_model_transforms(
        seeded, args, kwargs
    )
    for name, site in trace.items():
        if site["type"] == "sample" and not site["is_observed"] and isinstance(site["fn"], Delta):
            raise ValueError(
                f"from_numpyro: latent site '{name}' has a Delta distribution; record the "
                "value with numpyro.deterministic instead"
            )
    prepared = _prepare_model_for_potential(model, trace, enum=enumerate_support)
    potential_fn, postprocess_fn = get_potential_fn(
        prepared,
        inv_transforms,
        replay_model=replay_model,
        enum=enumerate_support,
        model_args=args,
        model_kwargs=kwargs,
    )
    constrained = {
        name: site["value"]
        for name, site in trace.items()
        if site["type"] == "sample"
        and not site["is_observed"]
        and not site["fn"].support.is_discrete
    }
    origin = transform_fn(inv_transforms, constrained, invert=True)
    # Jitted, so that the model is traced once per process: the check at the origin, the
    # target's density and the programs that hold it transform that one trace.
    return ModelInfo(ParamInfo(origin, None, None), jax.jit(potential_fn), postprocess_fn, trace)


def _search(model: Callable, args: tuple, kwargs: dict) -> ModelInfo:
    """NumPyro's own search, within each of ``INIT_SEARCH_RADII`` past the origin in turn."""
    last_error = None
    # A batch of one key: NumPyro then searches in one compiled loop, where one key has it
    # run the model's density and gradient op by op, compiling each operation on its own.
    keys = jax.random.split(jax.random.key(0), 1)
    for radius in INIT_SEARCH_RADII[1:]:
        try:
            info = initialize_model(
                keys,
                model,
                init_strategy=init_to_uniform(radius=radius),
                model_args=args,
                model_kwargs=kwargs,
            )
            return info._replace(param_info=jax.tree.map(lambda x: x[0], info.param_info))
        except RuntimeError as error:
            last_error = error
        except (ImportError, ModuleNotFoundError) as error:
            raise _funsor_missing(error) from error
    raise ValueError(
        "from_numpyro: no position with a finite log density and gradient was found, at the "
        f"origin of unconstrained space or in 100 tries within each of {INIT_SEARCH_RADII[1:]} "
        f"of it ({last_error}); check the model and its data"
    ) from last_error


def _funsor_missing(error: Exception) -> ValueError:
    return ValueError(
        "from_numpyro: the model enumerates a discrete site, and NumPyro needs "
        f"funsor to sum it out: {ENUM_EXTRA} ({error})"
    )


def _refuse_unenumerated_discrete(model: Callable, args: tuple, kwargs: dict) -> None:
    """A discrete latent site must be marked for parallel enumeration and enumerable;
    checked on the model's structure alone, before NumPyro tries to differentiate it."""

    def discrete_sites():
        model_with_values = handlers.substitute(
            handlers.seed(model, 0), substitute_fn=_placeholder_value
        )
        trace = handlers.trace(model_with_values).get_trace(*args, **kwargs)
        return {
            name: (site["fn"], (site.get("infer") or {}).get("enumerate"))
            for name, site in trace.items()
            if site["type"] == "sample"
            and not site["is_observed"]
            and site["fn"].support.is_discrete
        }

    sites = {}
    # The trace is read for its structure only; eval_shape keeps it from computing.
    jax.eval_shape(lambda: sites.update(discrete_sites()))
    for name, (distribution, enumerate_as) in sites.items():
        kind = type(distribution).__name__
        if not distribution.has_enumerate_support:
            raise ValueError(
                f"from_numpyro: latent site '{name}' is discrete ({kind}) with an unbounded "
                "support, which cannot be enumerated; marginalise it out by hand, or observe it"
            )
        if enumerate_as != "parallel":
            raise ValueError(
                f"from_numpyro: latent site '{name}' is discrete ({kind}) and not enumerated; "
                "inferax samples continuous latents and sums out enumerated discrete ones. "
                f"Enumerate it with infer={{'enumerate': 'parallel'}} on numpyro.sample("
                f"'{name}', ...), or numpyro.contrib.funsor.config_enumerate on the model "
                f"(this needs funsor: {ENUM_EXTRA}); or marginalise it out, or observe it"
            )


def _placeholder_value(site):
    """A value for a latent site that serves to read the model's structure without sampling:
    uniform in unconstrained space for a continuous site (improper priors, which have no
    sampler, included), the first category for a discrete one."""
    if site["type"] != "sample" or site["is_observed"]:
        return None
    if site["fn"].support.is_discrete:
        shape = site["kwargs"].get("sample_shape", ()) + site["fn"].shape()
        return jnp.zeros(shape, dtype=jnp.int32)
    return init_to_uniform(site)


def _enumerated_sites(trace) -> tuple[str, ...]:
    return tuple(
        name
        for name, site in trace.items()
        if site["type"] == "sample"
        and not site["is_observed"]
        and site["fn"].support.is_discrete
        and "enumerate" in (site.get("infer") or {})
    )


def _improper_sites(trace) -> tuple[str, ...]:
    def is_improper(distribution) -> bool:
        while True:
            if isinstance(distribution, ImproperUniform):
                return True
            if not hasattr(distribution, "base_dist"):
                return False
            distribution = distribution.base_dist

    return tuple(
        name
        for name, site in trace.items()
        if site["type"] == "sample" and not site["is_observed"] and is_improper(site["fn"])
    )


def _observed_sites(trace) -> tuple[str, ...]:
    return tuple(
        name
        for name, site in trace.items()
        if site["type"] == "sample" and site["is_observed"] and not isinstance(site["fn"], Unit)
    )


def _plate_dims(trace) -> dict[str, list[str]]:
    """Dim names by site, as ``arviz_base.from_numpyro`` names them: the enclosing plates'
    names, outermost first, then any ``infer={"event_dims": [...]}``."""
    dims = {}
    for name, site in trace.items():
        if site["type"] not in ("sample", "deterministic"):
            continue
        frames = sorted(site.get("cond_indep_stack") or (), key=lambda frame: frame.dim)
        names = [frame.name for frame in frames]
        names += list((site.get("infer") or {}).get("event_dims", []))
        if names:
            dims[name] = names
    return dims


def _max_plate_nesting(trace) -> int:
    dims = [
        -frame.dim
        for site in trace.values()
        for frame in site.get("cond_indep_stack") or ()
        if frame.dim is not None
    ]
    return max(dims, default=0)


def _constant_data(model: Callable, args: tuple, kwargs: dict, trace) -> dict[str, np.ndarray]:
    """The model's array arguments, by name, except the observed values themselves."""
    try:
        bound = inspect.signature(model).bind(*args, **kwargs)
    except TypeError:
        return {}
    observed_ids = {
        id(site["value"])
        for site in trace.values()
        if site["type"] == "sample" and site["is_observed"]
    }
    constant = {}
    for name, value in bound.arguments.items():
        if isinstance(value, jax.Array | np.ndarray) and id(value) not in observed_ids:
            if np.ndim(value) > 0:
                constant[name] = np.asarray(value)
    return constant


def _refuse_latents_per_data_point(trace, data_tree: dict) -> None:
    """A latent site inside a plate as long as the data has one value per data point: a
    minibatch would see only some of them, so the split cannot hold."""
    num_data = next(iter(data_tree.values())).shape[0]
    for name, site in trace.items():
        if site["type"] != "sample" or site["is_observed"]:
            continue
        for frame in site.get("cond_indep_stack") or ():
            if frame.size == num_data:
                raise ValueError(
                    f"data: latent site '{name}' has one value per data point (it lies in "
                    f"plate '{frame.name}' of size {num_data}, the length of the data), and "
                    "a minibatch would see only some of its values, so such a site cannot be "
                    "minibatched. Sample the whole model (drop data=), or name as data only "
                    "arguments whose points share every latent site"
                )


def _check_leading_axis(data_tree: dict) -> None:
    """Every data argument needs a leading axis of data points, the same length for all."""
    lengths = {}
    for name, value in data_tree.items():
        if value.ndim == 0:
            raise ValueError(
                f"data: argument '{name}' is a scalar, with no leading axis of data points; "
                "name only arguments whose first axis indexes the data points, and pass "
                "the others as ordinary arguments"
            )
        lengths[name] = value.shape[0]
    if len(set(lengths.values())) > 1:
        raise ValueError(
            "data: the named arguments must share one leading axis of data points, got "
            + ", ".join(f"'{name}' with {length}" for name, length in lengths.items())
            + "; an argument whose first axis does not index the data points (such as "
            "per-feature settings) must not be named in data"
        )


def _check_runs_on_a_batch(log_likelihood, init, data_tree: dict) -> None:
    """The model must run with two data points in place of the data: a model that reads a
    data argument along another axis than the first fails here, not inside a sampler."""
    two_points = jax.tree.map(lambda leaf: leaf[:2], data_tree)
    try:
        out = jax.eval_shape(log_likelihood, init, two_points)
    except Exception as error:  # noqa: BLE001  (any failure of the user's model)
        raise ValueError(
            f"data: the model does not run on a batch of the data arguments "
            f"{list(data_tree)} (their first two points along the leading axis): {error}. "
            "Each named argument's leading axis must index the data points, and the model "
            "must take its sizes from the data (for example numpyro.plate('data', "
            "len(y))), not from another argument"
        ) from error
    if out.shape != ():
        raise ValueError(
            f"data: the likelihood of a batch of {list(data_tree)} has shape {out.shape}, "
            "expected a scalar"
        )


def _observed_log_prob(trace) -> jax.Array:
    total = jnp.zeros(())
    for site in trace.values():
        if site["type"] != "sample" or not site["is_observed"]:
            continue
        log_prob = site["fn"].log_prob(site["value"])
        if site["scale"] is not None:
            log_prob = site["scale"] * log_prob
        total = total + jnp.sum(log_prob)
    return total


class _DataBinder:
    """Rebuilds the model's ``(args, kwargs)`` with a batch in place of the data arguments."""

    def __init__(self, model: Callable, args: tuple, kwargs: dict, names: tuple[str, ...]):
        try:
            bound = inspect.signature(model).bind(*args, **kwargs)
        except TypeError as error:
            raise ValueError(
                f"from_numpyro: the model's arguments do not bind: {error}"
            ) from error
        unknown = [name for name in names if name not in bound.arguments]
        if unknown:
            raise ValueError(
                f"data: {unknown} are not arguments passed to the model; "
                f"it was called with {list(bound.arguments)}"
            )
        if not names:
            raise ValueError("data: name at least one model argument, or pass data=None")
        self.names = names
        self.values = dict(bound.arguments)
        self._signature = inspect.signature(model)

    def __call__(self, batch: dict) -> tuple[tuple, dict]:
        values = dict(self.values)
        values.update(batch)
        bound = self._signature.bind_partial()
        bound.arguments.update(values)
        return bound.args, bound.kwargs
