"""Langevin kernels of the Monte Carlo VAE: ULA with its backward kernel, and MALA."""

__all__ = ["MALA", "ULA", "LangevinState", "langevin_init", "mala_step", "ula_step"]

import math
from typing import NamedTuple

import torch
from torch import Tensor

from pyroext.kernels.acceptance import accept, log_acceptance
from pyroext.kernels.base import (
    Info,
    MarkovKernel,
    ValueAndGrad,
    always_accepted,
    corrected,
)


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


def langevin_init(position: Tensor, target: ValueAndGrad) -> LangevinState:
    """The state at ``position`` ``(B, D)``: the position, its log target and gradient."""
    return LangevinState(position, *target(position))


def _log_transition(to: Tensor, start: LangevinState, step_size: Tensor) -> Tensor:
    """``log N(to; start + eta grad, 2 eta I)`` summed over the last dimension."""
    mean = start.position + step_size * start.grad
    variance = 2 * step_size
    dim = to.shape[-1]
    return -0.5 * ((to - mean) ** 2).sum(-1) / variance - 0.5 * dim * torch.log(
        2 * math.pi * variance
    )


def _propose(
    state: LangevinState, target: ValueAndGrad, step_size: Tensor
) -> tuple[LangevinState, Tensor, Tensor]:
    noise = torch.randn_like(state.position)
    position = state.position + step_size * state.grad + (2 * step_size).sqrt() * noise
    proposal = langevin_init(position, target)
    forward = _log_transition(position, state, step_size)
    backward = _log_transition(state.position, proposal, step_size)
    return proposal, forward, backward


def ula_step(
    state: LangevinState, target: ValueAndGrad, step_size: Tensor
) -> tuple[LangevinState, Info]:
    """One unadjusted Langevin step, ``z' = z + eta grad log gamma(z) + sqrt(2 eta) xi``.

    Fully reparameterised. The backward kernel is the same Langevin kernel run from ``z'``,
    which the importance weight needs (L-MCVAE): the info's ``log_weight_increment`` is
    ``log r(z | z') - log m(z' | z)``, and its ``acceptance_prob`` the one MALA would have had.

    Arguments:
        state: Current state.
        target: Log target and its gradient at a batch of positions.
        step_size: Step size ``eta`` > 0 (tensor).

    Returns:
        The new state and the step's :class:`~pyroext.kernels.Info`.

    References:
        | Monte Carlo Variational Auto-Encoders (Thin et al., 2021)
        | https://arxiv.org/abs/2106.15921
    """
    proposal, forward, backward = _propose(state, target, step_size)
    log_ratio = proposal.log_density - state.log_density + backward - forward
    acceptance_prob = log_acceptance(log_ratio.detach(), "mh")[0].exp()
    return proposal, always_accepted(acceptance_prob, backward - forward)


def mala_step(
    state: LangevinState,
    target: ValueAndGrad,
    step_size: Tensor,
    acceptance: str = "mh",
) -> tuple[LangevinState, Info]:
    """One Metropolis-adjusted Langevin step (A-MCVAE's kernel inside AIS).

    In AIS the MH-corrected kernel's densities cancel: the info's ``log_weight_increment``
    is 0.

    Arguments:
        state: Current state.
        target: Log target and its gradient at a batch of positions.
        step_size: Step size ``eta`` > 0 (tensor).
        acceptance: ``"mh"`` or ``"barker"``.

    Returns:
        The new state and the step's :class:`~pyroext.kernels.Info`.

    References:
        | Exponential convergence of Langevin distributions and their discrete
        | approximations (Roberts and Tweedie, 1996)
        | https://doi.org/10.2307/3318418
    """
    proposal, forward, backward = _propose(state, target, step_size)
    log_ratio = proposal.log_density - state.log_density + backward - forward
    log_accept, log_reject = log_acceptance(log_ratio, acceptance)
    accepted = accept(log_accept)
    keep = accepted.unsqueeze(-1)
    new_state = LangevinState(
        torch.where(keep, proposal.position, state.position),
        torch.where(accepted, proposal.log_density, state.log_density),
        torch.where(keep, proposal.grad, state.grad),
    )
    return new_state, corrected(accepted, log_accept, log_reject)


ULA = MarkovKernel(langevin_init, ula_step, uses_gradient=True, invariant=False)
MALA = MarkovKernel(langevin_init, mala_step, uses_gradient=True, invariant=True)
