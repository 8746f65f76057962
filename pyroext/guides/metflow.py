"""AutoMetFlow: a Gaussian guide enriched by MetFlow steps (MH moves proposed by a flow)."""

__all__ = ["FLOW_INITS", "AutoMetFlow"]

import math
from collections.abc import Callable
from typing import Any

import pyro.distributions as dist
import torch
from pyro.infer.autoguide.initialization import init_to_median
from torch import Tensor, nn

from pyroext.checks import check_counts
from pyroext.guides.markov import AutoMarkovGuide, Transport
from pyroext.guides.score import ScoreBaseline, score_function_term
from pyroext.kernels import ConditionalCouplingFlow, MetFlowState, metflow_step
from pyroext.kernels.acceptance import ACCEPTANCE_RULES

FLOW_INITS = ("identity", "random")


class AutoMetFlow(AutoMarkovGuide):
    r"""MetFlow guide: ``K`` Metropolis-Hastings steps whose proposal is a learned flow.

    Step ``k`` proposes ``T_{u_k}(z)`` or ``T_{u_k}^{-1}(z)`` (learned direction probability),
    a RealNVP flow conditioned on innovation noise ``u_k`` drawn once at setup (MetFlow's
    "fixed" pseudo-random noise), and accepts it with the Barker or MH probability. Given the
    noise, ``z_0 -> z_K`` is piecewise a diffeomorphism, so the extended-space density is
    exact. The bound is the MetFlow authors' one, with reverse model
    ``r(v, b | z_K) = prod_k P(v_k) / 2``:

    .. math:: \mathcal{L} = \mathbb{E}\Big[\log p(x, z_K) - \log q_0(z_0)
              + \sum_k \log|\det J_k| - \sum_k \log P(b_k \mid v_k, z_{k-1})
              - K \log 2\Big] \le \log p(x).

    The accept/reject and direction choices are not reparameterisable: their REINFORCE
    gradient is added inside the guide's density (see
    :func:`~pyroext.guides.score.score_function_term`), with a leave-one-out baseline over
    vectorised particles (a running mean otherwise).

    Arguments:
        model: A Pyro model with continuous latents and no data subsampling.
        K: Number of MetFlow steps, >= 0.
        acceptance: ``"barker"`` (the authors' choice; smooth score terms) or ``"mh"``.
        num_couplings: Affine coupling layers of the flow, >= 1.
        hidden_dim: Hidden width of the coupling networks (default ``2 D``).
        init_direction_prob: Initial probability of proposing ``T`` rather than ``T^-1``, in
            (0, 1).
        flow_init: ``"identity"`` (the guide starts as its base, and its bound cannot start
            below the base's) or ``"random"`` (PyTorch's default initialisation, as in the
            authors' code: random initial jumps find more modes of a multimodal posterior;
            3.0 instead of 2.0 of 8 modes in ``benchmarks/mode_capturing.py`` at d = 5).
        base_dist: ``"diagonal"`` or ``"cholesky"``.
        init_loc_fn: Per-site initialisation of the base mean.
        init_scale: Initial base standard deviation, > 0.
        compile_target: Evaluate the target compiled (see
            :class:`~pyroext.guides.AutoMarkovGuide`): ``"auto"``, ``True`` or ``False``.

    Attributes:
        sample_stats: Per-draw diagnostics of the last call: ``acceptance_rate`` (``(B, K)``,
            the probability of accepting each step's proposal), ``accepted`` and
            ``log_weight`` (the extended-space ``log p - log q``, whose mean is the bound).

    References:
        | MetFlow: A New Efficient Method for Bridging the Gap between Markov Chain Monte
        | Carlo and Variational Inference (Thin et al., 2020)
        | https://arxiv.org/abs/2002.12253
    """

    def __init__(
        self,
        model: Callable[..., Any],
        *,
        K: int = 5,
        acceptance: str = "barker",
        num_couplings: int = 2,
        hidden_dim: int | None = None,
        init_direction_prob: float = 0.5,
        flow_init: str = "identity",
        base_dist: str = "diagonal",
        init_loc_fn: Callable[..., Tensor] = init_to_median,
        init_scale: float = 0.1,
        compile_target: bool | str = "auto",
    ) -> None:
        if acceptance not in ACCEPTANCE_RULES:
            raise ValueError(
                f"acceptance={acceptance!r} must be one of {', '.join(ACCEPTANCE_RULES)}"
            )
        check_counts(num_couplings=num_couplings)
        if hidden_dim is not None and hidden_dim < 1:
            raise ValueError(f"hidden_dim={hidden_dim!r} must be >= 1 (or None for 2 D)")
        if flow_init not in FLOW_INITS:
            raise ValueError(f"flow_init={flow_init!r} must be one of {', '.join(FLOW_INITS)}")
        if not 0 < init_direction_prob < 1:
            raise ValueError(f"init_direction_prob={init_direction_prob!r} must be in (0, 1)")
        super().__init__(
            model,
            K=K,
            base_dist=base_dist,
            init_loc_fn=init_loc_fn,
            init_scale=init_scale,
            compile_target=compile_target,
        )
        self.acceptance = acceptance
        self.num_couplings = num_couplings
        self.hidden_dim = hidden_dim
        self.init_direction_prob = float(init_direction_prob)
        self.flow_init = flow_init

    def _setup_kernel(self) -> None:
        like = {"dtype": self.loc.dtype, "device": self.loc.device}
        dim = self.latent_dim
        identity = self.flow_init == "identity"
        flow = ConditionalCouplingFlow(dim, dim, self.num_couplings, self.hidden_dim, identity)
        self.flow = flow.to(**like)
        self.register_buffer("innovation", torch.randn(self.K, dim, **like))
        logit = math.log(self.init_direction_prob / (1 - self.init_direction_prob))
        self.direction_logit = nn.Parameter(torch.tensor(logit, **like))
        self.score_baseline = ScoreBaseline()

    def _whitened(
        self, bijection: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]], z: Tensor, u: Tensor
    ) -> tuple[Tensor, Tensor]:
        """``A T(A^-1 (z - loc)) + loc`` with ``A`` the base's scale (or scale-tril).

        Proposals then move on the scale of ``q_0``, which shrinks with the posterior during
        training; a flow in raw coordinates keeps the large moves it learnt early, all of
        them rejected once ``q_0`` is narrow, and then gets no gradient. The conjugation
        leaves the Jacobian determinant unchanged.
        """
        moved, log_det = bijection(self._whiten(z), u)
        return self._unwhiten(moved), log_det

    def _transport(
        self, z0: Tensor, base: dist.Distribution, log_joint: Callable[[Tensor], Tensor]
    ) -> Transport:
        log_q0 = base.log_prob(z0)
        state = MetFlowState(z0, log_joint(z0))
        log_density = torch.full_like(log_q0, self.K * math.log(2))
        choices = torch.zeros_like(log_q0)
        accept_probs, accepted = [], []
        logit = self.direction_logit
        for u in self.innovation:
            state, info = metflow_step(
                state,
                log_joint,
                lambda z, u=u: self._whitened(self.flow, z, u),
                lambda z, u=u: self._whitened(self.flow.inverse, z, u),
                logit,
                self.acceptance,
            )
            log_density = (
                log_density - info.log_jacobian + info.log_prob_choice - info.log_prob_direction
            )
            choices = choices + info.log_prob_choice
            accept_probs.append(info.acceptance_prob)
            accepted.append(info.accepted)
        elbo = state.log_density - log_q0 - log_density
        baseline = self.score_baseline(elbo)
        log_density = log_density - score_function_term(elbo, choices, baseline)
        stats = {
            "acceptance_rate": torch.stack(accept_probs, -1),
            "accepted": torch.stack(accepted, -1),
            "log_weight": elbo,
        }
        return Transport(state.position, log_density, stats)
