"""The contract every Markov kernel follows: pure ``init`` / ``step`` functions and one ``Info``.

A kernel is a pair of functions, as in BlackJAX:

- ``init(position, target, **params) -> State`` builds the kernel's state (a ``NamedTuple``
  whose first field is ``position``) at a batch of positions ``(B, D)``;
- ``step(state, target, **params) -> (State, Info)`` moves every chain once.

``target`` is the log target ``(B, D) -> (B,)`` for kernels that need no gradient
(:data:`LogDensity`), and its value and gradient for those that do (:data:`ValueAndGrad`).
The kernel draws its own noise from torch's generator, so a seeded run replays exactly. Every
kernel reports the same :class:`Info`, so a chain runner, a guide or a diagnostic reads any
kernel's steps alike.

References:
    | BlackJAX: Composable Bayesian inference in JAX (Cabezas et al., 2024)
    | https://arxiv.org/abs/2402.10797
"""

__all__ = ["Info", "LogDensity", "MarkovKernel", "ValueAndGrad", "stack_infos"]

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor

LogDensity = Callable[[Tensor], Tensor]
ValueAndGrad = Callable[[Tensor], tuple[Tensor, Tensor]]


class Info(NamedTuple):
    """What one step did, per chain; every field has the batch shape ``(B,)``.

    Fields:
        accepted: ``True`` where the chain moved to its proposal (all ``True`` for kernels
            without an accept/reject step).
        acceptance_prob: Probability of accepting the proposal (detached). ULA reports the
            one MALA would have had, a step-size diagnostic; DAIS, which never evaluates the
            target itself, reports 1.
        log_prob_choice: Log-probability of the step's discrete choices (direction, accept
            or reject); 0 for fully reparameterised kernels. A guide's score term
            differentiates it.
        log_weight_increment: The step's term of the sequential importance log-weight
            ``log w = log gamma(z_K) - log q_0(z_0) + sum_k increment_k`` of a chain on a fixed
            target: backward over forward kernel density (ULA), the momentum-density change
            (DAIS), the Jacobian, choice and reverse-model terms (MetFlow). MH-corrected
            kernels without a tractable one (MALA, HMC) report 0: they leave the target
            invariant, and annealed importance sampling weighs them by the targets alone.
        log_jacobian: ``log|det|`` of the deterministic move made (0 where rejected or for
            volume-preserving and stochastic moves).
        forward: ``True`` where the forward map was proposed (MetFlow's ``T`` rather than
            ``T^-1``); all ``True`` for kernels with one direction.
    """

    accepted: Tensor
    acceptance_prob: Tensor
    log_prob_choice: Tensor
    log_weight_increment: Tensor
    log_jacobian: Tensor
    forward: Tensor


def always_accepted(acceptance_prob: Tensor, log_weight_increment: Tensor) -> Info:
    """The :class:`Info` of a step that always moves and makes no discrete choice."""
    zeros = torch.zeros_like(log_weight_increment)
    moved = torch.ones_like(zeros, dtype=torch.bool)
    return Info(moved, acceptance_prob, zeros, log_weight_increment, zeros, moved)


def corrected(accepted: Tensor, log_accept: Tensor, log_reject: Tensor) -> Info:
    """The :class:`Info` of an MH-corrected step of one direction and no Jacobian (MALA, HMC):
    its kernel densities cancel in the weight, so the increment is 0."""
    zeros = torch.zeros_like(log_accept)
    return Info(
        accepted=accepted,
        acceptance_prob=log_accept.detach().exp(),
        log_prob_choice=torch.where(accepted, log_accept, log_reject),
        log_weight_increment=zeros,
        log_jacobian=zeros,
        forward=torch.ones_like(accepted),
    )


def stack_infos(infos: Sequence[Info]) -> Info:
    """The infos of ``K`` steps as one :class:`Info` whose fields are ``(B, K)``."""
    return Info(*(torch.stack(field, -1) for field in zip(*infos, strict=True)))


class MarkovKernel(NamedTuple):
    """A kernel's pure functions and the facts a generic test or runner needs about it.

    Fields:
        init: ``init(position, target, **params) -> State``.
        step: ``step(state, target, **params) -> (State, Info)``.
        uses_gradient: Whether ``target`` is a :data:`ValueAndGrad` (else a
            :data:`LogDensity`).
        invariant: Whether the step leaves the target invariant (MH-corrected kernels); an
            uncorrected kernel is instead valid through its ``log_weight_increment``.
    """

    init: Callable[..., Any]
    step: Callable[..., tuple[Any, Info]]
    uses_gradient: bool
    invariant: bool
