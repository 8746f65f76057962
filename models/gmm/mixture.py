"""The Gaussian mixture's density at many draws at once, in one matrix product per evaluation.

Exporting a fit scores ``log w_k + log N(x_n; mu_k, Sigma_k)`` for S draws, N points and K
components. Torch's ``MultivariateNormal`` broadcasts each component's Cholesky factor to all
``S x N x K`` triples and solves a triangular system for each, and ``MixtureSameFamily`` draws
every component before picking one: with a component per data point (K = N = 272) and 1000
draws, minutes and gigabytes. Here the Mahalanobis distance is expanded as
``x' P x - 2 mu' P x + mu' P mu`` with the precision ``P = Sigma^{-1}``: per-component
coefficients times per-point features, one matrix product of inner size ``D^2 + D + 1``; and a
draw picks its component before drawing from it.
"""

__all__ = ["GaussianMixture", "mixture_log_joint"]

import math
from typing import ClassVar

import pyro.distributions as dist
import torch
from pyro.distributions.torch_distribution import TorchDistribution
from torch import Tensor
from torch.distributions import constraints


def mixture_log_joint(x: Tensor, weights: Tensor, locs: Tensor, scale_tril: Tensor) -> Tensor:
    """``log w_k + log N(x_n; locs_k, L_k L_k^T)`` for each point and component.

    Broadcasts as ``MultivariateNormal(locs, scale_tril=L).log_prob(x.unsqueeze(-2)) +
    weights.log()`` does, and equals it to rounding. Points of shape ``(N, D)`` against
    parameters whose batch ends in a size-1 point dim (or has no batch), as a model's plate over
    the points gives, take a single matrix product; other shapes take torch's route.

    Arguments:
        x: Points ``(..., D)``.
        weights: Mixture weights ``(..., K)``.
        locs: Means ``(..., K, D)``.
        scale_tril: Cholesky factors of the covariances ``(..., K, D, D)``.

    Returns:
        The log joint, ``broadcast(batch, x.shape[:-1]) + (K,)``.
    """
    batch = torch.broadcast_shapes(weights.shape[:-1], locs.shape[:-2], scale_tril.shape[:-3])
    if x.dim() != 2 or (batch and batch[-1] != 1):
        components = dist.MultivariateNormal(locs, scale_tril=scale_tril)
        return components.log_prob(x.unsqueeze(-2)) + weights.log()
    outer = batch[:-1]
    k, d = locs.shape[-2:]
    # Centring at the data's mean keeps x' P x and mu' P mu small, so their difference keeps
    # its digits (algebraically the distance is unchanged).
    centre = x.detach().mean(0)
    locs = (locs - centre).expand(*batch, k, d).reshape(*outer, k, d)
    scale_tril = scale_tril.expand(*batch, k, d, d).reshape(*outer, k, d, d)
    weights = weights.expand(*batch, k).reshape(*outer, k)
    coefficients = _quadratic_coefficients(weights, locs, scale_tril)
    points = x - centre
    features = torch.cat(
        [
            (points.unsqueeze(-1) * points.unsqueeze(-2)).flatten(-2),
            points,
            torch.ones_like(x[:, :1]),
        ],
        -1,
    )
    return features @ coefficients.mT


def _quadratic_coefficients(weights: Tensor, locs: Tensor, scale_tril: Tensor) -> Tensor:
    """Per component, the coefficients of ``(x x', x, 1)`` in ``log w + log N(x; mu, L L')``:
    ``(-P/2, P mu, log w - log|L| - D/2 log 2 pi - mu' P mu / 2)``, shape ``(..., K, D^2+D+1)``."""
    d = locs.shape[-1]
    eye = torch.eye(d, dtype=scale_tril.dtype, device=scale_tril.device)
    inverse = torch.linalg.solve_triangular(scale_tril, eye.expand_as(scale_tril), upper=False)
    precision = inverse.mT @ inverse
    linear = (precision @ locs.unsqueeze(-1)).squeeze(-1)
    log_det = scale_tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    constant = (
        weights.log() - log_det - 0.5 * (d * math.log(2 * math.pi) + (locs * linear).sum(-1))
    )
    return torch.cat([-0.5 * precision.flatten(-2), linear, constant.unsqueeze(-1)], -1)


class GaussianMixture(TorchDistribution):
    """``sum_k w_k N(locs_k, L_k L_k^T)``, with the batch shape of its broadcast parameters.

    ``MixtureSameFamily``'s values, but its parameters stay unexpanded under ``expand`` (a
    plate over the points), so :func:`mixture_log_joint` keeps its single matrix product, and a
    draw picks its component first instead of drawing all of them.

    Arguments:
        weights: Mixture weights ``(..., K)``, on the simplex.
        locs: Means ``(..., K, D)``.
        scale_tril: Cholesky factors of the covariances ``(..., K, D, D)``.
        validate_args: Check sample values against the support.
    """

    arg_constraints: ClassVar[dict[str, constraints.Constraint]] = {}  # their sites check them
    support = constraints.real_vector
    has_rsample = False

    def __init__(
        self,
        weights: Tensor,
        locs: Tensor,
        scale_tril: Tensor,
        validate_args: bool | None = None,
    ) -> None:
        self.weights, self.locs, self.scale_tril = weights, locs, scale_tril
        batch = torch.broadcast_shapes(weights.shape[:-1], locs.shape[:-2], scale_tril.shape[:-3])
        super().__init__(batch, locs.shape[-1:], validate_args=validate_args)

    def expand(self, batch_shape: torch.Size, _instance: object = None) -> "GaussianMixture":
        """The mixture with a larger batch shape; the parameters broadcast when used."""
        new = self._get_checked_instance(GaussianMixture, _instance)
        new.weights, new.locs, new.scale_tril = self.weights, self.locs, self.scale_tril
        super(GaussianMixture, new).__init__(
            torch.Size(batch_shape), self.event_shape, validate_args=False
        )
        new._validate_args = self._validate_args
        return new

    def log_prob(self, value: Tensor) -> Tensor:
        """``log sum_k w_k N(value; locs_k, Sigma_k)``, shape ``broadcast(batch, value batch)``."""
        if self._validate_args:
            self._validate_sample(value)
        joint = mixture_log_joint(value, self.weights, self.locs, self.scale_tril)
        shape = torch.broadcast_shapes(self.batch_shape, value.shape[:-1])
        return torch.logsumexp(joint, -1).expand(shape)

    def sample(self, sample_shape: tuple[int, ...] = ()) -> Tensor:
        """Draws a component per value, then a point from it."""
        shape = torch.Size(sample_shape) + self.batch_shape
        with torch.no_grad():
            index = _component_index(self.weights, shape)
            locs = _pick(self.locs, index, 1)
            scale_tril = _pick(self.scale_tril, index, 2)
            noise = torch.randn(shape + self.event_shape, dtype=locs.dtype, device=locs.device)
            return locs + (scale_tril @ noise.unsqueeze(-1)).squeeze(-1)


def _component_index(weights: Tensor, shape: torch.Size) -> Tensor:
    """A component per element of ``shape``, drawn from ``weights`` broadcast to it.

    Inverse-CDF sampling against the cumulative weights of all parameter rows laid end to end
    (row ``r`` spans ``(r, r + 1]``), so one sorted search serves every row, without the
    ``shape x K`` copy of the weights that ``Categorical`` would make.
    """
    k = weights.shape[-1]
    rows = weights.detach().to(torch.float64).reshape(-1, k)
    cdf = rows.cumsum(-1)
    cdf = cdf / cdf[:, -1:]
    cdf[:, -1] = 1.0
    offsets = torch.arange(len(rows), dtype=torch.float64, device=rows.device)
    row = offsets.reshape(weights.shape[:-1]).expand(shape)
    uniform = torch.rand(shape, dtype=torch.float64, device=rows.device)
    position = torch.searchsorted(
        (cdf + offsets.unsqueeze(-1)).flatten(), row + uniform, right=True
    )
    return (position - row.long() * k).clamp(0, k - 1)


def _pick(parameter: Tensor, index: Tensor, event_dim: int) -> Tensor:
    """``parameter[..., index, <event>]``, broadcasting the batch of ``parameter`` to ``index``."""
    event = parameter.shape[parameter.dim() - event_dim :]
    k = parameter.shape[-event_dim - 1]
    expanded = parameter.expand(*index.shape, k, *event)
    gather = index.reshape(*index.shape, 1, *(1,) * event_dim).expand(*index.shape, 1, *event)
    return expanded.gather(index.dim(), gather).squeeze(index.dim())
