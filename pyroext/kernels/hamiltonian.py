"""Hamiltonian kernels: leapfrog, the uncorrected UHA/DAIS step and MH-corrected HMC."""

__all__ = [
    "DAIS",
    "HMC",
    "HamiltonianState",
    "dais_step",
    "gaussian_momentum_log_prob",
    "hamiltonian_init",
    "hmc_step",
    "leapfrog",
]

import math
from collections.abc import Callable
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

GradFn = Callable[[Tensor], Tensor]


class HamiltonianState(NamedTuple):
    """State of a batch of Hamiltonian chains.

    Fields:
        position: Positions ``(B, D)``.
        momentum: Momenta ``(B, D)``, distributed as ``N(0, diag(mass))`` at equilibrium.
    """

    position: Tensor
    momentum: Tensor


def hamiltonian_init(position: Tensor, target: ValueAndGrad, mass: Tensor) -> HamiltonianState:
    """The state at ``position`` ``(B, D)`` with momenta drawn from ``N(0, diag(mass))``.

    ``target`` is not evaluated: the momentum does not depend on the position (the argument
    keeps the common ``init`` signature).
    """
    del target
    return HamiltonianState(position, torch.randn_like(position) * mass.sqrt())


def gaussian_momentum_log_prob(momentum: Tensor, mass: Tensor) -> Tensor:
    """``log N(momentum; 0, diag(mass))`` summed over the last dimension."""
    return -0.5 * ((momentum**2 / mass) + mass.log() + math.log(2 * math.pi)).sum(-1)


def leapfrog(
    position: Tensor, momentum: Tensor, grad_log_target: GradFn, step_size: Tensor, mass: Tensor
) -> tuple[Tensor, Tensor]:
    """One position-momentum-position leapfrog step (volume preserving, reversible).

    Arguments:
        position: Positions ``(B, D)``.
        momentum: Momenta ``(B, D)``.
        grad_log_target: Gradient of the log target, ``(B, D) -> (B, D)``.
        step_size: Step size, scalar or broadcastable to ``(B, D)``.
        mass: Diagonal mass ``(D,)``; the kinetic energy is ``v^T M^-1 v / 2``.

    Returns:
        ``(position, momentum)`` after the step.
    """
    half = position + 0.5 * step_size * momentum / mass
    momentum = momentum + step_size * grad_log_target(half)
    return half + 0.5 * step_size * momentum / mass, momentum


def _refresh(momentum: Tensor, mass: Tensor, damping: Tensor) -> Tensor:
    noise = torch.randn_like(momentum) * mass.sqrt()
    return damping * momentum + (1 - damping**2).sqrt() * noise


def dais_step(
    state: HamiltonianState,
    target: ValueAndGrad,
    step_size: Tensor,
    mass: Tensor,
    damping: Tensor,
) -> tuple[HamiltonianState, Info]:
    """One uncorrected Hamiltonian step of UHA / differentiable AIS.

    A leapfrog step on the (annealed) target, then a partial momentum refresh
    ``v' = g v_hat + sqrt(1 - g^2) M^{1/2} xi``. No accept/reject: everything is
    reparameterised, and the bound stays valid at any step size through the info's
    ``log_weight_increment``, ``log N(v_hat; 0, M) - log N(v; 0, M)`` with ``v`` the momentum
    before the leapfrog and ``v_hat`` after it (``acceptance_prob`` is 1).

    Arguments:
        state: Current state.
        target: Log target of this step and its gradient, ``(B, D) -> ((B,), (B, D))``;
            only the gradient is used.
        step_size: Leapfrog step size.
        mass: Diagonal mass ``(D,)``.
        damping: Momentum damping ``g`` in [0, 1).

    Returns:
        The new state and the step's :class:`~pyroext.kernels.Info`.

    References:
        | MCMC Variational Inference via Uncorrected Hamiltonian Annealing (Geffner and
        | Domke, 2021)
        | https://arxiv.org/abs/2107.04150

        | Differentiable Annealed Importance Sampling and the Perils of Gradient Noise
        | (Zhang et al., 2021)
        | https://arxiv.org/abs/2107.10211
    """
    position, momentum = leapfrog(
        state.position, state.momentum, lambda z: target(z)[1], step_size, mass
    )
    increment = gaussian_momentum_log_prob(momentum, mass) - gaussian_momentum_log_prob(
        state.momentum, mass
    )
    new_state = HamiltonianState(position, _refresh(momentum, mass, damping))
    return new_state, always_accepted(torch.ones_like(increment), increment)


def hmc_step(
    state: HamiltonianState,
    target: ValueAndGrad,
    step_size: Tensor,
    mass: Tensor,
    damping: Tensor,
    num_leapfrog: int = 1,
    acceptance: str = "mh",
) -> tuple[HamiltonianState, Info]:
    """One generalised (partial-refresh) HMC step with an accept/reject correction.

    The momentum is refreshed partially, ``num_leapfrog`` leapfrog steps propose a new
    position, and the proposal is accepted with the MH or Barker probability of the
    Hamiltonian difference; on rejection the momentum is negated (Horowitz, 1991). The kernel
    leaves ``target x N(0, M)`` invariant for any damping.

    Arguments:
        state: Current state.
        target: Log target and its gradient, ``(B, D) -> ((B,), (B, D))``.
        step_size: Leapfrog step size.
        mass: Diagonal mass ``(D,)``.
        damping: Momentum damping ``g`` in [0, 1); 0 is a full refresh.
        num_leapfrog: Leapfrog steps per proposal, >= 1.
        acceptance: ``"mh"`` or ``"barker"``.

    Returns:
        The new state and the step's :class:`~pyroext.kernels.Info`.

    References:
        | A generalized guided Monte Carlo algorithm (Horowitz, 1991)
        | https://doi.org/10.1016/0370-2693(91)90812-5
    """
    momentum = _refresh(state.momentum, mass, damping)
    position, proposal_momentum = state.position, momentum
    for _ in range(num_leapfrog):
        position, proposal_momentum = leapfrog(
            position, proposal_momentum, lambda z: target(z)[1], step_size, mass
        )
    log_ratio = (
        target(position)[0]
        - target(state.position)[0]
        + gaussian_momentum_log_prob(proposal_momentum, mass)
        - gaussian_momentum_log_prob(momentum, mass)
    )
    log_accept, log_reject = log_acceptance(log_ratio, acceptance)
    accepted = accept(log_accept)
    keep = accepted.unsqueeze(-1)
    new_state = HamiltonianState(
        torch.where(keep, position, state.position),
        torch.where(keep, proposal_momentum, -momentum),
    )
    return new_state, corrected(accepted, log_accept, log_reject)


DAIS = MarkovKernel(hamiltonian_init, dais_step, uses_gradient=True, invariant=False)
HMC = MarkovKernel(hamiltonian_init, hmc_step, uses_gradient=True, invariant=True)
