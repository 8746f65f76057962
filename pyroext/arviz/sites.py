"""Reading the sites of a Pyro model: their kinds, shapes and axis names.

A sample site is *latent* (sampled), *observed* (``obs=`` given), *deterministic*
(:func:`pyro.deterministic`, which Pyro records as an observed, masked ``Delta`` site flagged
by ``infer["_deterministic"]``) or a *factor* (:func:`pyro.factor`, also recorded as observed).
Only true observations belong in ``observed_data`` and ``log_likelihood``.

The names of a site's axes come from the vectorised :class:`pyro.plate` frames it sits in
(batch axes) and from ``infer={"event_dims": [...]}`` on its sample statement (event axes).
Batch axes of size 1 that no plate names are broadcasting padding and are not exported.
"""

__all__ = [
    "PACKAGE_DIR",
    "ModelInfo",
    "Site",
    "inspect_model",
    "plate_nesting",
    "trace_blocked",
    "with_dims",
]

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import torch
from pyro import poutine
from pyro.poutine.trace_struct import Trace
from pyro.poutine.util import site_is_factor, site_is_subsample
from torch import Tensor

# Warnings point at the caller's line, outside this package.
PACKAGE_DIR = os.path.dirname(__file__)


class Site(NamedTuple):
    """One sample site of a model, as seen in a single run.

    Fields:
        name: Site name.
        kind: ``"latent"``, ``"observed"``, ``"deterministic"`` or ``"factor"``.
        shape: Shape of the site's value in one run.
        batch_ndim: Number of leading axes of ``shape`` that are batch axes.
        axes: The axes of ``shape`` that are exported.
        dims: Names of the exported axes; ``None`` lets ArviZ name the axis.
        value: The observed value of an observed site, else ``None``.
    """

    name: str
    kind: str
    shape: tuple[int, ...]
    batch_ndim: int
    axes: tuple[int, ...]
    dims: tuple[str | None, ...]
    value: Tensor | None = None


class ModelInfo(NamedTuple):
    """The sites of a model and how deeply its plates nest.

    Fields:
        sites: Every latent, observed, deterministic and factor site, in trace order.
        max_plate_nesting: Number of batch dimensions the model's plates use.
    """

    sites: dict[str, Site]
    max_plate_nesting: int

    def names(self, *kinds: str) -> list[str]:
        """Names of the sites of the given kinds, in trace order."""
        return [name for name, site in self.sites.items() if site.kind in kinds]


def inspect_model(
    model: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]
) -> ModelInfo:
    """Runs the model once and describes its sites.

    Arguments:
        model: A Pyro model.
        args: Positional arguments of the model.
        kwargs: Keyword arguments of the model.

    Returns:
        The model's :class:`ModelInfo`.

    Raises:
        ValueError: If a site's ``infer["event_dims"]`` does not name each event axis, or a
            plate subsamples its data (each replay would see other data).
    """
    trace = trace_blocked(model, args, kwargs)
    sites = {}
    for name, node in trace.nodes.items():
        if node["type"] != "sample":
            continue
        if not site_is_subsample(node):
            sites[name] = _describe(node)
        elif len(node["value"]) < node["fn"].size:
            raise ValueError(
                f"plate {name!r} subsamples {len(node['value'])} of {node['fn'].size} points; "
                "export with arguments under which the model uses all of its data"
            )
    return ModelInfo(sites, plate_nesting(trace))


def with_dims(site: Site, names: Sequence[str], argument: str) -> Site:
    """Replaces the inferred axis names of a site with user-given ones.

    Arguments:
        site: The site.
        names: One name per exported axis, or one per axis of the site's value (then no
            axis is dropped); a string is one name.
        argument: The argument ``names`` came from, for error messages.

    Returns:
        The site with the new names.

    Raises:
        ValueError: If the number of names fits neither choice.
    """
    names = (names,) if isinstance(names, str) else tuple(names)
    if len(names) == len(site.axes):
        return site._replace(dims=names)
    if len(names) == len(site.shape):
        return site._replace(axes=tuple(range(len(names))), dims=names)
    raise ValueError(
        f"{argument}[{site.name!r}] has {len(names)} names but the site has "
        f"{len(site.axes)} exported axes (value shape {site.shape})"
    )


def trace_blocked(
    program: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]
) -> Trace:
    """Traces one run of a model or guide, out of sight of the handlers around the caller.

    Arguments:
        program: The model or guide.
        args: Its positional arguments.
        kwargs: Its keyword arguments.

    Returns:
        The trace, recorded without gradients.
    """
    with torch.no_grad(), poutine.block():
        return poutine.trace(program).get_trace(*args, **kwargs)


def plate_nesting(trace: Trace) -> int:
    """The number of batch dimensions the vectorised plates of a trace use."""
    stacks = [
        node["cond_indep_stack"] for node in trace.nodes.values() if node["type"] == "sample"
    ]
    return max((-frame.dim for stack in stacks for frame in stack if frame.vectorized), default=0)


def _kind(node: Mapping[str, Any]) -> str:
    if node["infer"].get("_deterministic"):
        return "deterministic"
    if site_is_factor(node):
        return "factor"
    return "observed" if node["is_observed"] else "latent"


def _describe(node: Mapping[str, Any]) -> Site:
    kind, value = _kind(node), torch.as_tensor(node["value"])
    plates = {frame.dim: frame.name for frame in node["cond_indep_stack"] if frame.vectorized}
    if kind == "deterministic":
        # pyro.deterministic defaults to event_dim=value.ndim, which says nothing about plates:
        # then the trailing axes the plates cover are taken as batch axes.
        event_ndim = node["fn"].event_dim
        depth = max((-dim for dim in plates), default=0)
        batch_ndim = value.ndim - event_ndim if event_ndim < value.ndim else min(value.ndim, depth)
    else:
        batch_ndim = max(value.ndim - len(node["fn"].event_shape), 0)
    event_dims = tuple(node["infer"].get("event_dims", (None,) * (value.ndim - batch_ndim)))
    if len(event_dims) != value.ndim - batch_ndim:
        raise ValueError(
            f"site {node['name']!r}: infer['event_dims'] has {len(event_dims)} names but the "
            f"site has {value.ndim - batch_ndim} event dimensions"
        )
    names = tuple(plates.get(i - batch_ndim) for i in range(batch_ndim)) + event_dims
    axes = tuple(
        i for i in range(value.ndim) if i >= batch_ndim or names[i] or value.shape[i] != 1
    )
    return Site(
        name=node["name"],
        kind=kind,
        shape=tuple(value.shape),
        batch_ndim=batch_ndim,
        axes=axes,
        dims=tuple(names[i] for i in axes),
        value=value if kind == "observed" else None,
    )
