"""Score-function (REINFORCE) terms for discrete choices made inside a guide, DiCE style."""

__all__ = ["leave_one_out_baseline", "reward_to_go_score_term", "score_function_term"]

from collections.abc import Sequence

import torch
from torch import Tensor


def score_function_term(elbo: Tensor, log_prob_choices: Tensor, baseline: Tensor) -> Tensor:
    """A zero-valued term whose gradient is ``(elbo - baseline) * grad log_prob_choices``.

    Subtracted from a guide's log density, it adds the REINFORCE gradient of the discrete
    choices to the ELBO's gradient without changing its value; Pyro's own score weight would
    omit the guide's auxiliary terms from ``elbo``.

    Arguments:
        elbo: Per-particle ELBO integrand ``log p - log q`` (its gradient is not used).
        log_prob_choices: Log-probability of the discrete choices, per particle.
        baseline: Control variate, independent of the particle's own choices.

    Returns:
        Zeros shaped like ``elbo``, carrying the gradient.

    References:
        | DiCE: The Infinitely Differentiable Monte Carlo Estimator (Foerster et al., 2018)
        | https://arxiv.org/abs/1802.05098
    """
    return (elbo - baseline).detach() * (log_prob_choices - log_prob_choices.detach())


def leave_one_out_baseline(elbo: Tensor, reference: Tensor | None = None) -> Tensor:
    """Baselines for per-draw ELBOs, shaped ``(P, B)`` (particles of amortised chains) or
    ``(B,)`` (particles of global chains, or one particle of amortised ones).

    Draw ``i`` gets ``reference_i`` plus the mean of ``elbo - reference`` over the other
    draws: over the other particles of the same image when there are several, else over the
    other entries of the batch (the batch's other images, or a global guide's other
    particles). The reference absorbs what differs between draws before any choice
    is made (an image's ELBO under the chain's start, say, which varies by tens of nats
    between images); it must not depend on the choices themselves.

    Arguments:
        elbo: Per-draw ELBO integrands (detached here).
        reference: Per-draw values fixed before the choices, or ``None`` for zero.

    Returns:
        Detached baselines shaped like ``elbo`` (zeros when there is a single draw).
    """
    reference = torch.zeros_like(elbo) if reference is None else reference.detach()
    residual = elbo.detach() - reference
    axis = 0 if residual.dim() > 1 and residual.shape[0] > 1 else -1
    count = residual.shape[axis]
    if count < 2:
        return reference
    return reference + (residual.sum(axis, keepdim=True) - residual) / (count - 1)


def reward_to_go_score_term(
    rewards: Sequence[Tensor],
    log_probs: Sequence[Tensor],
    references: Sequence[Tensor] | None = None,
) -> Tensor:
    """The score term of a chain's discrete choices, each credited only with what follows it.

    When the ELBO integrand is ``r_0 + sum_k r_k``, with ``r_k`` fixed once step ``k``'s choices
    are made, step ``k``'s choices cannot change ``r_j`` for ``j < k``: their REINFORCE weight
    is the reward to go ``G_k = sum_{j >= k} r_j``, minus a baseline
    (:func:`leave_one_out_baseline` of ``G_k`` around ``references[k]``). Dropping the earlier
    rewards keeps the gradient unbiased and removes their noise; over ``K`` steps of a
    50-dimensional chain, that noise swamps the signal.

    Arguments:
        rewards: ``r_1, ..., r_K``, each shaped like the per-draw ELBO.
        log_probs: Log-probabilities of each step's choices, same shapes.
        references: Per step, a value fixed before its choices (e.g. the reward to go had the
            chain stopped), or ``None``.

    Returns:
        Zeros shaped like one reward, carrying the gradient.
    """
    to_go = torch.stack(list(rewards)).flip(0).cumsum(0).flip(0)
    term = torch.zeros_like(to_go[0])
    for step, log_prob in enumerate(log_probs):
        reference = None if references is None else references[step]
        baseline = leave_one_out_baseline(to_go[step], reference)
        term = term + score_function_term(to_go[step], log_prob, baseline)
    return term
