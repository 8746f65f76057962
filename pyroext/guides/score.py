"""Score-function (REINFORCE) terms for discrete choices made inside a guide, DiCE style."""

__all__ = [
    "BASELINE_DECAY",
    "ScoreBaseline",
    "leave_one_out_baseline",
    "reward_to_go_score_term",
    "score_function_term",
]

from collections.abc import Sequence

import torch
from torch import Tensor, nn

BASELINE_DECAY = 0.9


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


class ScoreBaseline(nn.Module):
    """Baseline for the score term: leave-one-out over parallel particles, else a running mean.

    With ``B > 1`` particles, particle ``i`` gets the mean ELBO of the others (unbiased, as the
    particles are independent). With one particle per call, an exponential running mean of
    past ELBOs (decay :data:`BASELINE_DECAY`), kept as a buffer so it is checkpointed.
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("running_mean", torch.tensor(float("nan")))

    def forward(self, elbo: Tensor) -> Tensor:
        """Baselines for a batch of per-particle ELBOs ``(B,)``."""
        elbo = elbo.detach()
        if elbo.numel() > 1:
            return (elbo.sum() - elbo) / (elbo.numel() - 1)
        previous = self.running_mean.to(elbo)
        if torch.is_grad_enabled():
            current = elbo.mean()
            fresh = torch.isnan(previous)
            updated = BASELINE_DECAY * previous + (1 - BASELINE_DECAY) * current
            self.running_mean = torch.where(fresh, current, updated)
        return torch.where(torch.isnan(previous), elbo, previous.expand_as(elbo))


def leave_one_out_baseline(elbo: Tensor, reference: Tensor | None = None) -> Tensor:
    """Baselines for per-draw ELBOs of amortised chains, shaped ``(P, B)`` or ``(B,)``.

    Draw ``i`` gets ``reference_i`` plus the mean of ``elbo - reference`` over the other
    draws: over the other particles of the same image when there are several, else over the
    batch's other images. The reference absorbs what differs between draws before any choice
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
