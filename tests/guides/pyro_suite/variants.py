"""pyroext's guides as entries of Pyro's autoguide test parametrisations.

Copied by :mod:`run` beside Pyro's ``tests/infer/test_autoguide.py`` (it must import from
Pyro's own ``tests`` package, not this one). Each class keeps the calling convention of the
Pyro guide it sits next to, and its name is the test id, so ``-k "MetFlow or DAIS"`` selects
exactly the added cases.
"""

__all__ = ["CHOLESKY", "DIAGONAL", "GUIDE_LISTS", "INIT_VARIANTS"]

from collections.abc import Callable
from typing import Any

from pyro import poutine
from pyro.infer.autoguide import AutoDelta, AutoGuideList
from pyro.infer.autoguide.initialization import (
    init_to_feasible,
    init_to_mean,
    init_to_median,
    init_to_sample,
)

from pyroext.guides import AutoDAIS, AutoMetFlow

K = 2


def _with_options(guide_class: type, name: str, **fixed: Any) -> type:
    """A subclass named ``name`` (the test id, and the guide's Pyro prefix) that takes the
    Pyro guide's ``(model, **options)`` and adds ``fixed``; defined at module level so that
    ``torch.save`` pickles it by name."""

    def __init__(self: Any, model: Callable, **options: Any) -> None:
        guide_class.__init__(self, model, **fixed, **options)

    return type(name, (guide_class,), {"__init__": __init__})


AutoMetFlowK2 = _with_options(AutoMetFlow, "AutoMetFlowK2", K=K)
AutoMetFlowK2Cholesky = _with_options(
    AutoMetFlow, "AutoMetFlowK2Cholesky", K=K, base_dist="cholesky"
)
AutoDAISK2 = _with_options(AutoDAIS, "AutoDAISK2", K=K)
AutoDAISK2Cholesky = _with_options(AutoDAIS, "AutoDAISK2Cholesky", K=K, base_dist="cholesky")
AutoMetFlowK2IAF = _with_options(AutoMetFlow, "AutoMetFlowK2IAF", K=K, base_flow="iaf")
AutoDAISK2Spline = _with_options(AutoDAIS, "AutoDAISK2Spline", K=K, base_flow="spline")


DIAGONAL = [AutoMetFlowK2, AutoDAISK2]
CHOLESKY = [AutoMetFlowK2Cholesky, AutoDAISK2Cholesky]
FLOWS = [AutoMetFlowK2IAF, AutoDAISK2Spline]


def _with_init(guide_class: type, init_loc_fn: Callable) -> Callable:
    def make(model: Callable) -> Any:
        return guide_class(model, init_loc_fn=init_loc_fn)

    make.__name__ = f"{guide_class.__name__}_{init_loc_fn.__name__}"
    return make


INITS = (init_to_feasible, init_to_mean, init_to_median, init_to_sample)
INIT_VARIANTS = {init.__name__: [_with_init(guide, init) for guide in DIAGONAL] for init in INITS}


def _guide_list_x(guide_class: type) -> Callable:
    def make(model: Callable) -> AutoGuideList:
        guide = AutoGuideList(model)
        guide.append(AutoDelta(poutine.block(model, expose=["x"])))
        guide.append(guide_class(poutine.block(model, hide=["x"])))
        return guide

    make.__name__ = f"guide_list_x_{guide_class.__name__}"
    return make


GUIDE_LISTS = [_guide_list_x(guide) for guide in DIAGONAL]
