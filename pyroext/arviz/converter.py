"""Pyro inference results as ArviZ 1.x :class:`xarray.DataTree` objects.

:func:`from_pyro_svi` exports a trained guide and :func:`from_pyro` a finished
:class:`pyro.infer.MCMC` run. Both replay the model at the draws, so that deterministic sites
reach the posterior, observed sites are redrawn for the posterior predictive and scored for a
pointwise log likelihood, and dims come from the model's plates.
"""

__all__ = ["from_pyro", "from_pyro_svi"]

import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np
import pyro
import torch
import xarray as xr
from pyro.infer import MCMC
from pyro.infer.autoguide import AutoGuide
from torch import Tensor

import pyroext
from pyroext.arviz import groups as g
from pyroext.arviz.assemble import (
    Dims,
    Fit,
    check_count,
    read_options,
    shared_groups,
    with_user_dims,
)
from pyroext.arviz.hook import SampleStatsHook
from pyroext.arviz.replay import sample_guide
from pyroext.arviz.sites import PACKAGE_DIR, inspect_model


def from_pyro_svi(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    *args: Any,
    num_samples: int = 1000,
    prior: int | bool = False,
    posterior_predictive: bool = True,
    predictions: Mapping[str, Any] | None = None,
    constant_data: Mapping[str, Any] | None = None,
    predictions_constant_data: Mapping[str, Any] | None = None,
    coords: Mapping[str, Any] | None = None,
    dims: Dims | None = None,
    pred_dims: Dims | None = None,
    log_likelihood: bool = True,
    unconstrained: bool = True,
    model_kwargs: Mapping[str, Any] | None = None,
    seed: int | None = None,
) -> xr.DataTree:
    """Exports a trained guide as an ArviZ ``DataTree``.

    Draws ``num_samples`` latents from the guide (vectorised, or one at a time if the guide
    or model cannot be vectorised) and stores them as ``chain=1``, ``draw=num_samples`` so that
    every ``arviz_stats`` function, ``loo`` included, accepts the result. ``sample_stats``
    holds, per draw, ``lp = log p(y, theta)`` (the model's joint density, priors included) and
    ``lq = log q(theta)`` (the guide's density, of all its sample sites), so
    ``arviz_stats.loo_approximate_posterior(dt, dt.sample_stats.lp, dt.sample_stats.lq)``
    applies the importance correction of Magnusson et al. (2019), and the Pareto k of
    ``lp - lq`` is the diagnostic of Yao et al. (2018). Statistics a guide records per draw
    (the MCMC-in-guide guides' acceptance rates, step sizes and log weights) are added, with
    the dimension names of the guide's ``sample_stats_dims``.

    Arguments:
        model: The Pyro model.
        guide: The trained guide; it must sample every latent site of the model.
        args: Positional arguments of model and guide, as used for training.
        num_samples: Number of posterior draws, >= 1.
        prior: Number of prior draws for the ``prior`` and ``prior_predictive`` groups, or
            ``False``.
        posterior_predictive: Redraw the observed sites at each draw.
        predictions: New values of model arguments, by parameter name (e.g.
            ``{"x": x_new, "y": None}``); adds ``predictions`` (observed and deterministic
            sites at those inputs) and ``predictions_constant_data``.
        constant_data: Data to store in ``constant_data``.
        predictions_constant_data: Data to store in ``predictions_constant_data``; by default
            the array arguments in ``predictions``.
        coords: Coordinate values by dimension name (default ``0..n-1``). They are left out of
            the prediction groups where their length does not fit.
        dims: Dimension names by variable (sites or ``constant_data``), one per exported
            axis or one per axis of the site's value; by default from plates and
            ``infer={"event_dims": [...]}``.
        pred_dims: Like ``dims``, for the prediction groups.
        log_likelihood: Add the pointwise ``log_likelihood`` group.
        unconstrained: Add the ``unconstrained_posterior`` group: the constrained latents
            mapped by ``biject_to(support).inv``, the space AutoNormal and AutoContinuous
            guides work in.
        model_kwargs: Keyword arguments of model and guide.
        seed: Seed for the draws; Pyro's global random state is left as it was.

    Returns:
        A DataTree with groups ``posterior``, ``sample_stats``, ``log_likelihood``,
        ``posterior_predictive``, ``observed_data``, ``unconstrained_posterior`` and the
        optional ones asked for.

    Raises:
        ValueError: For invalid arguments, including ``dims`` naming no site.

    Warns:
        UserWarning: If the guide has not been trained: an autoguide that was never called
            (its parameters are made at its first call), or another guide whose parameters
            this export created in the param store.

    References:
        Yao, Vehtari, Simpson and Gelman (2018). Yes, but Did It Work?: Evaluating
        Variational Inference. ICML.

        Magnusson, Andersen, Jonasson and Vehtari (2019). Bayesian leave-one-out
        cross-validation for large data. ICML.
    """
    check_count(num_samples, "num_samples")
    options = read_options(locals())
    kwargs = dict(model_kwargs or {})
    with _seeded(seed):
        info = with_user_dims(inspect_model(model, args, kwargs), options.dims, constant_data)
        known, never_called = set(pyro.get_param_store().keys()), _never_called(guide)
        guided = sample_guide(guide, info, num_samples, args, kwargs)
        created = sorted(set(pyro.get_param_store().keys()) - known)
        fit = Fit(model, args, kwargs, info, guided.values, (1, num_samples))
        groups, scored = shared_groups(fit, options)
    if never_called or (created and not isinstance(guide, AutoGuide)):
        _warn_untrained(guide, created)
    stats = {"lp": scored.lp.reshape(1, -1), "lq": guided.lq.reshape(1, -1)}
    stats |= {name: value.unsqueeze(0) for name, value in guided.stats.items()}
    stats_dims = getattr(guide, "sample_stats_dims", {})
    groups["sample_stats"] = g.sample_stats(stats, fit.sample_shape, stats_dims)
    groups["sample_stats"].attrs.update(getattr(guide, "sample_stats_attrs", {}))
    if unconstrained and scored.unconstrained:
        layout = g.Layout(info.sites, fit.sample_shape, options.coords)
        groups["unconstrained_posterior"] = g.unconstrained_posterior(layout, scored.unconstrained)
    guide_name = getattr(guide, "__name__", None) or type(guide).__name__
    return _tree(groups, options.coords, guide=guide_name)


def _never_called(guide: Callable[..., Any]) -> bool:
    """Whether an autoguide has never run: it makes its parameters at its first call, which
    training, resuming and loading saved parameters all make (module-held parameters need not
    be in the param store, so the store cannot tell for an autoguide)."""
    return isinstance(guide, AutoGuide) and getattr(guide, "prototype_trace", None) is None


def _warn_untrained(guide: Callable[..., Any], created: list[str]) -> None:
    """Warns that the exported draws come from a guide's initial values, not from a fit."""
    name = getattr(guide, "__name__", None) or type(guide).__name__
    listed = ", ".join(created[:3]) + (f" and {len(created) - 3} more" if len(created) > 3 else "")
    made = f" (this export created its parameters {listed})" if created else ""
    warnings.warn(
        f"guide {name} has not been trained: it was never called before this export{made}, "
        "so the draws come from its initial values; train it first, e.g. with "
        "pyroext.infer.run_svi(model, guide, ...)",
        UserWarning,
        skip_file_prefixes=(PACKAGE_DIR,),
    )


def from_pyro(
    mcmc: MCMC,
    *,
    prior: int | bool = False,
    posterior_predictive: bool = True,
    predictions: Mapping[str, Any] | None = None,
    constant_data: Mapping[str, Any] | None = None,
    predictions_constant_data: Mapping[str, Any] | None = None,
    coords: Mapping[str, Any] | None = None,
    dims: Dims | None = None,
    pred_dims: Dims | None = None,
    log_likelihood: bool = True,
    sample_stats: Mapping[str, Any] | SampleStatsHook | None = None,
) -> xr.DataTree:
    """Exports a finished MCMC run as an ArviZ ``DataTree``.

    The posterior holds ``mcmc.get_samples(group_by_chain=True)`` and the deterministic sites,
    got by replaying the model at each draw with the arguments of ``mcmc.run``.

    Arguments:
        mcmc: An :class:`pyro.infer.MCMC` whose kernel was built from a model and that has run.
        prior: Number of prior draws for ``prior`` and ``prior_predictive``, or ``False``.
        posterior_predictive: Redraw the observed sites at each draw.
        predictions: New values of model arguments by parameter name, as in
            :func:`from_pyro_svi`.
        constant_data: Data to store in ``constant_data``.
        predictions_constant_data: Data to store in ``predictions_constant_data``; by default
            the array arguments in ``predictions``.
        coords: Coordinate values by dimension name.
        dims: Dimension names by variable, as in :func:`from_pyro_svi`.
        pred_dims: Like ``dims``, for the prediction groups.
        log_likelihood: Add the pointwise ``log_likelihood`` group.
        sample_stats: Per-draw statistics of shape ``(chain, draw)`` by name, e.g. the
            ``records`` of :func:`collect_sample_stats` (or the hook itself). Without it,
            ``sample_stats`` holds ``diverging`` from ``mcmc.diagnostics()``.

    Returns:
        A DataTree with groups ``posterior``, ``sample_stats``, ``log_likelihood``,
        ``posterior_predictive``, ``observed_data`` and the optional ones asked for.

    Raises:
        ValueError: For invalid arguments, an MCMC that has not run, or statistics whose
            shape is not ``(chain, draw)``.
    """
    model, samples = _mcmc_parts(mcmc)
    options = read_options(locals())
    chains, draws = next(iter(samples.values())).shape[:2]
    flat = {
        name: value.reshape(chains * draws, *value.shape[2:]) for name, value in samples.items()
    }
    info = inspect_model(model, mcmc._args, mcmc._kwargs)
    info = with_user_dims(info, options.dims, constant_data)
    missing = [name for name in info.names("latent") if name not in flat]
    if missing:
        warnings.warn(
            f"latent sites {missing} are not in the MCMC samples (enumerated?); they are left "
            "out of the posterior, and the replays draw them from the model",
            UserWarning,
            skip_file_prefixes=(PACKAGE_DIR,),
        )
    fit = Fit(model, mcmc._args, mcmc._kwargs, info, flat, (chains, draws))
    groups, _ = shared_groups(fit, options)
    stats = _mcmc_stats(mcmc, sample_stats, (chains, draws))
    if stats:
        groups["sample_stats"] = g.sample_stats(stats, (chains, draws))
    return _tree(groups, options.coords)


def _mcmc_parts(mcmc: MCMC) -> tuple[Callable[..., Any], dict[str, Tensor]]:
    model = getattr(getattr(mcmc, "kernel", None), "model", None)
    if model is None:
        raise ValueError("mcmc: its kernel has no model (a potential_fn cannot be replayed)")
    if getattr(mcmc, "_samples", None) is None or mcmc._args is None:
        raise ValueError("mcmc: it has no samples; call mcmc.run(...) first")
    samples = mcmc.get_samples(group_by_chain=True)
    if not samples:
        raise ValueError("mcmc: it has no sample sites to export")
    return model, samples


def _mcmc_stats(
    mcmc: MCMC, given: Mapping[str, Any] | SampleStatsHook | None, shape: tuple[int, int]
) -> dict[str, Any]:
    stats = dict(given.records if isinstance(given, SampleStatsHook) else given or {})
    if given is not None and not stats:
        raise ValueError(
            "sample_stats: no statistics were recorded (chains that run in worker processes "
            "call the hook there; run them sequentially)"
        )
    divergences = None if "diverging" in stats else mcmc.diagnostics().get("divergences")
    if divergences is not None:
        diverging = np.zeros(shape, dtype=bool)
        for chain, draws in enumerate(divergences.values()):
            diverging[chain, draws] = True
        stats["diverging"] = diverging
    return stats


@contextmanager
def _seeded(seed: int | None) -> Iterator[None]:
    if seed is None:
        yield
        return
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        yield


def _tree(groups: dict[str, xr.Dataset], coords: Mapping[str, Any], **attrs: str) -> xr.DataTree:
    used = {dim for dataset in groups.values() for dim in dataset.dims}
    unknown = sorted(set(coords) - used)
    if unknown:
        raise ValueError(f"coords: {unknown} name no dimension of the exported groups")
    order = {name: i for i, name in enumerate(g.GROUP_ORDER)}
    tree = xr.DataTree.from_dict(dict(sorted(groups.items(), key=lambda item: order[item[0]])))
    tree.attrs = {
        "inference_library": "pyro",
        "inference_library_version": pyro.__version__,
        "pyroext_version": pyroext.__version__,
        **attrs,
    }
    return tree
