"""The target of the Markov steps inside a guide: the model's log joint, per chain.

An MCMC-in-guide guide evaluates the model many times per call, at values that it chooses,
so it holds the model itself (not Pyro's init-wrapped copy, whose init strategy would run at
every evaluation) and the data it was trained on (so that ``Predictive`` on new inputs draws
from the posterior those data define).
"""

__all__ = [
    "chains_log_density",
    "check_full_data",
    "max_plate_nesting",
    "needs_data_error",
    "own_plate_dims",
    "picklable",
    "unobserved_site",
    "untraced_copy",
]

import pickle
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from pyro import poutine
from pyro.poutine import runtime
from pyro.poutine.util import site_is_subsample
from torch import Tensor
from torch.utils._pytree import tree_map

Arguments = tuple[tuple[Any, ...], dict[str, Any]]


@contextmanager
def own_plate_dims() -> Iterator[None]:
    """Runs the model's plates at the dims they had in the prototype trace.

    The guide evaluates the model inside whatever plates enclose the guide (ELBO particles,
    ``Predictive``'s draws). Blocking hides the model from them, but Pyro's global dim
    allocator would still shift or collide the model's plates; the chains broadcast at a dim
    left of the model's plates, which no plate declares.
    """
    allocator = runtime._DIM_ALLOCATOR
    saved, allocator._stack = allocator._stack, []
    try:
        yield
    finally:
        allocator._stack = saved


def model_trace(model: Callable, values: dict[str, Tensor], data: Arguments) -> poutine.Trace:
    """The model's trace with its latents set to ``values``, hidden from enclosing handlers."""
    args, kwargs = data
    with poutine.block(), own_plate_dims():
        return poutine.trace(poutine.condition(model, values)).get_trace(*args, **kwargs)


def check_full_data(trace: poutine.Trace, guide_name: str) -> None:
    """Refuses a model whose log density is scaled (subsampled plates, ``poutine.scale``)."""
    for site in trace.nodes.values():
        if site["type"] != "sample" or site_is_subsample(site):
            continue
        scale = site["scale"]
        if isinstance(scale, Tensor) or scale != 1.0:
            raise ValueError(
                f"{guide_name}: site {site['name']!r} is scaled by {scale} (a subsampled plate "
                "or poutine.scale); the Markov steps need the full-data log density, and "
                "subsampled gradients make them inconsistent. Use subsample_size=None."
            )


def max_plate_nesting(trace: poutine.Trace) -> int:
    """How many batch dims the model's vectorised plates use."""
    return max(
        (
            -frame.dim
            for site in trace.nodes.values()
            if site["type"] == "sample"
            for frame in site["cond_indep_stack"]
            if frame.vectorized
        ),
        default=0,
    )


def unobserved_site(trace: poutine.Trace) -> str | None:
    """The first sample site of a conditioned trace that is neither observed nor set."""
    for site in trace.nodes.values():
        if site["type"] == "sample" and not site["is_observed"] and not site_is_subsample(site):
            return site["name"]
    return None


def needs_data_error(guide_name: str, site: str) -> ValueError:
    return ValueError(
        f"{guide_name} targets the posterior, so it needs the data: call it once with the "
        f"arguments it is trained with (site {site!r} is not observed); after that, calls "
        "without the observations (Predictive on new inputs) target the data it remembers"
    )


def chains_log_density(trace: poutine.Trace, chains: int, nesting: int, guide_name: str) -> Tensor:
    """Sums a trace's log densities per chain, the chains at dim ``-nesting - 1``."""
    trace.compute_log_prob()
    total = 0.0
    for site in trace.nodes.values():
        if site["type"] != "sample" or "log_prob" not in site:
            continue
        log_prob = site["log_prob"]
        if chains == 1 or log_prob.dim() <= nesting:
            total = total + log_prob.sum().expand(chains)
            continue
        if log_prob.dim() > nesting + 1:
            raise ValueError(
                f"{guide_name}: a log density of shape {tuple(log_prob.shape)} has more batch "
                f"dimensions than the model's {nesting} plates"
            )
        total = total + log_prob.reshape(log_prob.shape[0], -1).sum(-1).expand(chains)
    return total


def picklable(value: Any) -> bool:
    """Whether ``value`` pickles (a model defined inside a function does not)."""
    try:
        pickle.dumps(value)
    except (pickle.PicklingError, AttributeError, TypeError):
        return False
    return True


def untraced_copy(data: Arguments) -> Arguments:
    """Copies of the tensors in ``data`` that a ``torch.jit.trace`` in progress records as
    constants: the remembered data may be the very tensors passed as the trace's inputs, and
    a traced ``Predictive`` would then target the new inputs it is given instead."""
    state = torch._C._get_tracing_state()
    torch._C._set_tracing_state(None)
    try:
        return tree_map(lambda v: v.clone() if isinstance(v, Tensor) else v, data)
    finally:
        torch._C._set_tracing_state(state)
