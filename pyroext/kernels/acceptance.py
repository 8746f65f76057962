"""Metropolis-Hastings and Barker acceptance probabilities, in log space."""

__all__ = ["ACCEPTANCE_RULES", "accept", "log_acceptance"]

import torch
import torch.nn.functional as F
from torch import Tensor

ACCEPTANCE_RULES = ("barker", "mh")

# MH rejections at acceptance ~1 would give log(1 - alpha) = -inf and an infinite score weight;
# the floor keeps the score term finite (same value as the MetFlow authors' code).
_MIN_REJECT_PROB = 1e-8


def log_acceptance(log_ratio: Tensor, rule: str = "barker") -> tuple[Tensor, Tensor]:
    """Log-probabilities of accepting and of rejecting a proposal.

    Arguments:
        log_ratio: Log Metropolis-Hastings ratio ``log t`` of each proposal.
        rule: ``"mh"`` for ``alpha = min(1, t)`` or ``"barker"`` for ``alpha = t / (1 + t)``.

    Returns:
        ``(log alpha, log(1 - alpha))``, both differentiable in ``log_ratio``.

    Raises:
        ValueError: If ``rule`` is not one of :data:`ACCEPTANCE_RULES`.

    References:
        | Monte Carlo sampling methods using Markov chains (Hastings, 1970)
        | https://doi.org/10.1093/biomet/57.1.97

        | Monte Carlo calculations of the radial distribution functions (Barker, 1965)
        | https://doi.org/10.1071/PH650119
    """
    if rule == "barker":
        return -F.softplus(-log_ratio), -F.softplus(log_ratio)
    if rule == "mh":
        log_accept = log_ratio.clamp(max=0.0)
        reject = torch.clamp(-torch.expm1(log_accept), min=_MIN_REJECT_PROB)
        return log_accept, torch.log(reject)
    raise ValueError(f"acceptance={rule!r} is unknown; valid rules: {', '.join(ACCEPTANCE_RULES)}")


def accept(log_accept_prob: Tensor) -> Tensor:
    """Draws the accept decisions ``log U < log alpha`` (no gradient flows through them)."""
    uniform = torch.rand_like(log_accept_prob)
    return torch.log(uniform) < log_accept_prob.detach()
