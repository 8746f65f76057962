"""Monte Carlo VAEs: Langevin steps per image inside the amortised guide.

:class:`LangevinVAE` is L-MCVAE (unadjusted steps, sequential importance weights) and
:class:`AnnealedVAE` A-MCVAE (MALA steps, annealed importance weights); both run
:func:`~pyroext.kernels.langevin_chain` on the annealed targets
``gamma_k(z) = (1 - beta_k) log q0(z | x) + beta_k log p(x, z)``.

L-MCVAE:
The encoder's ``q0(z | x)`` draws ``z_0``; ``K`` unadjusted Langevin steps then move it towards
the annealed targets, with ``beta_K = 1``. The guide emits ``z_0`` as an auxiliary site (its
``-log q0`` enters the ELBO) and ``z = z_K`` as a ``Delta`` whose log-density is ``sum_k log
m_k(z_k | z_{k-1}) - log r_k(z_{k-1} | z_k)``, the ULA forward over backward kernel densities.
``Trace_ELBO`` then estimates the sequential-importance bound ``E[log p(x, z_K) - log q0(z_0) +
sum_k log r_k / m_k]``, whose weights are unbiased for ``p(x)``. Everything is reparameterised;
the gradients of the targets keep their graph, so the encoder, decoder, step sizes and
annealing schedule are trained together.
"""

__all__ = ["AnnealedVAE", "LangevinVAE"]

import pyro.distributions as dist
import torch
from torch import Tensor, nn

from pyroext.checks import check_counts
from pyroext.guides.transport import Transport, acceptance_stats
from pyroext.kernels import AnnealedTarget, langevin_chain
from pyroext.models.vae.markov import MarkovVAE


class LangevinSchedule(nn.Module):
    """Learned step sizes ``eta_k = eta_max sigmoid(a_k)`` and annealing ``beta_k =
    cumsum(softplus(b))_k / sum(softplus(b))`` of ``K`` Langevin steps."""

    def __init__(self, num_steps: int, step_size: float, eta_max: float) -> None:
        super().__init__()
        self.eta_max = eta_max
        start = torch.logit(torch.tensor(step_size / eta_max))
        self.raw_step = nn.Parameter(start.expand(num_steps).clone())
        self.raw_beta = nn.Parameter(torch.zeros(num_steps))

    def step_sizes(self) -> Tensor:
        return self.eta_max * torch.sigmoid(self.raw_step)

    def betas(self) -> Tensor:
        increments = nn.functional.softplus(self.raw_beta).cumsum(0)
        return increments / increments[-1]


class LangevinVAE(MarkovVAE):
    """A :class:`~pyroext.models.vae.VAE` whose guide runs ``K`` ULA steps per image.

    Arguments:
        encoder: Maps ``x`` to ``(mu, sigma)`` of ``q0``.
        decoder: Maps ``z`` to pixel logits.
        latent_dim: Size of ``z``.
        num_steps: ``K`` >= 1.
        step_size: Initial ``eta_k``, in ``(0, eta_max)``.
        eta_max: Upper bound of the learned step sizes.

    Attributes:
        sample_stats: Per image, of the last guide call: ``acceptance_rate`` ``(*batch, K)``
            (for ULA, the probability MALA would have accepted each move: a step-size
            diagnostic) and ``accepted``.

    Raises:
        ValueError: For ``num_steps < 1`` or a step size outside ``(0, eta_max)``.

    References:
        | Monte Carlo Variational Auto-Encoders (Thin et al., 2021)
        | https://arxiv.org/abs/2106.15921
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        latent_dim: int,
        *,
        num_steps: int = 5,
        step_size: float = 0.01,
        eta_max: float = 0.1,
    ) -> None:
        check_counts(num_steps=num_steps)
        if not 0 < step_size < eta_max:
            raise ValueError(f"step_size={step_size} must lie in (0, eta_max) = (0, {eta_max})")
        super().__init__(encoder, decoder, latent_dim)
        self.schedule = LangevinSchedule(num_steps, step_size, eta_max)

    # The accept rule of the steps: None for ULA (sequential importance weights).
    acceptance: str | None = None

    def kernel_modules(self) -> dict[str, nn.Module]:
        return {"schedule": self.schedule}

    def _betas(self, like: Tensor) -> Tensor:
        return self.schedule.betas().to(like.dtype)

    def _transport(self, x: Tensor, z0: Tensor, base: dist.Distribution) -> Transport:
        target = AnnealedTarget(base.log_prob, lambda z: self.log_joint(x, z))
        etas = self.schedule.step_sizes().to(z0.dtype)
        chain = langevin_chain(z0, target, etas, self._betas(z0), self.acceptance)
        return Transport.from_chain(chain, acceptance_stats(chain.info))


class AnnealedVAE(LangevinVAE):
    """A-MCVAE: ``K`` MALA steps per image, with annealed importance weights.

    The chain ``z_0 ~ q0(z | x)``, ``z_k = MALA_{gamma_k}(z_{k-1})`` has the AIS log-weight
    ``log w = sum_{k=0}^{K} (beta_{k+1} - beta_k) [log p(x, z_k) - log q0(z_k | x)]`` with
    ``beta_0 = 0`` and ``beta_{K+1} = 1`` (the MH-corrected kernels' densities cancel), so the
    guide's ``z = z_K`` carries the log-density ``log p(x, z_K) - log q0(z_0) - log w``. The
    accept/reject choices are discrete: their score-function gradient enters the same
    log-density DiCE-style, step ``k``'s choice weighted by the weight's terms from ``z_k`` on
    less their value had the chain stopped at ``z_{k-1}``, and the leave-one-out mean of that
    difference over vectorised particles (over the batch's other images with one particle);
    see :func:`~pyroext.guides.score.reward_to_go_score_term`. Same options as
    :class:`LangevinVAE`; the schedule's ``beta_K`` is the last intermediate temperature,
    below 1.

    References:
        | Monte Carlo Variational Auto-Encoders (Thin et al., 2021)
        | https://arxiv.org/abs/2106.15921

        | Annealed Importance Sampling (Neal, 2001)
        | https://arxiv.org/abs/physics/9803008
    """

    def _betas(self, like: Tensor) -> Tensor:
        betas = self.schedule.betas().to(like.dtype)
        return betas * len(betas) / (len(betas) + 1)

    acceptance = "mh"
