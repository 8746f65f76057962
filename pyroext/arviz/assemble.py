"""The part of an export that the two converters share: checking their options, and the groups
they build from a fit (posterior, log likelihood, predictive, prior, data and predictions).
"""

__all__ = [
    "Dims",
    "Fit",
    "Options",
    "check_count",
    "read_options",
    "shared_groups",
    "with_user_dims",
]

import inspect
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
import xarray as xr
from torch import Tensor

from pyroext.arviz import groups as g
from pyroext.arviz.replay import Replay, replay_model
from pyroext.arviz.sites import ModelInfo, inspect_model, with_dims

Dims = Mapping[str, Sequence[str]]


class Options(NamedTuple):
    """The converters' options, checked and with their defaults filled in.

    Fields:
        prior: Number of prior draws, or ``None`` for no prior groups.
        posterior_predictive: Redraw the observed sites at each draw.
        predictions: New values of model arguments by parameter name, or ``None``.
        constant_data: Data for ``constant_data``, or ``None``.
        predictions_constant_data: Data for ``predictions_constant_data``, or ``None`` for the
            array arguments in ``predictions``.
        coords: Coordinate values by dimension name.
        dims: Dimension names by variable.
        pred_dims: Dimension names by variable, for the prediction groups.
        log_likelihood: Add the pointwise ``log_likelihood`` group.
        unconstrained: Also map the latents to the unconstrained space.
    """

    prior: int | None
    posterior_predictive: bool
    predictions: Mapping[str, Any] | None
    constant_data: Mapping[str, Any] | None
    predictions_constant_data: Mapping[str, Any] | None
    coords: Mapping[str, Any]
    dims: Dims
    pred_dims: Dims
    log_likelihood: bool
    unconstrained: bool = False


class Fit(NamedTuple):
    """A fitted model and its posterior draws.

    Fields:
        model: The Pyro model.
        args: Positional arguments of the model, as used for the fit.
        kwargs: Keyword arguments of the model.
        info: The model's sites, with the user's dims.
        draws: Per latent site, the draws flattened to ``(chain * draw, *site.shape)``.
        sample_shape: ``(chain, draw)``.
    """

    model: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    info: ModelInfo
    draws: dict[str, Tensor]
    sample_shape: tuple[int, int]


def read_options(arguments: Mapping[str, Any]) -> Options:
    """Checks the converters' common arguments and fills in their defaults.

    Arguments:
        arguments: A converter's arguments by name (its ``locals()``); those that are not
            options are ignored, and options it does not take keep their defaults.

    Returns:
        The :class:`Options`.

    Raises:
        ValueError: If ``prior`` is not a count or a data argument is not a dict.
    """
    options = {name: arguments[name] for name in Options._fields if name in arguments}
    prior = options.pop("prior")
    if prior is not False and prior is not None:
        check_count(prior, "prior")
    for argument in ["predictions", "constant_data", "predictions_constant_data", "coords"]:
        value = options[argument]
        if value is not None and not isinstance(value, Mapping):
            raise ValueError(f"{argument} must be a dict by name, not {type(value).__name__}")
    for argument in ["coords", "dims", "pred_dims"]:
        options[argument] = options[argument] or {}
    return Options(prior=prior or None, **options)


def check_count(value: Any, argument: str) -> None:
    """Raises ValueError unless ``value`` is an integer >= 1 (a bool is not)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{argument}={value!r} must be an integer >= 1")


def with_user_dims(
    info: ModelInfo, dims: Dims, data: Mapping[str, Any] | None, argument: str = "dims"
) -> ModelInfo:
    """The model's sites with the axis names the user gave.

    Arguments:
        info: The model's sites.
        dims: Dimension names by site or data variable.
        data: The data variables ``dims`` may also name.
        argument: The argument ``dims`` came from, for error messages.

    Returns:
        ``info`` with the sites that ``dims`` names renamed.

    Raises:
        ValueError: If ``dims`` names neither a site nor a data variable, or a site's names
            do not fit its axes.
    """
    unknown = sorted(set(dims) - set(info.sites) - set(data or {}))
    if unknown:
        raise ValueError(f"{argument}: {unknown} name no site of the model and no data variable")
    sites = {
        name: with_dims(site, dims[name], argument) if name in dims else site
        for name, site in info.sites.items()
    }
    return info._replace(sites=sites)


def shared_groups(fit: Fit, options: Options) -> tuple[dict[str, xr.Dataset], Replay]:
    """The groups both converters build, and the scored replay at the posterior draws.

    Arguments:
        fit: The model and its posterior draws.
        options: The converter's options.

    Returns:
        The groups by name, and the replay that scored the draws (for ``sample_stats``).

    Raises:
        ValueError: If ``predictions`` names no parameter of the model, or changes the shape
            of a latent site (its draws could not be reused).
    """
    info, num = fit.info, math.prod(fit.sample_shape)
    layout = g.Layout(info.sites, fit.sample_shape, options.coords)
    replay = (fit.model, info, fit.draws, num, fit.args, fit.kwargs)
    scored = _scored(replay, options.unconstrained)
    latent = [name for name in info.names("latent") if name in fit.draws]
    observed = info.names("observed")
    groups = {
        "posterior": g.posterior(layout, scored.values, latent + info.names("deterministic"))
    }
    if options.log_likelihood and observed:
        groups["log_likelihood"] = g.log_likelihood(layout, scored.log_likelihood)
    if options.posterior_predictive and observed:
        predictive = replay_model(*replay, resample=True)
        groups["posterior_predictive"] = g.posterior_predictive(
            layout, predictive.values, observed
        )
    if options.prior:
        groups.update(_prior_groups(fit, options.prior, options.coords))
    if observed:
        groups["observed_data"] = g.observed_data(layout, observed)
    if options.constant_data:
        groups["constant_data"] = g.constant_data(
            options.constant_data, options.dims, options.coords
        )
    if options.predictions is not None:
        groups.update(_prediction_groups(fit, options))
    return groups, scored


def _scored(replay: tuple[Any, ...], unconstrained: bool) -> Replay:
    """The replay scoring the draws, run in float64 where the model allows: in float32 a
    log-likelihood smaller in size than about 1e-45 is exactly 0, and PSIS fails on the tied
    values. A model holding float32 networks runs at its own precision."""
    model, info, draws, num, args, kwargs = replay
    values = [*draws.values(), *args, *kwargs.values()]
    if not any(_is_low_precision(value) for value in values):
        return replay_model(*replay, resample=False, unconstrained=unconstrained)
    doubled = (
        model,
        info,
        {name: _to_float64(value) for name, value in draws.items()},
        num,
        tuple(_to_float64(value) for value in args),
        {name: _to_float64(value) for name, value in kwargs.items()},
    )
    try:
        return replay_model(*doubled, resample=False, unconstrained=unconstrained)
    except (RuntimeError, TypeError):  # float32 parameters meet float64 inputs
        return replay_model(*replay, resample=False, unconstrained=unconstrained)


def _is_low_precision(value: Any) -> bool:
    return isinstance(value, Tensor) and value.is_floating_point() and value.dtype != torch.float64


def _to_float64(value: Any) -> Any:
    return value.double() if _is_low_precision(value) else value


def _prior_groups(fit: Fit, num: int, coords: Mapping[str, Any]) -> dict[str, xr.Dataset]:
    info = fit.info
    replay = replay_model(fit.model, info, {}, num, fit.args, fit.kwargs, resample=True)
    layout = g.Layout(info.sites, (1, num), coords)
    groups = {"prior": g.prior(layout, replay.values, info.names("latent", "deterministic"))}
    if info.names("observed"):
        observed = info.names("observed")
        groups["prior_predictive"] = g.prior_predictive(layout, replay.values, observed)
    return groups


def _prediction_groups(fit: Fit, options: Options) -> dict[str, xr.Dataset]:
    new = options.predictions
    args, kwargs = _bind(fit.model, fit.args, fit.kwargs, new)
    data = options.predictions_constant_data
    if data is None:
        data = {
            name: value for name, value in new.items() if isinstance(value, Tensor | np.ndarray)
        }
    info = with_user_dims(
        inspect_model(fit.model, args, kwargs), options.pred_dims, data, "pred_dims"
    )
    for name in fit.draws:
        shape = info.sites[name].shape if name in info.sites else None
        if shape != fit.info.sites[name].shape:
            raise ValueError(
                f"predictions: latent site {name!r} has shape {shape} at the new inputs but "
                f"{fit.info.sites[name].shape} in the fit, so its draws cannot be reused"
            )
    num = math.prod(fit.sample_shape)
    replay = replay_model(fit.model, info, fit.draws, num, args, kwargs, resample=True)
    names = [name for name in fit.info.names("observed", "deterministic") if name in info.sites]
    layout = g.Layout(info.sites, fit.sample_shape, options.coords, strict=False)
    groups = {"predictions": g.predictions(layout, replay.values, names)}
    if data:
        groups["predictions_constant_data"] = g.predictions_constant_data(
            data, options.pred_dims, options.coords
        )
    return groups


def _bind(
    model: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    new: Mapping[str, Any],
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Model arguments with the values in ``new`` replacing those of the same parameters."""
    signature = inspect.signature(model)
    bound = signature.bind_partial(*args, **kwargs)
    extra = next((p.name for p in signature.parameters.values() if p.kind is p.VAR_KEYWORD), None)
    for name, value in new.items():
        if name in signature.parameters:
            bound.arguments[name] = value
        elif extra is not None:
            bound.arguments.setdefault(extra, {})[name] = value
        else:
            raise ValueError(f"predictions: {name!r} is not a parameter of the model")
    return bound.args, bound.kwargs
