"""Replaying a Pyro model, or sampling a guide, at many draws at once.

Replaying runs the model once under an extra outermost plate over the draws. Models that
cannot run that way (Python control flow on a sampled value, ``.item()``, batch dimensions not
declared with plates) are replayed one draw at a time instead, with a warning; so are guides.
"""

__all__ = ["GuideDraws", "Replay", "replay_model", "sample_guide"]

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import pyro
import torch
from pyro import poutine
from pyro.distributions import constraints
from pyro.distributions.util import scale_and_mask
from pyro.poutine.trace_struct import Trace
from pyro.poutine.uncondition_messenger import UnconditionMessenger
from pyro.poutine.util import site_is_factor, site_is_subsample
from torch import Tensor
from torch.distributions import biject_to

from pyroext.arviz.sites import PACKAGE_DIR, ModelInfo, Site, plate_nesting, trace_blocked

DRAWS_PLATE = "_pyroext_draws"


class Replay(NamedTuple):
    """What runs of a model at ``S`` draws yield, with the draws on the first axis.

    Fields:
        values: Site values, ``(S, *site.shape)``, of all but factor sites.
        log_likelihood: Pointwise ``log p(y | theta)`` of each observed site, ``(S, *batch)``.
        lp: ``log p(y, theta)`` per draw, ``(S,)``; ``None`` for predictive runs.
        unconstrained: Constrained latents in the unconstrained space, ``(S, *batch, *event)``.
    """

    values: dict[str, Tensor]
    log_likelihood: dict[str, Tensor]
    lp: Tensor | None
    unconstrained: dict[str, Tensor]


class GuideDraws(NamedTuple):
    """Draws of a guide.

    Fields:
        values: Each latent site of the model, ``(S, *site.shape)``.
        lq: ``log q`` of all sample sites of the guide, per draw, ``(S,)``.
        stats: Per-draw statistics the guide records in its sites' ``infer["sample_stats"]``
            (e.g. acceptance rates of MCMC-in-guide steps), ``(S, ...)``.
    """

    values: dict[str, Tensor]
    lq: Tensor
    stats: dict[str, Tensor]


class _ResampleObserved(UnconditionMessenger):
    """Redraws observed sites, leaving deterministic and factor sites as they are."""

    def _pyro_sample(self, msg: Any) -> None:
        if msg["infer"].get("_deterministic") or site_is_factor(msg):
            return
        super()._pyro_sample(msg)


def replay_model(
    model: Callable[..., Any],
    info: ModelInfo,
    draws: Mapping[str, Tensor],
    num: int,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    *,
    resample: bool,
    unconstrained: bool = False,
) -> Replay:
    """Runs the model at each of ``num`` draws of (some of) its latent sites.

    Arguments:
        model: The model ``info`` describes (at these arguments).
        info: The model's sites.
        draws: Values of latent sites, each of shape ``(num, *site.shape)``; latent sites not
            given are drawn from the model.
        num: Number of draws.
        args: Positional arguments of the model.
        kwargs: Keyword arguments of the model.
        resample: Redraw observed sites (predictive) instead of scoring them.
        unconstrained: Also map constrained latent values to the unconstrained space.

    Returns:
        The :class:`Replay`; ``log_likelihood`` and ``lp`` are filled only without
        ``resample``.
    """

    def run(values: Mapping[str, Tensor], nesting: int | None) -> Callable[..., Any]:
        program = _ResampleObserved()(model) if resample else model
        if nesting is not None:
            program = pyro.plate(DRAWS_PLATE, num, dim=-nesting - 1)(program)
        return poutine.condition(program, data=dict(values))

    def vectorised() -> Replay:
        nesting = info.max_plate_nesting
        padded = {name: _pad(value, info.sites[name], nesting) for name, value in draws.items()}
        trace = trace_blocked(run(padded, nesting), args, kwargs)
        return _read_model(trace, info, num, nesting, not resample, unconstrained)

    def single(i: int) -> Replay:
        trace = trace_blocked(
            run({name: value[i] for name, value in draws.items()}, None), args, kwargs
        )
        return _read_model(trace, info, 1, None, not resample, unconstrained)

    return _vectorised_or_loop(vectorised, single, num, "the model")


def sample_guide(
    guide: Callable[..., Any],
    info: ModelInfo,
    num: int,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
) -> GuideDraws:
    """Draws the model's latent sites from a guide, with ``log q`` of each draw.

    Arguments:
        guide: A guide of the model ``info`` describes.
        info: The model's sites.
        num: Number of draws.
        args: Positional arguments of the guide.
        kwargs: Keyword arguments of the guide.

    Returns:
        The :class:`GuideDraws`.

    Raises:
        ValueError: If the guide does not sample every latent site of the model.
    """
    prototype = trace_blocked(guide, args, kwargs)
    missing = [name for name in info.names("latent") if name not in prototype.nodes]
    if missing:
        raise ValueError(f"guide: it does not sample the model's latent sites {missing}")
    nesting = max(info.max_plate_nesting, plate_nesting(prototype))

    def vectorised() -> GuideDraws:
        plated = pyro.plate(DRAWS_PLATE, num, dim=-nesting - 1)(guide)
        return _read_guide(trace_blocked(plated, args, kwargs), info, num, nesting)

    def single(_: int) -> GuideDraws:
        return _read_guide(trace_blocked(guide, args, kwargs), info, 1, None)

    return _vectorised_or_loop(vectorised, single, num, "the guide")


def _pad(value: Tensor, site: Site, nesting: int) -> Tensor:
    """Puts the draws of a site at the draws plate's dim, left of the model's batch dims."""
    if site.batch_ndim > nesting:
        raise ValueError(f"site {site.name!r} has batch dimensions that no plate declares")
    padding = (1,) * (nesting - site.batch_ndim)
    return value.reshape((value.shape[0], *padding, *site.shape))


def _per_draw(tensor: Tensor, num: int, shape: tuple[int, ...]) -> Tensor:
    """Reshapes a vectorised value to ``(num, *shape)``; values equal in all draws are copied."""
    tensor, size = torch.as_tensor(tensor), math.prod(shape)
    if tensor.numel() == num * size:
        return tensor.reshape((num, *shape))
    if tensor.numel() == size:
        return tensor.reshape(shape).expand((num, *shape))
    raise ValueError(
        f"a value of shape {tuple(tensor.shape)} does not hold {num} draws of {shape}"
    )


def _totals(log_prob: Tensor, num: int, nesting: int | None) -> Tensor:
    """Sums a log density over everything but the draws."""
    log_prob = torch.as_tensor(log_prob)
    if nesting is None:
        return log_prob.sum().reshape(1)
    if log_prob.dim() != nesting + 1 or log_prob.shape[0] != num:
        raise ValueError(f"a log density of shape {tuple(log_prob.shape)} is not batched by draw")
    return log_prob.reshape(num, -1).sum(-1)


def _weighted(log_prob: Tensor, node: Mapping[str, Any]) -> Tensor:
    return scale_and_mask(log_prob, node["scale"], node["mask"])


def _read_model(
    trace: Trace, info: ModelInfo, num: int, nesting: int | None, score: bool, unconstrained: bool
) -> Replay:
    values, log_likelihood, free, terms = {}, {}, {}, []
    for name, site in info.sites.items():
        if name not in trace.nodes:
            raise ValueError(f"site {name!r} is missing from a run; its presence must not vary")
        node = trace.nodes[name]
        if site.kind != "factor":
            values[name] = _per_draw(node["value"], num, site.shape)
        if not score or site.kind == "deterministic":
            continue
        log_prob = node["fn"].log_prob(node["value"])
        terms.append(_totals(_weighted(log_prob, node), num, nesting))
        batch_shape = site.shape[: site.batch_ndim]
        if site.kind == "observed":
            log_likelihood[name] = _per_draw(log_prob, num, batch_shape)
        if unconstrained and site.kind == "latent" and _is_constrained(node["fn"].support):
            free[name] = _unconstrain(node, num, batch_shape)
    return Replay(values, log_likelihood, _add_up(terms, num) if score else None, free)


def _read_guide(trace: Trace, info: ModelInfo, num: int, nesting: int | None) -> GuideDraws:
    values = {
        name: _per_draw(trace.nodes[name]["value"], num, info.sites[name].shape)
        for name in info.names("latent")
    }
    terms = [
        _totals(_weighted(node["fn"].log_prob(node["value"]), node), num, nesting)
        for node in trace.nodes.values()
        if node["type"] == "sample" and not node["is_observed"] and not site_is_subsample(node)
    ]
    stats = {
        name: torch.as_tensor(value).reshape(num, *value.shape[1:])
        for node in trace.nodes.values()
        for name, value in node.get("infer", {}).get("sample_stats", {}).items()
    }
    return GuideDraws(values, _add_up(terms, num), stats)


def _add_up(terms: list[Tensor], num: int) -> Tensor:
    return sum(terms[1:], start=terms[0]) if terms else torch.zeros(num)


def _is_constrained(support: constraints.Constraint) -> bool:
    if support.is_discrete or constraints.is_dependent(support):
        return False
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    return support is not constraints.real


def _unconstrain(node: Mapping[str, Any], num: int, batch_shape: tuple[int, ...]) -> Tensor:
    transform = biject_to(node["fn"].support)
    free = transform.inv(node["value"])
    event_shape = free.shape[free.dim() - transform.domain.event_dim :]
    return _per_draw(free, num, (*batch_shape, *event_shape))


def _vectorised_or_loop[T: (Replay, GuideDraws)](
    vectorised: Callable[[], T], single: Callable[[int], T], num: int, what: str
) -> T:
    try:
        return vectorised()
    # Any error of user code under the draws plate means the model is not vectorisable.
    except Exception as error:  # noqa: BLE001
        # Pyro appends a table of trace shapes to errors; its first line says enough.
        reason = type(error).__name__ + ": " + str(error).partition("\n")[0]
        warnings.warn(
            f"{what} could not be evaluated on all {num} draws at once ({reason}); "
            "evaluating it one draw at a time instead",
            UserWarning,
            skip_file_prefixes=(PACKAGE_DIR,),
        )
    parts = [single(i) for i in range(num)]
    return type(parts[0])(*(_join([getattr(part, f) for part in parts]) for f in parts[0]._fields))


def _join(parts: list[Any]) -> Any:
    if isinstance(parts[0], dict):
        return {key: torch.cat([part[key] for part in parts]) for key in parts[0]}
    return None if parts[0] is None else torch.cat(parts)
