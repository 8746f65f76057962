"""Convergence stop for SVI: the smoothed ELBO no longer moves."""

__all__ = ["Convergence", "smoothed_loss"]

from typing import NamedTuple

import numpy as np


class Convergence(NamedTuple):
    """Stop rule on the relative change of the windowed mean loss.

    Training stops once ``|m_new - m_old| / |m_old| < rtol``, where ``m_new`` and ``m_old`` are
    the mean losses over the last ``window`` steps and the ``window`` steps before them. It is
    evaluated only when losses are synced to the host (every ``display_every`` steps).

    Fields:
        rtol: Relative tolerance, in (0, 1).
        window: Steps per window, at least 2.
    """

    rtol: float = 1e-4
    window: int = 200

    def validate(self) -> None:
        """Raises ValueError naming the field and its valid range."""
        if not 0.0 < self.rtol < 1.0:
            raise ValueError(f"convergence rtol={self.rtol} must be in (0, 1)")
        if int(self.window) != self.window or self.window < 2:
            raise ValueError(f"convergence window={self.window} must be an integer >= 2")

    def relative_change(self, losses: np.ndarray) -> float | None:
        """Relative change between the last two windows, or None with too few steps."""
        if len(losses) < 2 * self.window:
            return None
        new = losses[-self.window :].mean()
        old = losses[-2 * self.window : -self.window].mean()
        return float(abs(new - old) / max(abs(old), np.finfo(float).tiny))

    def reached(self, losses: np.ndarray) -> bool:
        """Whether the rule holds for this loss history."""
        change = self.relative_change(losses)
        return change is not None and change < self.rtol


def smoothed_loss(losses: np.ndarray, window: int = 100) -> float:
    """Mean of the last ``window`` losses, the ELBO shown by the progress bar."""
    return float(np.mean(losses[-window:])) if len(losses) else float("nan")
