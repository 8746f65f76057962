"""One chain runner per kernel family: ``K`` steps from a batch of base draws, and the
extended-space bookkeeping that the guides' densities and score terms need.

Global guides (:class:`~pyroext.guides.AutoMarkovGuide`) and amortised ones
(:class:`~pyroext.guides.AmortisedMarkovGuide`) call the same runners, so the bookkeeping that
the exact tests certify lives here once.
"""

__all__ = ["Chain", "hamiltonian_chain", "langevin_chain", "metflow_chain"]

import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor

from pyroext.kernels.annealing import AnnealedTarget
from pyroext.kernels.base import Info, LogDensity, stack_infos
from pyroext.kernels.coupling import Bijection
from pyroext.kernels.hamiltonian import dais_step, hamiltonian_init
from pyroext.kernels.langevin import langevin_init, mala_step, ula_step
from pyroext.kernels.metflow import fixed_log_reverse, log_reverse, metflow_init, metflow_step


class Chain(NamedTuple):
    """What ``K`` steps did to a batch of chains with batch shape ``B``.

    Fields:
        state: The kernel's final state; ``state.position`` is ``z_K``, ``(*B, D)``.
        info: Every step's :class:`~pyroext.kernels.Info`, fields stacked to ``(*B, K)``.
        log_density: ``log q(z_0, aux, z_K) - log r(aux | z_K) - log q_0(z_0)``, the
            extended-space log density beyond the base, ``B``.
        rewards: Per step, what it adds to the log importance weight, ``(*B, K)``: the
            weights of the score term of the steps' discrete choices (``None`` for kernels
            without any).
        references: Per step, a value fixed before its choices that the score term's baseline
            is centred on, ``(*B, K)``, or ``None`` for zero.
    """

    state: Any
    info: Info
    log_density: Tensor
    rewards: Tensor | None = None
    references: Tensor | None = None


def metflow_chain(
    position: Tensor,
    target: LogDensity,
    moves: Sequence[tuple[Bijection, Bijection]],
    direction_logit: Tensor,
    acceptance: str,
    reverse_logits: Tensor | Callable[[Tensor], Tensor] | None = None,
) -> Chain:
    """``len(moves)`` MetFlow steps (see :func:`~pyroext.kernels.metflow_step`).

    The reward of step ``k`` telescopes the bound: ``log gamma(z_k) - log gamma(z_{k-1})`` plus
    the step's ``log_weight_increment`` (Jacobian, choices, reverse model). A reverse model
    conditioned on the final state, ``r(v, b | z_K)``, is evaluated once the chain has run;
    every step's choices move ``z_K``, so its terms join the last step's reward, which every
    step's reward to go holds.

    Arguments:
        position: Base draws ``z_0``, ``(*B, D)``.
        target: The unnormalised log target.
        moves: Per step, the flow and its inverse (:func:`~pyroext.kernels.whitened_moves`).
        direction_logit: Logit of proposing the forward map.
        acceptance: ``"barker"`` or ``"mh"``.
        reverse_logits: Per step, the reverse model's logits ``(K, 4)`` (see
            :func:`~pyroext.kernels.metflow_step`); a map from ``z_K`` to logits
            ``(*B, K, 4)``; or ``None`` for the authors' fixed one.

    Returns:
        The :class:`Chain`; ``state.log_density`` is the target at ``z_K``.
    """
    conditional = callable(reverse_logits)
    state = metflow_init(position, target)
    infos, rewards = [], []
    for step, (forward, inverse) in enumerate(moves):
        start = state.log_density
        reverse = None if reverse_logits is None or conditional else reverse_logits[step]
        state, info = metflow_step(
            state, target, forward, inverse, direction_logit, acceptance, reverse
        )
        infos.append(info)
        rewards.append(state.log_density - start + info.log_weight_increment)
    info, rewards = stack_infos(infos), torch.stack(rewards, -1)
    if conditional:
        correction = _conditional_reverse(info, direction_logit, reverse_logits(state.position))
        info = info._replace(log_weight_increment=info.log_weight_increment + correction)
        rewards = torch.cat([rewards[..., :-1], rewards[..., -1:] + correction.sum(-1, True)], -1)
    return Chain(state, info, -info.log_weight_increment.sum(-1), rewards)


def _conditional_reverse(info: Info, direction_logit: Tensor, logits: Tensor) -> Tensor:
    """Per step ``(*B, K)``, ``log r(v_k, b_k | z_K)`` less the fixed ``log P(v_k) / 2`` that
    the steps were run with."""
    fixed = fixed_log_reverse(info.forward, direction_logit)
    return log_reverse(info.forward, info.accepted, logits) - fixed


def langevin_chain(
    position: Tensor,
    target: AnnealedTarget,
    step_sizes: Tensor,
    betas: Tensor,
    acceptance: str | None = None,
) -> Chain:
    """``K`` Langevin steps on the annealed targets ``gamma_{beta_k}``, ``k = 1..K``.

    Unadjusted steps (``acceptance=None``, L-MCVAE) weigh the chain by sequential importance
    sampling, ``log w = log p(z_K) - log q_0(z_0) + sum_k log r_k / m_k``, which holds for any
    ``beta``. MALA steps (A-MCVAE) leave each ``gamma_{beta_k}`` invariant and weigh it by AIS,
    ``log w = sum_{k=0}^{K} (beta_{k+1} - beta_k) [log p(z_k) - log q_0(z_k)]`` with
    ``beta_0 = 0``, ``beta_{K+1} = 1``; step ``k``'s accept choice then earns the terms from
    ``z_k`` on, against their value had the chain stopped at ``z_{k-1}`` (its reference).

    Arguments:
        position: Base draws ``z_0``, ``(*B, D)``.
        target: The path from ``q_0`` to ``p``.
        step_sizes: ``eta_1..K``.
        betas: ``beta_1..K`` (below 1 for AIS: the last temperature is added).
        acceptance: ``None`` for ULA, ``"mh"`` or ``"barker"`` for MALA.

    Returns:
        The :class:`Chain`.
    """
    step = ula_step if acceptance is None else functools.partial(mala_step, acceptance=acceptance)
    log_q0, log_p = target.log_terms(position)
    z, infos, log_ratios = position, [], [log_p - log_q0]
    for eta, beta in zip(step_sizes, betas, strict=True):
        at_beta = target.at(beta)
        state, info = step(langevin_init(z, at_beta), at_beta, eta)
        z = state.position
        log_q, log_p = target.log_terms(z)
        infos.append(info)
        log_ratios.append(log_p - log_q)
    info = stack_infos(infos)
    if acceptance is None:
        return Chain(state, info, -info.log_weight_increment.sum(-1))
    ratios = torch.stack(log_ratios, -1)
    next_betas = torch.cat([betas[1:], betas.new_ones(1)])
    rewards = (next_betas - betas) * ratios[..., 1:]
    log_weight = betas[0] * ratios[..., 0] + rewards.sum(-1)
    references = (1 - betas) * ratios[..., :-1]
    return Chain(state, info, log_p - log_q0 - log_weight, rewards, references)


def hamiltonian_chain(
    position: Tensor,
    target: AnnealedTarget,
    step_sizes: Tensor,
    betas: Tensor,
    mass: Tensor,
    damping: Tensor,
) -> Chain:
    """``K`` uncorrected Hamiltonian (UHA / DAIS) steps on the annealed targets.

    The momentum starts at ``N(0, diag(mass))``; the weight is the sequential importance one,
    ``log w = log p(z_K) - log q_0(z_0) + sum_k (log N(v_hat_k) - log N(v_{k-1}))``.

    Arguments:
        position: Base draws ``z_0``, ``(*B, D)``.
        target: The path from ``q_0`` to ``p``.
        step_sizes: Leapfrog step sizes ``eta_1..K``.
        betas: ``beta_1..K``, ending at 1.
        mass: Diagonal mass ``(D,)``.
        damping: Momentum damping in [0, 1).

    Returns:
        The :class:`Chain`.
    """
    state = hamiltonian_init(position, target.at(betas[-1]), mass)
    infos = []
    for beta, eta in zip(betas, step_sizes, strict=True):
        state, info = dais_step(state, target.at(beta), eta, mass, damping)
        infos.append(info)
    info = stack_infos(infos)
    return Chain(state, info, -info.log_weight_increment.sum(-1))
