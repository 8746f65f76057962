"""What the Markov steps of a guide hand back to it: the final state, the extended-space log
density (with the score term of any discrete choices) and per-draw statistics."""

__all__ = ["Transport", "acceptance_stats", "chain_score_term"]

from typing import NamedTuple

import torch
from torch import Tensor

from pyroext.guides import score
from pyroext.kernels import Chain, Info


class Transport(NamedTuple):
    """What the Markov steps did to a batch of ``B`` base draws.

    Fields:
        position: Final latents ``z_K``, ``(*B, D)``.
        log_density: ``log q(z_0, aux, z_K) - log r(aux | z_K) - log q_0(z_0)``: the guide's
            extended-space log density beyond the base, ``B``. It may carry a zero-valued
            score-function (DiCE) term for discrete choices.
        sample_stats: Per-draw diagnostics, each with leading dimensions ``B``; a global
            guide adds ``log_weight`` (``log p - log q`` of the extended space) where it is
            missing.
    """

    position: Tensor
    log_density: Tensor
    sample_stats: dict[str, Tensor]

    @classmethod
    def from_chain(cls, chain: Chain, sample_stats: dict[str, Tensor]) -> "Transport":
        """The transport of a :class:`~pyroext.kernels.Chain`, its score term included."""
        log_density = chain.log_density - chain_score_term(chain)
        return cls(chain.state.position, log_density, sample_stats)


def chain_score_term(chain: Chain) -> Tensor:
    """The zero-valued REINFORCE term of a chain's discrete choices (zeros without any): each
    step's choices weighted by the rewards from that step on, less a leave-one-out baseline
    (:func:`~pyroext.guides.score.reward_to_go_score_term`)."""
    if chain.rewards is None:
        return torch.zeros_like(chain.log_density)
    references = None if chain.references is None else chain.references.unbind(-1)
    return score.reward_to_go_score_term(
        chain.rewards.unbind(-1), chain.info.log_prob_choice.unbind(-1), references
    )


def acceptance_stats(info: Info) -> dict[str, Tensor]:
    """``acceptance_rate`` (the probability of accepting each step's proposal) and
    ``accepted``, each ``(*B, K)``."""
    return {"acceptance_rate": info.acceptance_prob, "accepted": info.accepted}
