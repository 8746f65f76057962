"""Guide health: whether an MCMC-in-guide guide's Markov steps still do anything.

A MetFlow step whose proposals are never accepted, or a DAIS step whose step size has gone to
its cap, leaves a guide that trains and samples like its base with the cost of the steps;
nothing in the ELBO says so. :func:`guide_health` measures acceptance and step size per step
on fresh draws, and names the problem and the fix.
"""

__all__ = [
    "ACCEPTANCE_FLOOR",
    "BOUND_FRACTION",
    "GuideHealth",
    "guide_health",
    "health_from_stats",
    "measure_health",
    "warn_if_unhealthy",
]

import warnings
from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
from torch import Tensor

from pyroext.checks import check_counts
from pyroext.infer.checkpoint import preserved_rng_state

ACCEPTANCE_FLOOR = 0.01
"""Mean acceptance below which a MetFlow step counts as stuck."""
BOUND_FRACTION = 0.99
"""A DAIS step size above this fraction of ``eta_max`` counts as sitting at its cap."""
HEALTH_DRAWS = 256
"""Chains :func:`guide_health` averages over: acceptance to about 0.03 either way."""


class GuideHealth(NamedTuple):
    """What :func:`guide_health` found.

    Attributes:
        guide: The guide's class name.
        acceptance: Mean acceptance probability per step, ``(K,)``, or None (no accept step).
        step_size: Step size per step in units of the base's scale, ``(K,)``, or None.
        step_size_max: The step sizes' upper bound, or None.
        problems: One sentence per problem, naming the steps and the fix; empty if healthy.
    """

    guide: str
    acceptance: Tensor | None
    step_size: Tensor | None
    step_size_max: float | None
    problems: tuple[str, ...]

    @property
    def measured(self) -> bool:
        """Whether the guide has steps to measure (acceptance or step sizes)."""
        return self.acceptance is not None or self.step_size is not None

    def postfix(self) -> dict[str, str]:
        """Short per-step values for a progress bar: ``acc`` and ``eta``, where measured."""
        shown = {"acc": self.acceptance, "eta": self.step_size}
        return {key: _listed(values, " ") for key, values in shown.items() if values is not None}

    def describe(self) -> str:
        """One line: the per-step values, the cap, and the verdict."""
        parts = (
            [f"acceptance per step {_listed(self.acceptance)}"]
            if self.acceptance is not None
            else []
        )
        if self.step_size is not None:
            cap = f" (cap {self.step_size_max:g})" if self.step_size_max is not None else ""
            parts.append(f"step size per step {_listed(self.step_size)}{cap}")
        verdict = "healthy" if not self.problems else f"{len(self.problems)} problem(s)"
        return f"guide health ({self.guide}): {'; '.join(parts) or 'no steps'}; {verdict}"

    def __repr__(self) -> str:
        verdict = "healthy" if not self.problems else f"{len(self.problems)} problem(s)"
        return (
            f"GuideHealth({self.guide}: acceptance {_listed(self.acceptance)}, "
            f"step size {_listed(self.step_size)}; {verdict})"
        )


def _listed(values: Tensor | None, separator: str = ", ") -> str:
    if values is None:
        return "-"
    return "[" + separator.join(f"{float(v):.3g}" for v in values) + "]"


def guide_health(
    guide: Any, *args: Any, num_draws: int = HEALTH_DRAWS, **kwargs: Any
) -> GuideHealth:
    """Measures an MCMC-in-guide guide's steps on ``num_draws`` fresh chains.

    The draws leave the caller's random state as it was, so a measurement in the middle of a
    fit does not change the fit.

    Arguments:
        guide: A guide with a ``health`` method, as :class:`~pyroext.guides.AutoMarkovGuide`
            (other guides are healthy by definition: they have no steps).
        args: The model's arguments (the guide's training data).
        num_draws: Chains to average over, >= 1.
        kwargs: The model's keyword arguments.

    Returns:
        A :class:`GuideHealth`.

    Example:
        >>> health = guide_health(guide, x, y)  # doctest: +SKIP
        >>> health.problems  # doctest: +SKIP
        ()
    """
    measure = getattr(guide, "health", None)
    if not callable(measure):
        return GuideHealth(type(guide).__name__, None, None, None, ())
    return measure(*args, num_draws=num_draws, **kwargs)


def measure_health(guide: Any, num_draws: int, args: tuple, kwargs: dict[str, Any]) -> GuideHealth:
    """The health of an :class:`~pyroext.guides.AutoMarkovGuide` on ``num_draws`` fresh
    chains: run eagerly (a compiled target would record a graph for this draw count) and
    leaving every random generator as it was."""
    check_counts(num_draws=num_draws)
    with torch.no_grad(), preserved_rng_state(), guide._target.eager():
        guide.sample_latents(num_draws, *args, **kwargs)
    return health_from_stats(
        type(guide).__name__, guide.sample_stats, getattr(guide, "eta_max", None)
    )


def health_from_stats(
    guide: str, stats: Mapping[str, Any], step_size_max: float | None
) -> GuideHealth:
    """The health of a guide from the statistics its steps recorded per draw.

    Arguments:
        guide: The guide's class name, for the messages.
        stats: ``acceptance_rate`` and ``step_size`` (either may be missing), tensors or arrays
            whose last axis is the step; the other axes are averaged over.
        step_size_max: The step sizes' upper bound, if they have one.

    Returns:
        A :class:`GuideHealth`.
    """
    acceptance = _mean_per_step(stats.get("acceptance_rate"))
    step_size = _mean_per_step(stats.get("step_size"))
    problems = _acceptance_problems(guide, acceptance) + _step_size_problems(
        guide, step_size, step_size_max
    )
    return GuideHealth(guide, acceptance, step_size, step_size_max, problems)


def warn_if_unhealthy(health: GuideHealth) -> GuideHealth:
    """Warns (``UserWarning``) once per problem of ``health``, and returns it."""
    for problem in health.problems:
        warnings.warn(problem, UserWarning, stacklevel=2)
    return health


def _mean_per_step(values: Any) -> Tensor | None:
    if values is None:
        return None
    values = torch.as_tensor(values)
    if values.ndim == 0 or values.shape[-1] == 0:
        return None
    return values.reshape(-1, values.shape[-1]).double().mean(0).cpu()


def _steps(mask: Tensor) -> str:
    return ", ".join(str(int(index) + 1) for index in torch.nonzero(mask).flatten())


def _acceptance_problems(name: str, acceptance: Tensor | None) -> tuple[str, ...]:
    if acceptance is None or not (stuck := acceptance < ACCEPTANCE_FLOOR).any():
        return ()
    values = ", ".join(f"{value:.2g}" for value in acceptance[stuck])
    return (
        (
            f"{name}: the acceptance of step(s) {_steps(stuck)} is below {ACCEPTANCE_FLOOR:.0%} "
            f"({values}): those steps no longer move and the guide is its base at their cost; "
            "train with several vectorised particles (Trace_ELBO(num_particles=8, "
            "vectorize_particles=True)), keep base_training='own' and flow_init='identity', or "
            "use AutoDAIS"
        ),
    )


def _step_size_problems(
    name: str, step_size: Tensor | None, step_size_max: float | None
) -> tuple[str, ...]:
    if step_size is None or step_size_max is None:
        return ()
    capped = step_size > BOUND_FRACTION * step_size_max
    if not capped.any():
        return ()
    return (
        (
            f"{name}: the step size of step(s) {_steps(capped)} sits at its cap "
            f"eta_max={step_size_max:g} (in units of the base's scale): the steps overshoot and "
            "the bound is no better than the base's; lower the learning rate, or give a smaller "
            "eta_init or a larger eta_max if the posterior is much wider than the base"
        ),
    )
