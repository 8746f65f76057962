"""Langevin kernels of the Monte Carlo VAE: ULA with its backward kernel, and MALA."""

__all__ = ["LangevinInfo", "LangevinState", "mala_step", "ula_step"]

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from pyroext.kernels.acceptance import accept, log_acceptance

ValueAndGrad = Callable[[Tensor], tuple[Tensor, Tensor]]


class LangevinState(NamedTuple):
    """State of a batch of Langevin chains.

    Fields:
        position: Positions ``(B, D)``.
        log_density: Log target at ``position``, ``(B,)``.
        grad: Its gradient, ``(B, D)``.
    """

    position: Tensor
    log_density: Tensor
    grad: Tensor


class LangevinInfo(NamedTuple):
    """What one Langevin step did, per chain.

    Fields:
        log_weight_increment: ULA: ``log r(z | z') - log m(z' | z)``, the backward over the
            forward kernel density, added to the sequential importance log-weight. MALA: 0
            (in AIS the MH-corrected kernel's densities cancel).
        accepted: MALA: ``True`` where the proposal was accepted; ULA: all ``True``.
        acceptance_prob: MALA's acceptance probability (ULA: the one MALA would have had),
            detached; a step-size diagnostic.
        log_prob_choice: MALA: ``log alpha`` or ``log(1 - alpha)``; ULA: 0.
    """

    log_weight_increment: Tensor
    accepted: Tensor
    acceptance_prob: Tensor
    log_prob_choice: Tensor


def _log_transition(to: Tensor, start: LangevinState, step_size: Tensor) -> Tensor:
    """``log N(to; start + eta grad, 2 eta I)`` summed over the last dimension."""
    mean = start.position + step_size * start.grad
    variance = 2 * step_size
    dim = to.shape[-1]
    return -0.5 * ((to - mean) ** 2).sum(-1) / variance - 0.5 * dim * torch.log(
        2 * math.pi * variance
    )


def _propose(
    state: LangevinState, value_and_grad: ValueAndGrad, step_size: Tensor
) -> tuple[LangevinState, Tensor, Tensor]:
    noise = torch.randn_like(state.position)
    position = state.position + step_size * state.grad + (2 * step_size).sqrt() * noise
    proposal = LangevinState(position, *value_and_grad(position))
    forward = _log_transition(position, state, step_size)
    backward = _log_transition(state.position, proposal, step_size)
    return proposal, forward, backward


def ula_step(
    state: LangevinState, value_and_grad: ValueAndGrad, step_size: Tensor
) -> tuple[LangevinState, LangevinInfo]:
    """One unadjusted Langevin step, ``z' = z + eta grad log gamma(z) + sqrt(2 eta) xi``.

    Fully reparameterised. The backward kernel is the same Langevin kernel run from ``z'``,
    which the importance weight needs (L-MCVAE).

    Arguments:
        state: Current state.
        value_and_grad: Log target and its gradient at a batch of positions.
        step_size: Step size ``eta`` > 0 (tensor).

    Returns:
        The new state and the step's :class:`LangevinInfo`.

    References:
        | Monte Carlo Variational Auto-Encoders (Thin et al., 2021)
        | https://arxiv.org/abs/2106.15921
    """
    proposal, forward, backward = _propose(state, value_and_grad, step_size)
    log_ratio = proposal.log_density - state.log_density + backward - forward
    accepted = torch.ones_like(forward, dtype=torch.bool)
    info = LangevinInfo(
        backward - forward,
        accepted,
        log_acceptance(log_ratio.detach(), "mh")[0].exp(),
        torch.zeros_like(forward),
    )
    return proposal, info


def mala_step(
    state: LangevinState,
    value_and_grad: ValueAndGrad,
    step_size: Tensor,
    acceptance: str = "mh",
) -> tuple[LangevinState, LangevinInfo]:
    """One Metropolis-adjusted Langevin step (A-MCVAE's kernel inside AIS).

    Arguments:
        state: Current state.
        value_and_grad: Log target and its gradient at a batch of positions.
        step_size: Step size ``eta`` > 0 (tensor).
        acceptance: ``"mh"`` or ``"barker"``.

    Returns:
        The new state and the step's :class:`LangevinInfo`.

    References:
        | Exponential convergence of Langevin distributions and their discrete
        | approximations (Roberts and Tweedie, 1996)
        | https://doi.org/10.2307/3318418
    """
    proposal, forward, backward = _propose(state, value_and_grad, step_size)
    log_ratio = proposal.log_density - state.log_density + backward - forward
    log_accept, log_reject = log_acceptance(log_ratio, acceptance)
    accepted = accept(log_accept)
    keep = accepted.unsqueeze(-1)
    new_state = LangevinState(
        torch.where(keep, proposal.position, state.position),
        torch.where(accepted, proposal.log_density, state.log_density),
        torch.where(keep, proposal.grad, state.grad),
    )
    info = LangevinInfo(
        torch.zeros_like(forward),
        accepted,
        log_accept.detach().exp(),
        torch.where(accepted, log_accept, log_reject),
    )
    return new_state, info
