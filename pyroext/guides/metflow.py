"""AutoMetFlow: a Gaussian guide enriched by MetFlow steps (MH moves proposed by a flow)."""

__all__ = ["FLOW_INITS", "REVERSE_MODELS", "AutoMetFlow"]

import math
from collections.abc import Callable
from typing import Any

import pyro.distributions as dist
import torch
from pyro.infer.autoguide.initialization import init_to_median
from torch import Tensor, nn

from pyroext.checks import check_counts
from pyroext.guides.markov import AutoMarkovGuide
from pyroext.guides.transport import Transport, acceptance_stats
from pyroext.kernels import (
    ConditionalCouplingFlow,
    fixed_reverse_logits,
    metflow_chain,
    whitened_moves,
)
from pyroext.kernels.acceptance import ACCEPTANCE_RULES
from pyroext.kernels.coupling import Bijection

FLOW_INITS = ("identity", "random")
REVERSE_MODELS = ("learned", "conditional", "fixed")


class AutoMetFlow(AutoMarkovGuide):
    r"""MetFlow guide: ``K`` Metropolis-Hastings steps whose proposal is a learned flow.

    Step ``k`` proposes ``T_{u_k}(z)`` or ``T_{u_k}^{-1}(z)`` (learned direction probability),
    a RealNVP flow conditioned on innovation noise ``u_k`` drawn once at setup (MetFlow's
    "fixed" pseudo-random noise), and accepts it with the Barker or MH probability. Given the
    noise, ``z_0 -> z_K`` is piecewise a diffeomorphism, so the extended-space density is
    exact. The bound is the MetFlow authors' one with a reverse model
    ``r(v, b | z_K) = prod_k r_k(v_k, b_k)`` over each step's direction ``v_k`` and outcome
    ``b_k``:

    .. math:: \mathcal{L} = \mathbb{E}\Big[\log p(x, z_K) - \log q_0(z_0)
              + \sum_k \log|\det J_k| - \sum_k \log P(v_k, b_k \mid z_{k-1})
              + \sum_k \log r_k(v_k, b_k)\Big] \le \log p(x).

    The authors fix ``r_k(v, b) = P(v) / 2``, which costs ``log 2`` per step wherever the
    outcome is certain: a chain whose proposals are all rejected is then ``K log 2`` below its
    own base. The default learns ``r_k`` (four logits per step, started at the fixed model), so
    a step costs only what its outcome tells beyond ``r_k``, and a step that never moves costs
    nothing.

    The accept/reject and direction choices are not reparameterisable: their REINFORCE
    gradient is added inside the guide's density, each step's choices weighted by the rewards
    from that step on (the bound telescopes into per-step terms, and a step cannot change
    those before it) less their leave-one-out mean over vectorised particles; see
    :func:`~pyroext.guides.score.reward_to_go_score_term`. With one particle there is no
    other draw to leave out and the baseline is 0: unbiased, but use several particles.

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
        reverse_model: ``"learned"`` (per-step reverse probabilities, trained with the bound),
            ``"conditional"`` (``r_k(v, b | z_K)``, a network of the whitened final state, as
            in MetVAE's paper; started at the fixed model) or ``"fixed"`` (the authors'
            ``P(v) / 2``).
        base_dist: ``"diagonal"`` or ``"cholesky"``.
        init_loc_fn: Per-site initialisation of the base mean.
        init_scale: Initial base standard deviation, > 0.
        base_training: ``"own"`` (the default: the base is trained on its own ELBO and the
            steps improve on it, so that one-particle score noise cannot drag the base off
            its optimum) or ``"joint"`` (the authors' way); see
            :class:`~pyroext.guides.AutoMarkovGuide`.
        base_flow: ``None``, ``"iaf"`` or ``"spline"``: flow layers in the base (see
            :class:`~pyroext.guides.AutoMarkovGuide`).
        base_flow_layers: Number of flow layers, >= 1.
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
        reverse_model: str = "learned",
        base_dist: str = "diagonal",
        init_loc_fn: Callable[..., Tensor] = init_to_median,
        init_scale: float = 0.1,
        base_training: str = "own",
        base_flow: str | None = None,
        base_flow_layers: int = 1,
        compile_target: bool | str = "auto",
    ) -> None:
        _check_options(acceptance, num_couplings, hidden_dim, flow_init, init_direction_prob)
        if reverse_model not in REVERSE_MODELS:
            raise ValueError(
                f"reverse_model={reverse_model!r} must be one of {', '.join(REVERSE_MODELS)}"
            )
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
        self.acceptance = acceptance
        self.num_couplings = num_couplings
        self.hidden_dim = hidden_dim
        self.init_direction_prob = float(init_direction_prob)
        self.flow_init = flow_init
        self.reverse_model = reverse_model

    def _setup_kernel(self) -> None:
        like = {"dtype": self.loc.dtype, "device": self.loc.device}
        dim = self.latent_dim
        identity = self.flow_init == "identity"
        flow = ConditionalCouplingFlow(dim, dim, self.num_couplings, self.hidden_dim, identity)
        self.flow = flow.to(**like)
        self.register_buffer("innovation", torch.randn(self.K, dim, **like))
        logit = math.log(self.init_direction_prob / (1 - self.init_direction_prob))
        self.direction_logit = nn.Parameter(torch.tensor(logit, **like))
        fixed = fixed_reverse_logits(logit, self.K).to(**like)
        if self.reverse_model == "learned":
            self.reverse_logits = nn.Parameter(fixed)
        elif self.reverse_model == "conditional":
            self.reverse_net = _reverse_network(dim, self.hidden_dim or 2 * dim, fixed)

    def moves(self) -> list[tuple[Bijection, Bijection]]:
        """Per step, the proposal maps ``T_{u_k}`` and ``T_{u_k}^{-1}`` in ``q_0``'s whitened
        coordinates ``A T(A^-1 (z - loc)) + loc`` (see :func:`~pyroext.kernels.whitened_moves`),
        ``A`` the base's scale (or scale-tril); each ``z -> (moved, log|det|)``."""
        return whitened_moves(self.flow, self.innovation, self._whiten, self._unwhiten)

    def _transport(
        self,
        z0: Tensor,
        log_q0: Tensor,
        base: dist.Distribution,
        log_joint: Callable[[Tensor], Tensor],
    ) -> Transport:
        reverse = getattr(self, "reverse_logits", None)
        if self.reverse_model == "conditional":
            reverse = self.conditional_reverse_logits
        chain = metflow_chain(
            z0, log_joint, self.moves(), self.direction_logit, self.acceptance, reverse
        )
        elbo = chain.state.log_density - log_q0 - chain.log_density
        return Transport.from_chain(chain, {**acceptance_stats(chain.info), "log_weight": elbo})

    def conditional_reverse_logits(self, z: Tensor) -> Tensor:
        """The conditional reverse model's logits ``(*B, K, 4)`` at final states ``(*B, D)``."""
        logits = self.reverse_net(self._whiten(z))
        return logits.unflatten(-1, (self.K, 4))


def _reverse_network(dim: int, hidden_dim: int, fixed: Tensor) -> nn.Sequential:
    """``z_K -> (K, 4)`` reverse logits, flattened, whose output layer starts at zero weights
    and the fixed model's logits: the guide starts with the authors' bound."""
    output = nn.Linear(hidden_dim, fixed.numel())
    with torch.no_grad():
        output.weight.zero_()
        output.bias.copy_(fixed.reshape(-1))
    return nn.Sequential(nn.Linear(dim, hidden_dim), nn.Tanh(), output).to(fixed)


def _check_options(
    acceptance: str,
    num_couplings: int,
    hidden_dim: int | None,
    flow_init: str,
    init_direction_prob: float,
) -> None:
    if acceptance not in ACCEPTANCE_RULES:
        raise ValueError(f"acceptance={acceptance!r} must be one of {', '.join(ACCEPTANCE_RULES)}")
    check_counts(num_couplings=num_couplings)
    if hidden_dim is not None and hidden_dim < 1:
        raise ValueError(f"hidden_dim={hidden_dim!r} must be >= 1 (or None for 2 D)")
    if flow_init not in FLOW_INITS:
        raise ValueError(f"flow_init={flow_init!r} must be one of {', '.join(FLOW_INITS)}")
    if not 0 < init_direction_prob < 1:
        raise ValueError(f"init_direction_prob={init_direction_prob!r} must be in (0, 1)")
