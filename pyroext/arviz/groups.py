"""One builder per ArviZ group: per-draw tensors in, :class:`xarray.Dataset` out.

Groups of draws are laid out ``(chain, draw, *dims)`` as the ArviZ 1.x schema asks; variational
draws use ``chain=1`` because ``arviz_stats.loo`` needs both dims. Data groups have no sample
dims. Builders of groups of draws take a :class:`Layout`, per-draw tensors by site name and the
names to export. Tensors are detached and moved to the host, so CUDA tensors and tensors that
require grad convert alike.
"""

__all__ = [
    "GROUP_ORDER",
    "SAMPLE_DIMS",
    "Layout",
    "constant_data",
    "log_likelihood",
    "observed_data",
    "posterior",
    "posterior_predictive",
    "predictions",
    "predictions_constant_data",
    "prior",
    "prior_predictive",
    "sample_stats",
    "unconstrained_posterior",
]

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import pyro
import torch
import xarray as xr
from arviz_base import dict_to_dataset
from torch import Tensor

from pyroext.arviz.sites import Site

SAMPLE_DIMS = ("chain", "draw")

GROUP_ORDER = (
    "posterior",
    "unconstrained_posterior",
    "posterior_predictive",
    "log_likelihood",
    "sample_stats",
    "prior",
    "prior_predictive",
    "observed_data",
    "constant_data",
    "predictions",
    "predictions_constant_data",
)

# Names other samplers and converters use for the schema's sample_stats variables.
STAT_ALIASES = {
    "accept_prob": "acceptance_rate",
    "adapt_state.step_size": "step_size",
    "num_steps": "n_steps",
    "reached_max_tree_depth": "reached_max_treedepth",
}

_Variables = dict[str, tuple[np.ndarray, list[str | None]]]


class Layout(NamedTuple):
    """How per-draw tensors become ArviZ variables.

    Fields:
        sites: The model's sites, whose ``axes`` and ``dims`` say what is exported.
        sample_shape: ``(chain, draw)``; per-draw tensors hold ``chain * draw`` draws.
        coords: User coordinates by dimension name.
        strict: Whether a coordinate whose length differs from its dimension is an error
            (else it is left out, as for predictions at new inputs that it does not label).
    """

    sites: Mapping[str, Site]
    sample_shape: tuple[int, int]
    coords: Mapping[str, Any]
    strict: bool = True


def posterior(layout: Layout, values: Mapping[str, Tensor], names: Sequence[str]) -> xr.Dataset:
    """The ``posterior`` group: latent and deterministic sites at the posterior draws."""
    sampled = [name for name in names if layout.sites[name].kind == "latent"]
    return _draws(layout, values, names, {"sampled_variables": sampled})


def posterior_predictive(
    layout: Layout, values: Mapping[str, Tensor], names: Sequence[str]
) -> xr.Dataset:
    """The ``posterior_predictive`` group: observed sites redrawn at the posterior draws."""
    return _draws(layout, values, names)


def prior(layout: Layout, values: Mapping[str, Tensor], names: Sequence[str]) -> xr.Dataset:
    """The ``prior`` group: latent and deterministic sites drawn from the model."""
    sampled = [name for name in names if layout.sites[name].kind == "latent"]
    return _draws(layout, values, names, {"sampled_variables": sampled})


def prior_predictive(
    layout: Layout, values: Mapping[str, Tensor], names: Sequence[str]
) -> xr.Dataset:
    """The ``prior_predictive`` group: observed sites drawn from the model."""
    return _draws(layout, values, names)


def predictions(layout: Layout, values: Mapping[str, Tensor], names: Sequence[str]) -> xr.Dataset:
    """The ``predictions`` group: observed and deterministic sites at new model inputs."""
    return _draws(layout, values, names)


def log_likelihood(layout: Layout, values: Mapping[str, Tensor]) -> xr.Dataset:
    """The ``log_likelihood`` group: pointwise ``log p(y_i | theta)`` of each observed site.

    Arguments:
        layout: The export layout.
        values: Per observed site, the log density of each observation (the site's batch
            shape) at each draw.

    Returns:
        The group, with the batch dims of each site.
    """
    variables = {}
    for name, value in values.items():
        site = layout.sites[name]
        axes = [i for i, axis in enumerate(site.axes) if axis < site.batch_ndim]
        shape = tuple(site.shape[site.axes[i]] for i in axes)
        variables[name] = (_numpy(value, (*layout.sample_shape, *shape)), _pick(site.dims, axes))
    return _dataset(variables, layout.coords, layout.strict, SAMPLE_DIMS)


def unconstrained_posterior(layout: Layout, values: Mapping[str, Tensor]) -> xr.Dataset:
    """The ``unconstrained_posterior`` group: constrained latents in the unconstrained space.

    Arguments:
        layout: The export layout.
        values: Per constrained latent site, ``biject_to(support).inv(value)`` at each draw,
            of shape ``(draws, *batch_shape, *unconstrained_event_shape)``.

    Returns:
        The group. Batch dims are those of the posterior; event dims too unless the
        transform changes the event shape (e.g. a simplex), when ArviZ names them.
    """
    variables = {}
    for name, value in values.items():
        site = layout.sites[name]
        batch = [i for i, axis in enumerate(site.axes) if axis < site.batch_ndim]
        event_shape = tuple(value.shape[1 + site.batch_ndim :])
        same_event = event_shape == site.shape[site.batch_ndim :]
        event_dims = site.dims[len(batch) :] if same_event else (None,) * len(event_shape)
        shape = tuple(site.shape[site.axes[i]] for i in batch) + event_shape
        dims = _pick(site.dims, batch) + list(event_dims)
        variables[name] = (_numpy(value, (*layout.sample_shape, *shape)), dims)
    return _dataset(variables, layout.coords, layout.strict, SAMPLE_DIMS)


def observed_data(layout: Layout, names: Sequence[str]) -> xr.Dataset:
    """The ``observed_data`` group: the values of the observed sites."""
    variables = {}
    for name in names:
        site = layout.sites[name]
        variables[name] = (_numpy(site.value, _exported_shape(site)), list(site.dims))
    return _dataset(variables, layout.coords, layout.strict, ())


def constant_data(
    data: Mapping[str, Any], dims: Mapping[str, Sequence[str]], coords: Mapping[str, Any]
) -> xr.Dataset:
    """The ``constant_data`` group: user data that is not modelled.

    Arguments:
        data: Arrays or tensors by name.
        dims: Dimension names by variable; variables not in it get ArviZ's default names.
        coords: Coordinates by dimension name.

    Returns:
        The group.
    """
    return _data(data, dims, coords, strict=True)


def predictions_constant_data(
    data: Mapping[str, Any], dims: Mapping[str, Sequence[str]], coords: Mapping[str, Any]
) -> xr.Dataset:
    """The ``predictions_constant_data`` group: the inputs predictions were made at.

    Arguments:
        data: Arrays or tensors by name.
        dims: Dimension names by variable (the ``pred_dims``).
        coords: Coordinates by dimension name; those that do not fit are left out.

    Returns:
        The group.
    """
    return _data(data, dims, coords, strict=False)


def sample_stats(
    stats: Mapping[str, Any],
    sample_shape: tuple[int, int],
    dims: Mapping[str, Sequence[str]] | None = None,
) -> xr.Dataset:
    """The ``sample_stats`` group, with the schema's variable names.

    Arguments:
        stats: Per-draw statistics, each of shape ``(chain, draw, ...)``. Names other tools
            use are renamed (``accept_prob`` to ``acceptance_rate``, ``num_steps`` to
            ``n_steps``, ``reached_max_tree_depth`` to ``reached_max_treedepth``, ...), and
            ``potential_energy`` becomes ``lp`` with its sign flipped.
        sample_shape: ``(chain, draw)`` of the posterior.
        dims: Names of the axes after ``(chain, draw)``, by statistic.

    Returns:
        The group.

    Raises:
        ValueError: If a statistic does not start with the ``(chain, draw)`` shape.
    """
    variables = {}
    for name, value in stats.items():
        array = _numpy(value)
        if array.shape[:2] != tuple(sample_shape):
            raise ValueError(
                f"sample_stats[{name!r}] has shape {array.shape}; expected (chain, draw) = "
                f"{tuple(sample_shape)} leading axes"
            )
        if name == "potential_energy":
            name, array = "lp", -array
        variables[STAT_ALIASES.get(name, name)] = (array, list((dims or {}).get(name, ())))
    return _dataset(variables, {}, True, SAMPLE_DIMS)


def _draws(
    layout: Layout,
    values: Mapping[str, Tensor],
    names: Sequence[str],
    attrs: Mapping[str, Any] | None = None,
) -> xr.Dataset:
    variables = {}
    for name in names:
        site = layout.sites[name]
        shape = (*layout.sample_shape, *_exported_shape(site))
        variables[name] = (_numpy(values[name], shape), list(site.dims))
    return _dataset(variables, layout.coords, layout.strict, SAMPLE_DIMS, attrs)


def _data(
    data: Mapping[str, Any],
    dims: Mapping[str, Sequence[str]],
    coords: Mapping[str, Any],
    strict: bool,
) -> xr.Dataset:
    variables = {name: (_numpy(value), list(dims.get(name, ()))) for name, value in data.items()}
    return _dataset(variables, coords, strict, ())


def _exported_shape(site: Site) -> tuple[int, ...]:
    return tuple(site.shape[axis] for axis in site.axes)


def _pick(dims: Sequence[str | None], indices: Sequence[int]) -> list[str | None]:
    return [dims[i] for i in indices]


def _numpy(value: Any, shape: tuple[int, ...] | None = None) -> np.ndarray:
    if isinstance(value, Tensor):
        value = value.detach().cpu()
        value = value.float() if value.dtype in (torch.bfloat16, torch.float16) else value
        value = value.numpy()
    array = np.asarray(value)
    return array if shape is None else array.reshape(shape)


def _dataset(
    variables: _Variables,
    coords: Mapping[str, Any],
    strict: bool,
    sample_dims: Sequence[str],
    attrs: Mapping[str, Any] | None = None,
) -> xr.Dataset:
    """Names every axis, checks names and coordinates, and builds the Dataset."""
    data, dims, sizes = {}, {}, {}
    for name, (array, names) in variables.items():
        free = array.ndim - len(sample_dims)
        if len(names) > free:
            raise ValueError(f"dims[{name!r}] has {len(names)} names for {free} axes")
        names = list(names) + [None] * (free - len(names))
        unnamed = iter(range(array.ndim))
        names = [dim if dim is not None else f"{name}_dim_{next(unnamed)}" for dim in names]
        sizes.update(zip([*sample_dims, *names], array.shape, strict=True))
        data[name], dims[name] = array, names
    clashes = sorted(set(sizes) & set(data))
    if clashes:
        raise ValueError(f"dims: dimensions {clashes} share their names with variables")
    return dict_to_dataset(
        data,
        attrs=attrs,
        inference_library=pyro,
        coords=_fitting_coords(coords, sizes, strict),
        dims=dims,
        sample_dims=list(sample_dims),
        check_conventions=True,
    )


def _fitting_coords(
    coords: Mapping[str, Any], sizes: Mapping[str, int], strict: bool
) -> dict[str, np.ndarray]:
    fitting = {}
    for dim, size in sizes.items():
        if dim not in coords:
            continue
        values = _numpy(coords[dim])
        if len(values) == size:
            fitting[dim] = values
        elif strict:
            raise ValueError(
                f"coords[{dim!r}] has {len(values)} values but dimension {dim!r} has size {size}"
            )
    return fitting
