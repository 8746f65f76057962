"""What :func:`~pyroext.infer.run_svi` returns."""

__all__ = ["SVIResult"]

from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from pyroext.guides.health import GuideHealth


class SVIResult(NamedTuple):
    """What :func:`~pyroext.infer.run_svi` returns.

    Fields:
        losses: Loss (negative ELBO estimate) of every step, including steps run before a
            resume, as float64 on the host.
        num_steps: Optimiser steps taken in total.
        wall_time: Seconds this call spent training.
        stop_reason: ``"max_steps"`` or ``"converged"``.
        relative_change: Last relative change of the windowed loss (``None`` without a
            convergence rule or with too few steps).
        compile_time: Seconds of ``wall_time`` spent recording and compiling graphs
            (``compile=True``; 0 otherwise).
        health: For an MCMC-in-guide guide, its :class:`~pyroext.guides.GuideHealth` at the
            end (acceptance and step size per step; problems are also warned); else None.
    """

    losses: np.ndarray
    num_steps: int
    wall_time: float
    stop_reason: str
    relative_change: float | None
    compile_time: float = 0.0
    health: "GuideHealth | None" = None

    def loss_series(self) -> pd.Series:
        """The loss history as a pandas Series indexed by step (1-based)."""
        index = pd.RangeIndex(1, len(self.losses) + 1, name="step")
        return pd.Series(self.losses, index=index, name="loss")
