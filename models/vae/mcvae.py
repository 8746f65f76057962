"""Monte Carlo VAEs: Langevin steps per image inside the amortised guide.

:class:`LangevinVAE` is L-MCVAE (unadjusted steps, sequential importance weights) and
:class:`AnnealedVAE` A-MCVAE (MALA steps, annealed importance weights).

L-MCVAE:
The encoder's ``q0(z | x)`` draws ``z_0``; ``K`` unadjusted Langevin steps then move it towards
annealed targets ``gamma_k(z) = (1 - beta_k) log q0(z | x) + beta_k log p(x, z)`` with
``beta_K = 1``. The guide emits ``z_0`` as an auxiliary site (its ``-log q0`` enters the ELBO)
and ``z = z_K`` as a ``Delta`` whose log-density is ``sum_k log m_k(z_k | z_{k-1}) -
log r_k(z_{k-1} | z_k)``, the ULA forward over backward kernel densities. ``Trace_ELBO`` then
estimates the sequential-importance bound ``E[log p(x, z_K) - log q0(z_0) + sum_k log r_k /
m_k]``, whose weights are unbiased for ``p(x)``. Everything is reparameterised; the gradients of
the targets keep their graph, so the encoder, decoder, step sizes and annealing schedule are
trained together.
"""

__all__ = ["AnnealedVAE", "LangevinVAE"]

from collections.abc import Callable

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor, nn

from pyroext.checks import check_counts
from pyroext.guides.score import reward_to_go_score_term
from pyroext.kernels import LangevinState, mala_step, ula_step, value_and_grad
from pyroext.models.vae.model import VAE, check_batch, data_plate


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


class LangevinVAE(VAE):
    """A :class:`~pyroext.models.vae.VAE` whose guide runs ``K`` ULA steps per image.

    Arguments:
        encoder: Maps ``x`` to ``(mu, sigma)`` of ``q0``.
        decoder: Maps ``z`` to pixel logits.
        latent_dim: Size of ``z``.
        num_steps: ``K`` >= 1.
        step_size: Initial ``eta_k``, in ``(0, eta_max)``.
        eta_max: Upper bound of the learned step sizes.

    Raises:
        ValueError: For ``num_steps < 1`` or a step size outside ``(0, eta_max)``.

    References:
        Thin, A., Kotelevskii, N., Durmus, A., Panov, M., Moulines, E. and Doucet, A. (2021).
        Monte Carlo variational auto-encoders. ICML.
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

    def guide(self, x: Tensor, num_data: int | None = None) -> None:
        """``z_0 ~ q0(z | x)``, then ``K`` ULA steps; emits ``z_0`` and ``z = z_K``."""
        check_batch(x, num_data)
        pyro.module("encoder", self.encoder, update_module_params=True)
        pyro.module("schedule", self.schedule, update_module_params=True)
        loc, scale = self.encoder(x)
        base = dist.Normal(loc, scale).to_event(1)
        with data_plate(x, num_data):
            z0 = pyro.sample("z0", base, infer={"is_auxiliary": True})
            z, log_density = self._transport(x, z0, base)
            pyro.sample("z", dist.Delta(z, log_density=log_density, event_dim=1))

    def _transport(self, x: Tensor, z0: Tensor, base: dist.Distribution) -> tuple[Tensor, Tensor]:
        """Runs the ULA steps; returns ``z_K`` and ``sum_k log m_k - log r_k``."""
        target = _AnnealedTarget(self, x, base)
        z, log_density = z0, torch.zeros(z0.shape[:-1], dtype=z0.dtype, device=z0.device)
        etas, betas = self.schedule.step_sizes(), self.schedule.betas()
        for eta, beta in zip(etas.to(z0.dtype), betas.to(z0.dtype), strict=True):
            at_beta = target.at(beta)
            state, info = ula_step(LangevinState(z, *at_beta(z)), at_beta, eta)
            z, log_density = state.position, log_density - info.log_weight_increment
        return z, log_density


class _AnnealedTarget:
    """``(1 - beta) log q0(z | x) + beta log p(x, z)`` and its gradient, from the two terms
    and their gradients at the last position scored. A position is scored once: the next
    temperature, and the AIS weight, reuse its terms instead of new network passes."""

    def __init__(self, vae: VAE, x: Tensor, base: dist.Distribution) -> None:
        self.vae, self.x, self.base = vae, x, base
        self.position: Tensor | None = None
        self.terms: tuple[Tensor, ...] = ()

    def log_q_and_p(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """``log q0(z | x)`` and ``log p(x, z)``."""
        log_q, log_p, _, _ = self._terms(z)
        return log_q, log_p

    def at(self, beta: Tensor) -> Callable[[Tensor], tuple[Tensor, Tensor]]:
        """The target at temperature ``beta``, as a value-and-gradient function."""

        def value_and_grad(z: Tensor) -> tuple[Tensor, Tensor]:
            log_q, log_p, grad_q, grad_p = self._terms(z)
            return (1 - beta) * log_q + beta * log_p, (1 - beta) * grad_q + beta * grad_p

        return value_and_grad

    def _terms(self, z: Tensor) -> tuple[Tensor, ...]:
        if z is not self.position:
            log_q, grad_q = value_and_grad(self.base.log_prob, z)
            log_p, grad_p = value_and_grad(lambda v: self.vae.log_joint(self.x, v), z)
            self.position, self.terms = z, (log_q, log_p, grad_q, grad_p)
        return self.terms


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
        Thin, A., Kotelevskii, N., Durmus, A., Panov, M., Moulines, E. and Doucet, A. (2021).
        Monte Carlo variational auto-encoders. ICML.
        Neal, R. M. (2001). Annealed importance sampling. Statistics and Computing 11.
    """

    def _transport(self, x: Tensor, z0: Tensor, base: dist.Distribution) -> tuple[Tensor, Tensor]:
        """Runs the MALA steps; returns ``z_K`` and the Delta's log-density."""
        target = _AnnealedTarget(self, x, base)
        etas = self.schedule.step_sizes().to(z0.dtype)
        betas = self.schedule.betas().to(z0.dtype) * len(etas) / (len(etas) + 1)
        log_q, log_p = target.log_q_and_p(z0)
        log_ratio = log_p - log_q
        log_weight = betas[0] * log_ratio
        next_betas = torch.cat([betas[1:], betas.new_ones(1)])
        z, rewards, references, choices = z0, [], [], []
        for eta, beta, next_beta in zip(etas, betas, next_betas, strict=True):
            at_beta = target.at(beta)
            state, info = mala_step(LangevinState(z, *at_beta(z)), at_beta, eta)
            z, choices = state.position, [*choices, info.log_prob_choice]
            # What this step's choice can change: the weight's terms from z_k on, against
            # their value had the chain stopped at z_{k-1}.
            references.append((1 - beta) * log_ratio)
            log_q, log_p = target.log_q_and_p(z)
            log_ratio = log_p - log_q
            rewards.append((next_beta - beta) * log_ratio)
            log_weight = log_weight + rewards[-1]
        log_density = log_p - base.log_prob(z0) - log_weight
        return z, log_density - reward_to_go_score_term(rewards, choices, references)
