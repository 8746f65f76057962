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
    "warn_if_unhealthy",
]

import warnings
from typing import Any, NamedTuple

import torch
from torch import Tensor

from pyroext.guides.markov import AutoMarkovGuide

ACCEPTANCE_FLOOR = 0.01
"""Mean acceptance below which a MetFlow step counts as stuck."""
BOUND_FRACTION = 0.99
"""A DAIS step size above this fraction of ``eta_max`` counts as sitting at its cap."""
HEALTH_DRAWS = 256


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

    def __repr__(self) -> str:
        def shown(values: Tensor | None) -> str:
            return "-" if values is None else "[" + ", ".join(f"{v:.3g}" for v in values) + "]"

        verdict = "healthy" if not self.problems else f"{len(self.problems)} problem(s)"
        return (
            f"GuideHealth({self.guide}: acceptance {shown(self.acceptance)}, "
            f"step size {shown(self.step_size)}; {verdict})"
        )


@torch.no_grad()
def guide_health(
    guide: Any, *args: Any, num_draws: int = HEALTH_DRAWS, **kwargs: Any
) -> GuideHealth:
    """Measures an MCMC-in-guide guide's steps on ``num_draws`` fresh chains.

    Arguments:
        guide: An :class:`~pyroext.guides.AutoMarkovGuide` (other guides are healthy by
            definition: they have no steps).
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
    name = type(guide).__name__
    if not isinstance(guide, AutoMarkovGuide) or guide.K == 0:
        return GuideHealth(name, None, None, None, ())
    guide.sample_latents(num_draws, *args, **kwargs)
    stats = guide.sample_stats
    acceptance = _mean_per_step(stats.get("acceptance_rate"))
    step_size = _mean_per_step(stats.get("step_size"))
    step_size_max = getattr(guide, "eta_max", None)
    problems = _acceptance_problems(name, acceptance) + _step_size_problems(
        name, step_size, step_size_max
    )
    return GuideHealth(name, acceptance, step_size, step_size_max, problems)


def warn_if_unhealthy(health: GuideHealth) -> GuideHealth:
    """Warns (``UserWarning``) once per problem of ``health``, and returns it."""
    for problem in health.problems:
        warnings.warn(problem, UserWarning, stacklevel=2)
    return health


def _mean_per_step(values: Tensor | None) -> Tensor | None:
    if values is None:
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
