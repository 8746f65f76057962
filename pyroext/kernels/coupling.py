"""RealNVP-style invertible flows conditioned on innovation noise, for MetFlow proposals, and
their whitening by the base of a guide."""

__all__ = ["Bijection", "ConditionalCouplingFlow", "whitened_moves"]

from collections.abc import Callable

import torch
from pyro.nn import ConditionalDenseNN, PyroModule
from pyro.nn.module import to_pyro_module_
from torch import Tensor, nn

Bijection = Callable[[Tensor], tuple[Tensor, Tensor]]


class _BoundedLogScale(PyroModule):
    """Hypernetwork wrapper: a tanh keeps every log-scale in (-1, 1), so ``exp`` never overflows
    and no layer scales a coordinate by more than e (a clamp would cut the gradient instead)."""

    def __init__(self, net: ConditionalDenseNN, identity: bool) -> None:
        super().__init__()
        if identity:
            nn.init.zeros_(net.layers[-1].weight)
            nn.init.zeros_(net.layers[-1].bias)
        to_pyro_module_(net)
        self.net = net

    def forward(self, x: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
        shift, log_scale = self.net(x, context)
        return shift, torch.tanh(log_scale)


class _AffineCoupling(PyroModule):
    """RealNVP's affine coupling: the first ``split`` coordinates set the shift and log-scale
    of the others. A :class:`~pyro.nn.PyroModule` throughout (Pyro's own coupling transform
    cannot be one), so a guide holding it behaves like Pyro's guides under
    ``requires_grad_(False)``."""

    def __init__(self, split: int, hypernet: _BoundedLogScale) -> None:
        super().__init__()
        self.split = split
        self.nn = hypernet

    def forward(self, x: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
        kept, moved = x[..., : self.split], x[..., self.split :]
        shift, log_scale = self.nn(kept, context)
        y = torch.cat([kept, torch.exp(log_scale) * moved + shift], dim=-1)
        return y, log_scale.sum(-1)

    def inverse(self, y: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
        kept, moved = y[..., : self.split], y[..., self.split :]
        shift, log_scale = self.nn(kept, context)
        x = torch.cat([kept, (moved - shift) * torch.exp(-log_scale)], dim=-1)
        return x, -log_scale.sum(-1)


class ConditionalCouplingFlow(PyroModule):
    """A stack of affine couplings ``T_u`` with an exact inverse, conditioned on a vector ``u``.

    Each layer is an affine coupling (as Pyro's
    :class:`~pyro.distributions.transforms.ConditionalAffineCoupling`) whose hypernetwork sees
    the untouched half of ``z`` stacked with ``u`` (MetFlow's "stacking" aggregation); every
    other layer works on the reversed coordinates, so that every coordinate is transformed.
    By default the flow starts as the identity. In one dimension the single coupling
    conditions on ``u`` only, i.e. it is an affine map whose shift and scale depend on ``u``.

    Arguments:
        dim: Dimension ``D`` of ``z``.
        context_dim: Dimension of the conditioning vector ``u``.
        num_couplings: Number of coupling layers, >= 1.
        hidden_dim: Width of the two hidden layers of each hypernetwork (default ``2 D``, as
            in the MetFlow authors' code).
        identity_init: Zero the hypernetworks' output layers, so that the flow starts as the
            identity (a MetFlow guide then starts as its base); otherwise PyTorch's default
            initialisation, whose random initial moves explore more (the authors' choice).

    References:
        | Density estimation using Real NVP (Dinh et al., 2017)
        | https://arxiv.org/abs/1605.08803
    """

    def __init__(
        self,
        dim: int,
        context_dim: int,
        num_couplings: int = 2,
        hidden_dim: int | None = None,
        identity_init: bool = True,
    ) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"dim={dim} must be >= 1")
        if num_couplings < 1:
            raise ValueError(f"num_couplings={num_couplings} must be >= 1")
        hidden = 2 * dim if hidden_dim is None else hidden_dim
        if hidden < 1:
            raise ValueError(f"hidden_dim={hidden_dim} must be >= 1")
        split = dim // 2
        self.couplings = PyroModule[nn.ModuleList](
            _AffineCoupling(
                split,
                _BoundedLogScale(
                    ConditionalDenseNN(
                        split,
                        context_dim,
                        [hidden, hidden],
                        param_dims=[dim - split, dim - split],
                        nonlinearity=nn.LeakyReLU(),
                    ),
                    identity_init,
                ),
            )
            for _ in range(num_couplings)
        )

    def forward(self, z: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
        """Returns ``(T_u(z), log|det dT_u/dz|)`` for a batch ``z`` of shape ``(..., D)``."""
        log_det = z.new_zeros(z.shape[:-1])
        for index, coupling in enumerate(self.couplings):
            x = z.flip(-1) if index % 2 else z
            y, layer_log_det = coupling(x, context)
            log_det = log_det + layer_log_det
            z = y.flip(-1) if index % 2 else y
        return z, log_det

    def inverse(self, z: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
        """Returns ``(T_u^-1(z), log|det dT_u^-1/dz|)``."""
        log_det = z.new_zeros(z.shape[:-1])
        for index in reversed(range(len(self.couplings))):
            y = z.flip(-1) if index % 2 else z
            x, layer_log_det = self.couplings[index].inverse(y, context)
            log_det = log_det + layer_log_det
            z = x.flip(-1) if index % 2 else x
        return z, log_det


def whitened_moves(
    flow: ConditionalCouplingFlow,
    innovation: Tensor,
    whiten: Callable[[Tensor], Tensor],
    unwhiten: Callable[[Tensor], Tensor],
) -> list[tuple[Bijection, Bijection]]:
    """Per step ``k``, ``T_{u_k}`` and ``T_{u_k}^{-1}`` conjugated by a base's affine whitening.

    ``z -> unwhiten(T_{u_k}(whiten(z)))``, with ``whiten(z) = A^-1 (z - loc)`` for the
    base's location and scale (or scale-tril) ``A``: proposals then move on the scale of
    ``q_0``, which shrinks with the posterior during training (or differs between data points
    of an amortised guide). A flow in raw coordinates keeps the large moves it learnt early,
    all of them rejected once ``q_0`` is narrow, and then gets no gradient. The conjugation
    leaves the Jacobian determinant unchanged.

    Arguments:
        flow: The coupling flow.
        innovation: The innovation noise ``u_{1:K}``, ``(K, context_dim)``.
        whiten: ``z -> A^-1 (z - loc)``.
        unwhiten: Its inverse.

    Returns:
        ``K`` pairs ``(forward, inverse)``, each ``z -> (moved, log|det|)``.
    """

    def conjugated(bijection: Callable[..., tuple[Tensor, Tensor]], u: Tensor) -> Bijection:
        def move(z: Tensor) -> tuple[Tensor, Tensor]:
            moved, log_det = bijection(whiten(z), u.to(z.dtype))
            return unwhiten(moved), log_det

        return move

    return [(conjugated(flow, u), conjugated(flow.inverse, u)) for u in innovation]
