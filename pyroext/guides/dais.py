"""AutoDAIS: a Gaussian guide enriched by uncorrected Hamiltonian annealing (UHA / DAIS)."""

__all__ = ["AutoDAIS"]

import math
from collections.abc import Callable
from typing import Any

import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.infer.autoguide.initialization import init_to_median
from pyro.nn import PyroParam
from torch import Tensor, nn

from pyroext.guides.markov import AutoMarkovGuide
from pyroext.guides.transport import Transport
from pyroext.kernels import AnnealedTarget, hamiltonian_chain


class AutoDAIS(AutoMarkovGuide):
    r"""Differentiable annealed importance sampling guide (UHA / DAIS), as NumPyro's ``AutoDAIS``.

    ``z_0 ~ q_0``, momentum ``v_0 ~ N(0, M)``, then for ``k = 1..K`` a leapfrog step on
    ``gamma_k = q_0^{1 - beta_k} p^{beta_k}`` followed by a partial momentum refresh with
    damping ``gamma``. All of it is reparameterised and there is no accept/reject, so the
    bound

    .. math:: \mathcal{L} = \mathbb{E}\Big[\log p(x, z_K) - \log q_0(z_0)
              + \sum_k \big(\log N(\hat v_k; 0, M) - \log N(v_{k-1}; 0, M)\big)\Big]

    holds at any step size and is trained by plain SVI. The options and the learned quantities
    (``gamma``, ``beta_increments``, ``mass_matrix``) follow NumPyro's ``AutoDAIS``, with four
    differences:

    - the leapfrog runs in ``q_0``'s whitened coordinates ``A^-1 (z - loc)`` (``A`` its scale
      or scale-tril), so step sizes are in units of ``q_0``'s scale and a narrow base takes
      proportionally small steps (in raw coordinates, ``init_scale=1e-4`` sent the draws of a
      standard normal target to sd 35);
    - the step sizes are ``eta_k = eta_max * sigmoid(eta_logit0 + eta_logit_coeff * beta_k)``
      rather than NumPyro's ``clip(eta0 + eta_coeff * beta_k, 0, eta_max)``: positive, below
      ``eta_max`` without a hard cap, and learned in log units near 0, where the clip had no
      gradient left and a step that reached 0 stayed there. ``eta_init=0.1`` keeps the first
      leapfrog steps stable while ``q_0`` is still wider than the posterior: with 1, the
      diabetes regression of ``benchmarks/dais_spread.py`` (one particle) diverged from the
      first step, its log weights near -1e8 froze Adam, and the gap ended at 3e5 to 8e6 nats
      against the base's 4.4; the steps then grow to what the bound favours;
    - ``init_loc_fn`` defaults to Pyro's ``init_to_median``;
    - the kinetic energy is the textbook ``v^T M^{-1} v / 2`` with ``v ~ N(0, M)`` (NumPyro
      draws ``v`` with standard deviation ``M`` and drifts by ``0.5 / M``).

    ``torch.jit.trace`` (Pyro's ``JitTrace_ELBO``) cannot record the leapfrog's gradient for
    a model with constrained latents; such a call raises an error saying so.

    Arguments:
        model: A Pyro model with continuous latents and no data subsampling.
        K: Number of annealing steps, >= 0.
        base_dist: ``"diagonal"`` or ``"cholesky"``.
        eta_init: Initial step size in units of ``q_0``'s scale, in (0, eta_max).
        eta_max: Largest step size in units of ``q_0``'s scale, > 0.
        gamma_init: Initial momentum damping, in (0, 1).
        init_loc_fn: Per-site initialisation of the base mean.
        init_scale: Initial base standard deviation, > 0.
        base_training: ``"joint"`` (the default: the base trained with the steps, as in the
            DAIS paper) or ``"own"``; see :class:`~pyroext.guides.AutoMarkovGuide`.
        base_flow: ``None``, ``"iaf"`` or ``"spline"``: flow layers in the base (see
            :class:`~pyroext.guides.AutoMarkovGuide`); the annealing path then starts from
            the base's Gaussian part (:meth:`gaussian_part`).
        base_flow_layers: Number of flow layers, >= 1.
        compile_target: Evaluate the target compiled (see
            :class:`~pyroext.guides.AutoMarkovGuide`): ``"auto"``, ``True`` or ``False``.

    Attributes:
        sample_stats: Per-draw diagnostics of the last call: ``step_size`` (``(B, K)``) and
            ``log_weight`` (``log p - log q``, whose mean is the bound).

    References:
        | MCMC Variational Inference via Uncorrected Hamiltonian Annealing (Geffner and
        | Domke, 2021)
        | https://arxiv.org/abs/2107.04150

        | Differentiable Annealed Importance Sampling and the Perils of Gradient Noise
        | (Zhang et al., 2021)
        | https://arxiv.org/abs/2107.10211
    """

    def __init__(
        self,
        model: Callable[..., Any],
        *,
        K: int = 4,
        base_dist: str = "diagonal",
        eta_init: float = 0.1,
        eta_max: float = 10.0,
        gamma_init: float = 0.9,
        init_loc_fn: Callable[..., Tensor] = init_to_median,
        init_scale: float = 0.1,
        base_training: str = "joint",
        base_flow: str | None = None,
        base_flow_layers: int = 1,
        compile_target: bool | str = "auto",
    ) -> None:
        _check_options(eta_init, eta_max, gamma_init)
        super().__init__(
            model,
            K=K,
            base_dist=base_dist,
            init_loc_fn=init_loc_fn,
            init_scale=init_scale,
            base_training=base_training,
            base_flow=base_flow,
            base_flow_layers=base_flow_layers,
            compile_target=compile_target,
        )
        self.eta_init = float(eta_init)
        self.eta_max = float(eta_max)
        self.gamma_init = float(gamma_init)

    @property
    def sample_stats_attrs(self) -> dict[str, float]:
        """Attributes of the exported ``sample_stats`` group: the step sizes' cap, by which
        ``pyroext diagnose`` tells a step size sitting at it."""
        return {"step_size_max": self.eta_max}

    def _setup_kernel(self) -> None:
        like = {"dtype": self.loc.dtype, "device": self.loc.device}
        logit = math.log(self.eta_init / (self.eta_max - self.eta_init))
        self.eta_logit0 = nn.Parameter(torch.tensor(logit, **like))
        self.eta_logit_coeff = nn.Parameter(torch.tensor(0.0, **like))
        self.gamma = PyroParam(
            torch.tensor(self.gamma_init, **like), constraints.interval(0.0, 1.0)
        )
        self.beta_increments = PyroParam(torch.ones(self.K, **like), constraints.positive)
        self.mass_matrix = PyroParam(torch.ones(self.latent_dim, **like), constraints.positive)

    def schedule(self) -> tuple[Tensor, Tensor]:
        """The annealing schedule ``beta_1..K`` (ending at 1) and the step sizes ``eta_1..K``."""
        betas = self.beta_increments.cumsum(0) / self.beta_increments.sum()
        logits = self.eta_logit0 + self.eta_logit_coeff * betas
        return betas, self.eta_max * torch.sigmoid(logits)

    def _transport(
        self,
        z0: Tensor,
        log_q0: Tensor,
        base: dist.Distribution,
        log_joint: Callable[[Tensor], Tensor],
    ) -> Transport:
        betas, step_sizes = self.schedule()
        # The weight holds no intermediate density, so any path gives a valid bound; with a
        # flow base it starts from the Gaussian part, which is cheap and smooth far from the
        # base's draws, where an inverted autoregressive flow is neither.
        start = self.gaussian_part()
        target = AnnealedTarget(
            lambda white: start.log_prob(self._unwhiten(white)),
            lambda white: log_joint(self._unwhiten(white)),
        )
        chain = hamiltonian_chain(
            self._whiten(z0), target, step_sizes, betas, self.mass_matrix, self.gamma
        )
        stats = {"step_size": step_sizes.detach().expand(z0.shape[0], -1)}
        position = self._unwhiten(chain.state.position)
        return Transport(position, chain.log_density, stats)


def _check_options(eta_init: float, eta_max: float, gamma_init: float) -> None:
    if not eta_max > 0:
        raise ValueError(f"eta_max={eta_max!r} must be > 0")
    if not 0 < eta_init < eta_max:
        raise ValueError(f"eta_init={eta_init!r} must be in (0, eta_max={eta_max!r})")
    if not 0 < gamma_init < 1:
        raise ValueError(f"gamma_init={gamma_init!r} must be in (0, 1)")
