"""Two teaching points about VAE estimators, made measurable.

1. The ELBO has two common Monte Carlo estimators with the same expectation: (A) the plain
   ``log p(x, z) - log q(z | x)`` at one draw, and (B) the analytic ``-KL(q(z | x) || p(z))``
   plus the one-draw reconstruction term ``log p(x | z)``. B removes the noise of the prior and
   entropy terms, so its variance is lower while ``q`` is far from the posterior; as ``q``
   approaches it, A's ``log p(x, z) - log q(z | x)`` tends to the constant ``log p(x)`` and A's
   variance falls below B's (the reason "sticking the landing" drops the score term).
2. The ELBO's gradient with respect to the encoder has a reparameterised (pathwise) estimator
   and a score-function (REINFORCE) one; both are unbiased, the score function's variance is
   far larger.

Both are computed here with Pyro's own ELBOs (``Trace_ELBO`` for A, ``TraceMeanField_ELBO``
for B; REINFORCE by turning off ``has_rsample`` on the guide's site), one particle per draw.

References:
    Kingma, D. P. and Welling, M. (2014). Auto-encoding variational Bayes. ICLR (estimators A
    and B are their SGVB estimators 1 and 2).
    Roeder, G., Wu, Y. and Duvenaud, D. (2017). Sticking the landing: simple, lower-variance
    gradient estimators for variational inference. NeurIPS.
    Williams, R. J. (1992). Simple statistical gradient-following algorithms for connectionist
    reinforcement learning. Machine Learning 8.
"""

__all__ = ["ESTIMATORS", "GRADIENTS", "elbo_estimates", "encoder_gradients"]

from collections.abc import Callable

import pyro
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from torch import Tensor

from pyroext.checks import check_counts
from pyroext.models.vae.model import VAE

ESTIMATORS = ("monte-carlo", "analytic-kl")
GRADIENTS = ("reparameterised", "score-function")


@torch.no_grad()
def elbo_estimates(vae: VAE, x: Tensor, estimator: str, num: int) -> Tensor:
    """``num`` independent one-draw estimates of the ELBO of the batch ``x`` (summed over images).

    Arguments:
        vae: The VAE.
        x: Images ``(B, D)``.
        estimator: ``"monte-carlo"`` (A) or ``"analytic-kl"`` (B).
        num: Number of estimates, >= 1.

    Returns:
        ``(num,)`` estimates.

    Raises:
        ValueError: For an unknown estimator or ``num < 1``.
    """
    _check(estimator, ESTIMATORS, "estimator", num)
    elbo = Trace_ELBO() if estimator == "monte-carlo" else TraceMeanField_ELBO()
    return torch.tensor([-elbo.loss(vae.model, vae.guide, x) for _ in range(num)])


def encoder_gradients(vae: VAE, x: Tensor, estimator: str, num: int) -> Tensor:
    """``num`` independent one-draw estimates of the gradient of the ELBO of ``x`` with respect
    to the encoder's parameters, flattened.

    Arguments:
        vae: The VAE.
        x: Images ``(B, D)``.
        estimator: ``"reparameterised"`` or ``"score-function"``.
        num: Number of estimates, >= 1.

    Returns:
        ``(num, P)`` gradients of the ELBO (not of the loss).

    Raises:
        ValueError: For an unknown estimator or ``num < 1``.
    """
    _check(estimator, GRADIENTS, "estimator", num)
    guide = vae.guide if estimator == "reparameterised" else _without_rsample(vae.guide)
    parameters = list(vae.encoder.parameters())
    rows = []
    for _ in range(num):
        with poutine.block():
            loss = Trace_ELBO().differentiable_loss(vae.model, guide, x)
        grads = torch.autograd.grad(-loss, parameters)
        rows.append(torch.cat([g.reshape(-1) for g in grads]))
    return torch.stack(rows)


def _without_rsample(guide: Callable[..., None]) -> Callable[..., None]:
    """The guide with its sites drawn without reparameterisation, so that Pyro's ELBO uses the
    score-function (REINFORCE) gradient for them."""

    def score_function_guide(*args: object, **kwargs: object) -> None:
        with _NoRsample():
            guide(*args, **kwargs)

    return score_function_guide


class _NoRsample(pyro.poutine.messenger.Messenger):
    def _pyro_sample(self, msg: dict) -> None:
        if msg["is_observed"]:
            return
        fn = msg["fn"]
        while isinstance(fn, torch.distributions.Independent):  # has_rsample is its base's
            fn = fn.base_dist
        fn.has_rsample_(False)


def _check(value: str, valid: tuple[str, ...], name: str, num: int) -> None:
    if value not in valid:
        raise ValueError(f"{name}={value!r} must be one of {', '.join(valid)}")
    check_counts(num=num)
