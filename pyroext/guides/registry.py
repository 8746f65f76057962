"""Guides by name, Pyro's and pyroext's, for the CLI and for tests parametrised over guides."""

__all__ = ["GUIDES", "make_guide"]

from collections.abc import Callable
from typing import Any

from pyro.infer.autoguide import (
    AutoDelta,
    AutoDiagonalNormal,
    AutoGuide,
    AutoLowRankMultivariateNormal,
    AutoMultivariateNormal,
    AutoNormal,
)

from pyroext.guides.dais import AutoDAIS
from pyroext.guides.metflow import AutoMetFlow

GUIDES: dict[str, type[AutoGuide]] = {
    "normal": AutoNormal,
    "diagonal": AutoDiagonalNormal,
    "mvn": AutoMultivariateNormal,
    "lowrank": AutoLowRankMultivariateNormal,
    "delta": AutoDelta,
    "metflow": AutoMetFlow,
    "dais": AutoDAIS,
}


def make_guide(name: str, model: Callable[..., Any], **options: Any) -> AutoGuide:
    """Builds the guide registered under ``name`` for ``model``.

    Arguments:
        name: A key of :data:`GUIDES`.
        model: The Pyro model.
        options: Keyword options of the guide class (e.g. ``init_scale``, ``rank``).

    Returns:
        The guide.

    Raises:
        ValueError: If ``name`` is unknown; the message lists the valid names.
    """
    if name not in GUIDES:
        raise ValueError(f"guide={name!r} is unknown; valid guides: {', '.join(GUIDES)}")
    return GUIDES[name](model, **options)
