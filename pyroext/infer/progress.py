"""What :func:`~pyroext.infer.run_svi` shows while it trains, and the guide's health after.

A guide with a ``health(*args, num_draws=..., **kwargs)`` method, as the MCMC-in-guide guides
have (:meth:`pyroext.guides.AutoMarkovGuide.health`), gets its acceptance (``acc``) and step
size (``eta``) per Markov step shown beside the ELBO. They are measured on fresh chains that
leave the random state as it was, so showing them changes nothing in the fit, and only while
the measurements have cost at most :data:`HEALTH_SHARE` of the training time. After training
the health is measured once more, and each problem found (a step that no longer accepts, a
step size at its cap) is warned about, naming the fix.
"""

__all__ = ["HEALTH_SHARE", "PROGRESS_DRAWS", "TrainingProgress", "final_health"]

import os
import time
import warnings
from collections.abc import Callable
from typing import Any, Self

import numpy as np
from tqdm.auto import tqdm

from pyroext.infer.convergence import smoothed_loss

HEALTH_SHARE = 0.05
"""Most of the training time the progress bar's health measurements may take."""
PROGRESS_DRAWS = 64
"""Chains per health measurement for the progress bar (the final one uses the guide's own)."""
PACKAGE_DIR = os.path.dirname(os.path.dirname(__file__))


class TrainingProgress:
    """A tqdm bar with the step, the smoothed ELBO and, for MCMC guides, their health.

    Arguments:
        num_steps: Steps the run ends at.
        initial: Steps already taken (a resumed run).
        enabled: Show the bar; without it nothing is measured.
        guide: The guide being trained.
    """

    def __init__(self, num_steps: int, initial: int, enabled: bool, guide: Any) -> None:
        self.bar = tqdm(total=num_steps, initial=initial, disable=not enabled, unit="step")
        self.measure = _health_method(guide) if enabled else None
        self.started = time.perf_counter()
        self.health_seconds = 0.0
        self.health: dict[str, str] = {}

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.bar.close()

    def update(
        self, step: int, losses: np.ndarray, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        """Moves the bar to ``step`` and shows the ELBO and health at the step's arguments."""
        self.bar.update(step - self.bar.n)
        elbo = {"elbo": f"{-smoothed_loss(losses):.6g}"}
        self.bar.set_postfix(elbo | self._health(args, kwargs), refresh=False)

    def _health(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, str]:
        elapsed = time.perf_counter() - self.started
        if self.measure is not None and self.health_seconds <= HEALTH_SHARE * elapsed:
            start = time.perf_counter()
            self.health = self.measure(*args, num_draws=PROGRESS_DRAWS, **kwargs).postfix()
            self.health_seconds += time.perf_counter() - start
        return self.health


def final_health(guide: Any, args: tuple[Any, ...] | None, kwargs: dict[str, Any]) -> Any:
    """The guide's :class:`~pyroext.guides.GuideHealth` after training, each problem warned
    (``UserWarning``); None for a guide without Markov steps or a run without steps."""
    measure = _health_method(guide)
    if measure is None or args is None:
        return None
    health = measure(*args, **kwargs)
    if not health.measured:
        return None
    for problem in health.problems:
        warnings.warn(problem, UserWarning, skip_file_prefixes=(PACKAGE_DIR,))
    return health


def _health_method(guide: Any) -> Callable[..., Any] | None:
    measure = getattr(guide, "health", None)
    return measure if callable(measure) else None
