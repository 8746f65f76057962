"""Label switching: a canonical order of a mixture's components within each exported draw.

A mixture's likelihood is invariant under permutations of its components, so a posterior (or
prior) draw's component labels carry no meaning, and per-component summaries across draws mix
components. :func:`canonical_order` relabels every draw so that the components' first mean
coordinate increases: the usual identifiability constraint, adequate when the components are
separated along that coordinate.
"""

__all__ = ["ORDER_NOTE", "canonical_order"]

import numpy as np
import torch
import xarray as xr
from torch.distributions import biject_to, constraints

ORDER_NOTE = "within each draw, components are sorted by the first coordinate of locs"
SIMPLEX_SITES = ("weights",)


def canonical_order(tree: xr.DataTree, *, by: str = "locs", dim: str = "component") -> xr.DataTree:
    """Relabels the components of every draw so that ``by``'s first coordinate increases.

    In ``posterior`` and ``prior`` (each sorted by its own draws of ``by``) every variable with
    the ``dim`` dimension is permuted along it; in ``unconstrained_posterior`` the variables
    that keep ``dim`` are permuted by the posterior's order and the simplex sites (``weights``,
    whose unconstrained coordinates are not per component) are recomputed from the permuted
    values. Other groups are invariant to relabelling. The tree's ``attrs["component_order"]``
    says what was done.

    Arguments:
        tree: An export of :func:`~pyroext.models.gmm.gmm_marginal_model` draws (e.g. by
            :func:`pyroext.arviz.from_pyro_svi`).
        by: A variable with dims ``(chain, draw, dim, ...)``; its first coordinate orders.
        dim: The components' dimension name.

    Returns:
        A relabelled copy of ``tree``.

    Raises:
        ValueError: If the posterior has no variable ``by`` with dimension ``dim``.
    """
    posterior = tree["posterior"].to_dataset() if "posterior" in tree.children else None
    if posterior is None or by not in posterior or dim not in posterior[by].dims:
        raise ValueError(f"by={by!r} must name a posterior variable with dimension {dim!r}")
    out = tree.copy()
    order = _order(posterior[by], dim)
    out["posterior"] = _permuted(posterior, order, dim)
    if "prior" in tree.children:
        prior = tree["prior"].to_dataset()
        out["prior"] = _permuted(prior, _order(prior[by], dim), dim)
    if "unconstrained_posterior" in tree.children:
        free = _permuted(tree["unconstrained_posterior"].to_dataset(), order, dim)
        for name in SIMPLEX_SITES:
            if name in free:
                value = torch.as_tensor(out["posterior"][name].values)
                free[name] = free[name].copy(data=_stick_breaking(value))
        out["unconstrained_posterior"] = free
    out.attrs["component_order"] = ORDER_NOTE if by == "locs" else f"sorted by {by}[..., 0]"
    return out


def _order(key: xr.DataArray, dim: str) -> xr.DataArray:
    first = key.isel({d: 0 for d in key.dims if d not in ("chain", "draw", dim)})
    return xr.apply_ufunc(
        np.argsort, first, input_core_dims=[[dim]], output_core_dims=[[dim]], kwargs={"axis": -1}
    )


def _permuted(dataset: xr.Dataset, order: xr.DataArray, dim: str) -> xr.Dataset:
    permuted = dataset.copy()
    for name, variable in dataset.data_vars.items():
        if dim not in variable.dims:
            continue
        taken = xr.apply_ufunc(
            _take, variable, order, input_core_dims=[[dim], [dim]], output_core_dims=[[dim]]
        )
        permuted[name] = taken.transpose(*variable.dims)
    return permuted


def _stick_breaking(weights: torch.Tensor) -> np.ndarray:
    return biject_to(constraints.simplex).inv(weights).numpy()


def _take(values: np.ndarray, order: np.ndarray) -> np.ndarray:
    return np.take_along_axis(values, order, axis=-1)
