"""A model's log joint over its flat unconstrained latents, without a guide around it."""

__all__ = ["ModelLogJoint"]

from collections.abc import Callable
from typing import Any

from torch import Tensor

from pyroext.guides.markov import AutoMarkovGuide


class ModelLogJoint(AutoMarkovGuide):
    """The target of the MCMC-in-guide guides on its own: the latents' layout of Pyro's
    ``AutoContinuous`` guides and :meth:`~pyroext.guides.AutoMarkovGuide.log_joint`, with no
    parameters of its own (nothing is added to the param store).

    Arguments:
        model: A Pyro model with continuous latents.
    """

    def __init__(self, model: Callable[..., Any]) -> None:
        super().__init__(model, K=0, compile_target=False)

    def _setup_base(self, init_loc: Tensor, init_scale: float) -> None:
        """No base distribution: only the layout is needed."""
