"""Normalising-flow layers of an MCMC-in-guide base ``q_0``: Pyro's autoregressive transforms
between ``q_0``'s standard-normal noise and its affine map, so that "a flow + K Markov steps"
starts from the flow guide itself.

References:
    Kingma et al., "Improved Variational Inference with Inverse Autoregressive Flow" (2016).
    Durkan et al., "Neural Spline Flows" (2019).
"""

__all__ = ["BASE_FLOWS", "base_flow_nets", "base_flow_transforms"]

import math
import warnings

import torch
from pyro.distributions.transforms import AffineAutoregressive, SplineAutoregressive
from pyro.distributions.transforms.utils import clamp_preserve_gradients
from pyro.nn import AutoRegressiveNN
from torch import Tensor, nn
from torch.distributions import Transform

BASE_FLOWS = ("iaf", "spline")
SPLINE_BINS = 8
SPLINE_BOUND = 3.0


def base_flow_nets(kind: str, dim: int, num_layers: int) -> nn.ModuleList:
    """The autoregressive networks of ``num_layers`` flow layers, each starting at the
    identity map (so that the base starts as its Gaussian), with Pyro's default widths
    (``3 D + 1`` for IAF as :class:`~pyro.infer.autoguide.AutoIAFNormal`, ``[10 D, 10 D]``
    for splines as :func:`~pyro.distributions.transforms.spline_autoregressive`).

    Arguments:
        kind: One of :data:`BASE_FLOWS`.
        dim: Number of latent dimensions.
        num_layers: Number of layers, >= 1.

    Returns:
        The networks, for :func:`base_flow_transforms`.
    """
    nets = []
    for _ in range(num_layers):
        with warnings.catch_warnings():
            # With one latent a layer conditions on nothing and is a learned elementwise map
            # (affine or spline), still a flow, so Pyro's advice to use an affine map is moot.
            warnings.filterwarnings("ignore", "ConditionalAutoRegressiveNN input_dim = 1")
            nets.append(_network(kind, dim))
        _start_at_identity(nets[-1], kind)
    return nn.ModuleList(nets)


def _network(kind: str, dim: int) -> AutoRegressiveNN:
    if kind == "iaf":
        return AutoRegressiveNN(dim, [3 * dim + 1])
    param_dims = [SPLINE_BINS, SPLINE_BINS, SPLINE_BINS - 1, SPLINE_BINS]
    return AutoRegressiveNN(dim, [10 * dim, 10 * dim], param_dims=param_dims)


def base_flow_transforms(kind: str, nets: nn.ModuleList, detached: bool) -> list[Transform]:
    """The flow layers over ``nets``; with ``detached``, layers whose networks' parameters
    are constants (no gradient reaches them), for a base trained on its own ELBO."""
    layers: list[Transform] = []
    for net in nets:
        arn = _DetachedNet(net) if detached else net
        if kind == "iaf":
            layers.append(_InverseAutoregressive(arn, stable=False))
        else:
            layers.append(
                SplineAutoregressive(
                    net.input_dim, arn, count_bins=SPLINE_BINS, bound=SPLINE_BOUND
                )
            )
    return layers


def _start_at_identity(net: AutoRegressiveNN, kind: str) -> None:
    """Zero output weights: IAF's shift and log-scale are 0, and the spline's bins are equal
    with unit knot slopes, which is the identity map."""
    last = net.layers[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
        if kind == "spline":
            # The outputs are (widths, heights, knot slopes, lambdas) by input dimension, and
            # Pyro's knot slopes are 1e-3 + softplus(output).
            widths, heights, slopes, _ = net.param_dims
            rows = last.bias.view(-1, net.input_dim)[widths + heights : widths + heights + slopes]
            rows.fill_(math.log(math.expm1(1 - 1e-3)))


class _InverseAutoregressive(AffineAutoregressive):
    """Pyro's IAF layer with an inverse that keeps the input's dtype (Pyro 1.9 starts its
    inverse from float32 zeros, which fails in float64), for ``log q_0`` of points that are
    not the base's own (cached) draws."""

    def _inverse(self, y: Tensor) -> Tensor:
        # One input at a time in the autoregressive order, the inputs not yet solved for left
        # at 0: a fixed-point sweep would feed unsolved, possibly infinite, inputs to masked
        # weights, and inf * 0 is NaN.
        columns = [torch.zeros_like(y[..., 0])] * y.size(-1)
        log_scales = list(columns)
        for index in self.arn.permutation.tolist():
            mean, log_scale = self.arn(torch.stack(columns, dim=-1))
            log_scale = clamp_preserve_gradients(
                log_scale[..., index], self.log_scale_min_clip, self.log_scale_max_clip
            )
            columns[index] = (y[..., index] - mean[..., index]) * torch.exp(-log_scale)
            log_scales[index] = log_scale
        self._cached_log_scale = torch.stack(log_scales, dim=-1)
        return torch.stack(columns, dim=-1)


class _DetachedNet(nn.Module):
    """``net`` evaluated with its parameters as constants (through ``functional_call``)."""

    def __init__(self, net: AutoRegressiveNN) -> None:
        super().__init__()
        self._net = (net,)  # a tuple: not registered, so its parameters are not ours

    @property
    def permutation(self) -> Tensor:
        return self._net[0].permutation

    def forward(self, inputs: Tensor) -> Tensor | tuple[Tensor, ...]:
        net = self._net[0]
        constants = {name: value.detach() for name, value in net.named_parameters()}
        return torch.func.functional_call(net, constants, (inputs,))
