"""The MetFlow kernel: a Metropolis-Hastings step whose proposal is an invertible flow."""

__all__ = [
    "METFLOW",
    "MetFlowState",
    "fixed_log_reverse",
    "fixed_reverse_logits",
    "log_reverse",
    "metflow_init",
    "metflow_step",
]

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from pyroext.kernels.acceptance import accept, log_acceptance
from pyroext.kernels.base import Info, LogDensity, MarkovKernel

Bijection = Callable[[Tensor], tuple[Tensor, Tensor]]


class MetFlowState(NamedTuple):
    """State of a batch of MetFlow chains.

    Fields:
        position: Positions ``(B, D)``.
        log_density: Unnormalised log target at ``position``, ``(B,)``.
    """

    position: Tensor
    log_density: Tensor


def metflow_init(position: Tensor, target: LogDensity) -> MetFlowState:
    """The state at ``position`` ``(B, D)``: the position and its log target."""
    return MetFlowState(position, target(position))


def metflow_step(
    state: MetFlowState,
    target: LogDensity,
    flow: Bijection,
    flow_inverse: Bijection,
    direction_logit: Tensor,
    acceptance: str = "barker",
    reverse_logits: Tensor | None = None,
) -> tuple[MetFlowState, Info]:
    r"""One MetFlow step on a batch of chains.

    A direction is drawn (``T`` with probability ``p = sigmoid(direction_logit)``, else
    ``T^-1``), the chosen map proposes ``y`` deterministically, and the proposal is accepted
    with the Metropolis-Hastings or Barker probability of

    .. math:: \log t = \log\gamma(y) - \log\gamma(z) + \log|\det \partial y / \partial z|
              + \log P(-v) - \log P(v).

    A move ``T`` is undone by ``T^-1``, chosen with probability ``1 - p``, so for a fixed flow
    the kernel is reversible with respect to the target. The noise the flow is conditioned
    on (MetFlow's pseudo-random innovation) is part of ``flow``. The info's
    ``log_weight_increment`` is ``log|det| - log P(v, b | z) + log r(v, b)`` with the reverse
    model ``r`` over the step's four outcomes: the MetFlow authors' ``r(v, b) = P(v) / 2``, or a
    learned one (``reverse_logits``). Any ``r`` gives a valid bound; the fixed one loses up to
    ``log 2`` against the exact marginal (all of it where the chains never move), a learned
    one only the information the outcome carries beyond what ``r`` predicts.

    Arguments:
        state: Current state.
        target: Maps positions ``(B, D)`` to the unnormalised log target ``(B,)``.
        flow: ``z -> (T(z), log|det dT/dz|)``.
        flow_inverse: ``z -> (T^-1(z), log|det dT^-1/dz|)``.
        direction_logit: Logit of the probability of proposing ``T``, a scalar tensor.
        acceptance: ``"barker"`` or ``"mh"``.
        reverse_logits: Unnormalised log-probabilities ``(4,)`` of the reverse model's
            outcomes (forward accepted, forward rejected, inverse accepted, inverse rejected);
            ``None`` for ``P(v) / 2``.

    Returns:
        The new state and the step's :class:`~pyroext.kernels.Info`.

    References:
        | MetFlow: A New Efficient Method for Bridging the Gap between Markov Chain Monte
        | Carlo and Variational Inference (Thin et al., 2020)
        | https://arxiv.org/abs/2002.12253
    """
    z, log_gamma = state
    forward = torch.rand(z.shape[:-1], dtype=z.dtype, device=z.device) < torch.sigmoid(
        direction_logit.detach()
    )
    y_forward, ldj_forward = flow(z)
    y_backward, ldj_backward = flow_inverse(z)
    proposal = torch.where(forward.unsqueeze(-1), y_forward, y_backward)
    ldj = torch.where(forward, ldj_forward, ldj_backward)
    log_p_plus, log_p_minus = -F.softplus(-direction_logit), -F.softplus(direction_logit)
    log_p_chosen = torch.where(forward, log_p_plus, log_p_minus)
    log_p_reverse = torch.where(forward, log_p_minus, log_p_plus)
    log_gamma_proposal = target(proposal)
    log_ratio = log_gamma_proposal - log_gamma + ldj + log_p_reverse - log_p_chosen
    log_accept, log_reject = log_acceptance(log_ratio, acceptance)
    accepted = accept(log_accept)
    new_state = MetFlowState(
        torch.where(accepted.unsqueeze(-1), proposal, z),
        torch.where(accepted, log_gamma_proposal, log_gamma),
    )
    log_jacobian = torch.where(accepted, ldj, torch.zeros_like(ldj))
    log_prob_choice = log_p_chosen + torch.where(accepted, log_accept, log_reject)
    if reverse_logits is None:
        log_r = fixed_log_reverse(forward, direction_logit)
    else:
        log_r = log_reverse(forward, accepted, reverse_logits)
    info = Info(
        accepted=accepted,
        acceptance_prob=log_accept.detach().exp(),
        log_prob_choice=log_prob_choice,
        log_weight_increment=log_jacobian - log_prob_choice + log_r,
        log_jacobian=log_jacobian,
        forward=forward,
    )
    return new_state, info


def fixed_log_reverse(forward: Tensor, direction_logit: Tensor) -> Tensor:
    """``log P(v) / 2`` of the directions a step took: the MetFlow authors' reverse model."""
    log_p_plus, log_p_minus = -F.softplus(-direction_logit), -F.softplus(direction_logit)
    return torch.where(forward, log_p_plus, log_p_minus) - math.log(2)


def log_reverse(forward: Tensor, accepted: Tensor, reverse_logits: Tensor) -> Tensor:
    """``log r(v, b)`` of the outcomes a step took (``forward``, ``accepted``: ``(*B,)``),
    under reverse logits ``(4,)`` or ``(*B, 4)``, ordered forward accepted, forward rejected,
    inverse accepted, inverse rejected."""
    outcome = 2 * (~forward).long() + (~accepted).long()
    log_probs = torch.log_softmax(reverse_logits, -1).expand(*outcome.shape, 4)
    return log_probs.gather(-1, outcome.unsqueeze(-1)).squeeze(-1)


def fixed_reverse_logits(direction_logit: float, steps: int) -> Tensor:
    """Reverse-model logits ``(steps, 4)`` equal to the authors' ``P(v) / 2`` at a direction
    logit: a learned reverse model's start, where its bound is the fixed one's."""
    log_p_plus, log_p_minus = (
        -math.log1p(math.exp(-direction_logit)),
        -math.log1p(math.exp(direction_logit)),
    )
    row = torch.tensor([log_p_plus, log_p_plus, log_p_minus, log_p_minus]) - math.log(2)
    return row.expand(steps, 4).clone()


METFLOW = MarkovKernel(metflow_init, metflow_step, uses_gradient=False, invariant=True)
