"""A Bayes-by-backprop network's weight posterior as an ArviZ 1.x :class:`xarray.DataTree`.

A network has up to millions of weights, and 1000 draws of each would take gigabytes while no
ArviZ summary or plot can show them. :func:`bnn_to_datatree` therefore exports a thinned
posterior: the draws of at most ``max_per_dim`` evenly spaced indices along each axis of every
weight and bias (coordinates keep the original indices), and a ``layer_summary`` group that
describes every layer from all its guide parameters. Everything that needs the whole draw is
computed before thinning: ``sample_stats`` ``lp`` (``log p(y, w)``) and ``lq`` (``log q(w)``)
and, given data, the pointwise ``log_likelihood``, ``posterior_predictive`` and
``observed_data``, so that :func:`pyroext.diagnostics.vi_khat` and
:func:`pyroext.diagnostics.vi_loo` (and ``pyroext diagnose``) work on the tree.
"""

__all__ = ["LAYER_STATISTICS", "bnn_to_datatree"]

import math
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import pyro
import torch
import xarray as xr
from arviz_base import dict_to_dataset
from pyro import poutine
from torch import Tensor

from pyroext.arviz.groups import SAMPLE_DIMS
from pyroext.checks import check_counts
from pyroext.models.bnn.guide import AutoBayesByBackprop
from pyroext.models.bnn.model import BayesianMLP

LAYER_STATISTICS = (
    "num_weights",
    "num_exported",
    "loc_mean",
    "loc_sd",
    "scale_mean",
    "snr_median",
    "snr_below_1",
)
"""Variables of the ``layer_summary`` group, one value per weight or bias site: its size, how
many of its entries the posterior group holds, the mean and sd of its guide means ``mu``, the
mean guide sd ``sigma``, the median signal-to-noise ratio ``|mu| / sigma`` (the lower middle
value for an even count, as ``torch.median``) and the fraction of entries with a ratio below 1
(Blundell et al. prune weights by this ratio)."""

_DRAWS = "_bnn_export_draws"


class _Chunk(NamedTuple):
    weights: dict[str, Tensor]
    lp: Tensor
    lq: Tensor
    log_likelihood: Tensor | None
    predictive: Tensor | None


@torch.no_grad()
def bnn_to_datatree(
    model: BayesianMLP,
    guide: AutoBayesByBackprop,
    x: Tensor | None = None,
    y: Tensor | None = None,
    *,
    num_samples: int = 200,
    max_per_dim: int = 4,
    chunk_size: int = 50,
) -> xr.DataTree:
    """Exports ``num_samples`` guide draws of the network's weights, thinned.

    Groups: ``posterior`` (thinned draws, dims ``<site>_dim_<i>`` whose coordinates are the
    original indices; attrs ``thinned`` and, for a learned Gaussian noise, its point estimate
    ``noise_scale``), ``sample_stats`` (``lp``, ``lq``), ``layer_summary`` (see
    :data:`LAYER_STATISTICS`, dim ``layer``) and, when ``x`` and ``y`` are given, the
    training data's ``log_likelihood``, ``posterior_predictive`` and ``observed_data`` (dim
    ``data``). Without data, ``lp`` is the log prior.

    Arguments:
        model: The Bayesian network.
        guide: Its trained guide.
        x: Training inputs, shape ``(N, D)``, or None.
        y: Training targets, shape ``(N,)``, or None.
        num_samples: Number of guide draws, >= 1.
        max_per_dim: Most indices kept along each axis of a weight or bias, >= 1.
        chunk_size: Draws evaluated at once, >= 1 (bounds the memory of the network's
            activations, ``chunk_size * N * width``).

    Returns:
        The tree, draws laid out ``(chain=1, draw=num_samples)``.

    Raises:
        ValueError: If a count is < 1, only one of ``x`` and ``y`` is given, or they do not fit
            the network.
        RuntimeError: If the guide has not been called yet.
    """
    check_counts(num_samples=num_samples, max_per_dim=max_per_dim, chunk_size=chunk_size)
    if (x is None) != (y is None):
        raise ValueError("give both x and y (the training data) or neither")
    if x is not None:
        model.check_batch(x, y, None)
    moments = guide.locs_and_scales()
    kept = {name: _thinned_indices(loc.shape, max_per_dim) for name, (loc, _) in moments.items()}
    chunks = [
        _draw_chunk(model, guide, x, y, size, kept)
        for size in _chunk_sizes(num_samples, chunk_size)
    ]
    groups = {
        "posterior": _posterior(
            chunks, kept, model, sum(loc.numel() for loc, _ in moments.values())
        ),
        "sample_stats": _dataset(
            {"lp": _cat(chunks, "lp"), "lq": _cat(chunks, "lq")}, {"lp": [], "lq": []}
        ),
        "layer_summary": _layer_summary(moments, kept),
    }
    if y is not None:
        per_point = {"obs": ["data"]}
        groups["log_likelihood"] = _dataset({"obs": _cat(chunks, "log_likelihood")}, per_point)
        groups["posterior_predictive"] = _dataset({"obs": _cat(chunks, "predictive")}, per_point)
        groups["observed_data"] = _dataset({"obs": y}, per_point, sample_dims=[])
    return xr.DataTree.from_dict(groups)


def _draw_chunk(
    model: BayesianMLP,
    guide: AutoBayesByBackprop,
    x: Tensor | None,
    y: Tensor | None,
    size: int,
    kept: dict[str, tuple[Tensor, ...]],
) -> _Chunk:
    """Draws ``size`` networks; scores and thins them."""
    with pyro.plate(_DRAWS, size, dim=-2):
        guide_trace = poutine.trace(guide).get_trace()
        weights = {name: guide_trace.nodes[name]["value"] for name in kept}
        conditioned = poutine.condition(model, data=weights)
        inputs = x if x is not None else _dummy_input(model, next(iter(weights.values())))
        model_trace = poutine.trace(conditioned).get_trace(inputs, y)
    lq = sum(_site_log_prob(guide_trace.nodes[name]) for name in kept)
    lp = sum(_site_log_prob(model_trace.nodes[name]) for name in kept)
    thinned = {name: _thin(weights[name].flatten(0, 1), kept[name]) for name in kept}
    if y is None:
        return _Chunk(thinned, lp, lq, None, None)
    obs = model_trace.nodes["obs"]
    pointwise = obs["fn"].log_prob(obs["value"])
    return _Chunk(thinned, lp + pointwise.sum(-1), lq, pointwise, obs["fn"].sample())


def _dummy_input(model: BayesianMLP, like: Tensor) -> Tensor:
    """One row of zeros: without data only the weights' scores are wanted, but the model still
    runs its network."""
    return like.new_zeros(1, model.in_features)


def _site_log_prob(site: dict) -> Tensor:
    return site["fn"].log_prob(site["value"]).reshape(-1)


def _chunk_sizes(total: int, chunk_size: int) -> Iterator[int]:
    for start in range(0, total, chunk_size):
        yield min(chunk_size, total - start)


def _thinned_indices(shape: torch.Size, max_per_dim: int) -> tuple[Tensor, ...]:
    """At most ``max_per_dim`` evenly spaced indices along each axis, first and last included."""
    return tuple(
        torch.linspace(0, size - 1, min(size, max_per_dim)).round().long().unique()
        for size in shape
    )


def _num_kept(indices: tuple[Tensor, ...]) -> int:
    return math.prod(len(index) for index in indices)


def _thin(value: Tensor, indices: tuple[Tensor, ...]) -> Tensor:
    """``value[:, i0][:, :, i1]...``: the kept entries of each draw."""
    for axis, index in enumerate(indices, start=1):
        value = value.index_select(axis, index.to(value.device))
    return value


def _cat(chunks: list[_Chunk], field: str) -> Tensor:
    return torch.cat([getattr(chunk, field) for chunk in chunks])[None]


def _posterior(
    chunks: list[_Chunk], kept: dict[str, tuple[Tensor, ...]], model: BayesianMLP, total: int
) -> xr.Dataset:
    draws = {name: torch.cat([chunk.weights[name] for chunk in chunks])[None] for name in kept}
    dims = {name: [f"{name}_dim_{axis}" for axis in range(len(kept[name]))] for name in kept}
    coords = {
        dim: index.numpy()
        for name in kept
        for dim, index in zip(dims[name], kept[name], strict=True)
    }
    exported = sum(_num_kept(kept[name]) for name in kept)
    attrs = {
        "sampled_variables": list(kept),
        "thinned": (
            f"{exported} of {total} weights and biases: evenly spaced indices along "
            "each axis; coordinates are the original indices, layer_summary covers them all"
        ),
    }
    if isinstance(model.noise_scale, Tensor):
        attrs["noise_scale"] = float(model.noise_scale)
    return _dataset(draws, dims, coords=coords, attrs=attrs)


def _layer_summary(
    moments: dict[str, tuple[Tensor, Tensor]], kept: dict[str, tuple[Tensor, ...]]
) -> xr.Dataset:
    columns: dict[str, list[float]] = {name: [] for name in LAYER_STATISTICS}
    for name, (loc, scale) in moments.items():
        loc, scale = loc.detach().double().flatten(), scale.detach().double().flatten()
        snr = loc.abs() / scale
        values = {
            "num_weights": loc.numel(),
            "num_exported": _num_kept(kept[name]),
            "loc_mean": loc.mean().item(),
            "loc_sd": loc.std(correction=0).item(),
            "scale_mean": scale.mean().item(),
            "snr_median": snr.median().item(),
            "snr_below_1": (snr < 1).double().mean().item(),
        }
        for statistic, value in values.items():
            columns[statistic].append(value)
    data = {name: np.asarray(values) for name, values in columns.items()}
    dims = {name: ["layer"] for name in data}
    return _dataset(data, dims, coords={"layer": list(moments)}, sample_dims=[])


def _dataset(
    data: dict[str, Tensor | np.ndarray],
    dims: dict[str, list[str]],
    *,
    coords: dict[str, object] | None = None,
    attrs: dict[str, object] | None = None,
    sample_dims: list[str] | None = None,
) -> xr.Dataset:
    arrays = {
        name: value.detach().cpu().numpy() if isinstance(value, Tensor) else value
        for name, value in data.items()
    }
    return dict_to_dataset(
        arrays,
        attrs=attrs,
        inference_library=pyro,
        coords=coords,
        dims=dims,
        sample_dims=list(SAMPLE_DIMS) if sample_dims is None else sample_dims,
    )
