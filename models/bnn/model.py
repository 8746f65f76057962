"""Bayesian multilayer perceptrons: a Pyro model over the weights of an ``nn.Sequential``.

:class:`BayesianMLP` turns a stack of ``nn.Linear`` layers and parameter-free activations into a
:class:`~pyro.nn.PyroModule` whose weights and biases are :class:`~pyro.nn.PyroSample` latents,
a priori independent under :class:`GaussianPrior` or the scale mixture :class:`ScaleMixturePrior`
of Blundell et al. (2015). Targets are Gaussian around a one-output network (regression) or
categorical on its logits (classification), inside a ``"data"`` plate that scales a minibatch's
log-likelihood by ``num_data / B``.

The companion modules are :mod:`pyroext.models.bnn.guide` (the Bayes-by-backprop guide, with the
local reparameterisation trick) and :mod:`pyroext.models.bnn.predict` (predictive summaries,
calibration and information gain).
"""

__all__ = [
    "LIKELIHOODS",
    "LOCAL_REPARAMETERIZATION",
    "BayesianMLP",
    "GaussianPrior",
    "Prior",
    "ScaleMixturePrior",
    "relu_mlp",
]

import copy
import itertools
from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.nn import PyroModule, PyroParam, PyroSample
from pyro.nn.module import to_pyro_module_
from pyro.poutine.messenger import Messenger
from pyro.poutine.runtime import Message
from torch import Tensor, nn

from pyroext.models.bnn.priors import GaussianPrior, Prior, ScaleMixturePrior, check_positive
from pyroext.models.vae.model import data_plate

LIKELIHOODS = ("gaussian", "categorical")

LOCAL_REPARAMETERIZATION = "local_reparameterization"
"""Key of a weight site's ``infer`` dict under which a guide passes ``(loc, scale)`` of its
Gaussian factor, asking :class:`BayesianMLP` to sample the layer's pre-activations instead."""


class BayesianMLP(PyroModule):
    """A Bayesian neural network over the weights of ``net``, as a Pyro model.

    The model is ``module(x, y=None, num_data=None)``: it draws every weight and bias from the
    prior (sites named after the parameters, e.g. ``"net.0.weight"``), runs the network on the
    batch ``x`` of shape ``(B, D)`` and observes ``y`` at site ``"obs"`` in
    ``pyro.plate("data", num_data, subsample=arange(B))``, so that the batch's log-likelihood is
    scaled by ``num_data / B`` while the weights' prior counts once: on a random minibatch, the
    ELBO is an unbiased estimate of the full-data ELBO. Weights may carry batch dimensions from
    plates at dim -2 or left of it (vectorised ELBO particles, the draws of
    :mod:`~pyroext.models.bnn.predict`); :class:`~pyro.infer.Predictive` works with
    ``parallel=False``, since its parallel mode drops the data plate's slot from matrix-shaped
    latents.

    Likelihoods:

    - ``"gaussian"``: ``y_n ~ N(f(x_n), noise_scale^2)`` for a network with one output. With
      ``noise_scale=None`` the noise scale is a point estimate (a positive
      :class:`~pyro.nn.PyroParam` ``"noise_scale"`` starting at 1, fitted by the ELBO like any
      guide parameter, i.e. type-II maximum likelihood); otherwise it is fixed and known.
    - ``"categorical"``: ``y_n ~ Categorical(logits=f(x_n))``, ``y`` of dtype long.

    ``net`` is deep-copied, so the caller keeps its deterministic network; its initial weights,
    :meth:`init_to_network`, are where :class:`~pyroext.models.bnn.guide.AutoBayesByBackprop`
    puts its means. The priors, like those initial weights, follow ``model.to(...)``.

    Arguments:
        net: ``nn.Linear`` layers and parameter-free modules (activations), in order.
        prior: Prior of every weight and bias.
        likelihood: One of :data:`LIKELIHOODS`.
        noise_scale: Known noise standard deviation (> 0) of the Gaussian likelihood, or None
            to learn it; must be None for ``"categorical"``.

    Raises:
        TypeError: If ``net`` is not an ``nn.Sequential``.
        ValueError: If ``net`` has no linear layer or a module with parameters that is not
            ``nn.Linear``, the output width does not suit the likelihood, or an option is
            invalid.
    """

    def __init__(
        self,
        net: nn.Sequential,
        *,
        prior: Prior = GaussianPrior(),
        likelihood: str = "gaussian",
        noise_scale: float | None = None,
    ) -> None:
        super().__init__()
        linears = _check_net(net, likelihood)
        if likelihood == "categorical" and noise_scale is not None:
            raise ValueError("noise_scale must be None for the categorical likelihood")
        if noise_scale is not None:
            check_positive(noise_scale=noise_scale)
        self.likelihood = likelihood
        self.in_features = linears[0].in_features
        self.net = copy.deepcopy(net)
        to_pyro_module_(self.net)
        self._weights: list[tuple[int, str]] = []
        for index, layer in enumerate(self.net):
            for name, value in list(layer.named_parameters(recurse=False)):
                initial = value.detach().clone()
                self._weights.append((index, name))
                setattr(layer, name, PyroSample(_LayerPrior(prior, name)))
                layer.register_buffer(_initial_name(name), initial, persistent=False)
        anchor = linears[0].weight
        if likelihood == "gaussian" and noise_scale is None:
            self.noise_scale = PyroParam(anchor.new_tensor(1.0), constraints.positive)
        else:
            self.noise_scale = noise_scale

    def init_to_network(self, site: dict) -> Tensor:
        """Pyro initialisation strategy: a weight site's value in the deterministic network.

        Site names are fixed on the model's first call, when Pyro calls this function.

        Arguments:
            site: A sample site of this model (Pyro's message dict).

        Returns:
            A copy of the parameter ``net`` had at construction.

        Raises:
            ValueError: If the site is not one of the network's weights or biases.
        """
        for index, name in self._weights:
            if self.net[index]._pyro_get_fullname(name) == site["name"]:
                return getattr(self.net[index], _initial_name(name)).clone()
        raise ValueError(f"site {site['name']!r} is not a weight of this network")

    def forward(self, x: Tensor, y: Tensor | None = None, num_data: int | None = None) -> Tensor:
        """Runs the model on a batch.

        Arguments:
            x: Inputs, shape ``(B, D)``.
            y: Targets, shape ``(B,)`` (class indices for ``"categorical"``), or None to
                sample them.
            num_data: Size of the data set the batch is drawn from (``B`` if None).

        Returns:
            The network output before the likelihood: the regression mean, shape ``(..., B)``,
            or the logits, shape ``(..., B, C)``, with any batch dimensions of the weights in
            front.

        Raises:
            ValueError: If the shapes do not match the network or ``num_data < B``.
        """
        self.check_batch(x, y, num_data)
        output = self._network(x)
        with data_plate(x, num_data):
            if self.likelihood == "categorical":
                pyro.sample("obs", dist.Categorical(logits=output), obs=y)
                return output
            mean = output.squeeze(-1)
            noise = torch.as_tensor(self.noise_scale, dtype=x.dtype, device=x.device)
            pyro.sample("obs", dist.Normal(mean, noise), obs=y)
        return mean

    def _network(self, x: Tensor) -> Tensor:
        with _InferRecorder() as recorder:
            hidden = x
            for module in self.net:
                if isinstance(module, nn.Linear):
                    weight, bias = module.weight, module.bias
                    moments = recorder.moments(weight), recorder.moments(bias)
                    hidden = _linear(hidden, weight, bias, *moments)
                else:
                    hidden = module(hidden)
        return hidden

    def check_batch(self, x: Tensor, y: Tensor | None, num_data: int | None) -> None:
        """Raises ValueError unless ``x`` is ``(B, D)``, ``y`` None or ``(B,)`` and
        ``num_data`` None or ``>= B``."""
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"x must have shape (B, {self.in_features}), got {tuple(x.shape)}")
        if y is not None and tuple(y.shape) != (x.shape[0],):
            raise ValueError(f"y must have shape ({x.shape[0]},), got {tuple(y.shape)}")
        if num_data is not None and num_data < x.shape[0]:
            raise ValueError(f"num_data={num_data} must be >= the batch size {x.shape[0]}")


def relu_mlp(widths: Sequence[int]) -> nn.Sequential:
    """The usual network for :class:`BayesianMLP`: ``nn.Linear`` layers of the given widths
    (inputs first, outputs last) with a ReLU between each two, in torch's default
    initialisation.

    Arguments:
        widths: Layer widths, at least two.
    """
    layers: list[nn.Module] = []
    for width_in, width_out in itertools.pairwise(widths[:-1]):
        layers += [nn.Linear(width_in, width_out), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(widths[-2], widths[-1]))


class _LayerPrior:
    """The prior of a layer's weight or bias, as a :class:`~pyro.nn.PyroSample` callable: built
    with the dtype and device of the layer's buffer holding the initial value, so that the prior
    moves with ``model.to(...)``, and rebuilt only when they change (never per step)."""

    def __init__(self, prior: Prior, name: str) -> None:
        self.prior = prior
        self.name = name
        self._built: tuple[tuple[torch.device, torch.dtype], dist.Distribution] | None = None

    def __call__(self, layer: nn.Module) -> dist.Distribution:
        like = getattr(layer, _initial_name(self.name))
        key = (like.device, like.dtype)
        if self._built is None or self._built[0] != key:
            self._built = (key, self.prior.distribution(like.shape, like))
        return self._built[1]


def _initial_name(name: str) -> str:
    return f"{name}_initial"


class _InferRecorder(Messenger):
    """Remembers the ``infer`` dict of each sample site by the identity of its value, for one
    pass of the network: a replayed site carries the guide's ``infer``, the only channel
    through which the guide's moments reach the model."""

    def __init__(self) -> None:
        super().__init__()
        self._infer: dict[int, dict] = {}

    def _pyro_post_sample(self, msg: Message) -> None:
        self._infer[id(msg["value"])] = msg["infer"] or {}

    def moments(self, value: Tensor | None) -> tuple[Tensor, Tensor] | None:
        """The guide's ``(loc, scale)`` for the site that produced ``value``, if it gave any."""
        if value is None:
            return None
        return self._infer.get(id(value), {}).get(LOCAL_REPARAMETERIZATION)


def _linear(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    weight_moments: tuple[Tensor, Tensor] | None,
    bias_moments: tuple[Tensor, Tensor] | None,
) -> Tensor:
    """``x W^T + b`` for weights with batch dimensions ``(..., 1)``, or, given the guide's
    moments, a draw of it from its Gaussian law under the guide (local reparameterisation)."""
    if weight.ndim > 2:
        # The size-1 batch dimension of a weight sits where the data plate is; the batch of
        # inputs fills it, so it is dropped before the product (the bias broadcasts as is).
        if weight.shape[-3] != 1:
            raise ValueError(
                f"weights of batch shape {tuple(weight.shape[:-2])} leave no size-1 dimension "
                "for the data plate: draw them in plates at dim -2 or left of it (Pyro's "
                "Predictive needs parallel=False)"
            )
        weight = weight.squeeze(-3)
    if weight_moments is None:
        output = x @ weight.transpose(-1, -2)
        return output if bias is None else output + bias
    loc, scale = weight_moments
    mean, variance = x @ loc.T, x.square() @ scale.square().T
    if bias_moments is not None:
        mean, variance = mean + bias_moments[0], variance + bias_moments[1].square()
    # Inputs carry no batch dimensions beyond the weights', so the noise takes theirs.
    noise = torch.randn(weight.shape[:-2] + mean.shape[-2:], dtype=mean.dtype, device=mean.device)
    # A zero variance (zero inputs and no bias) would give an infinite gradient of the sqrt.
    return mean + variance.clamp_min(torch.finfo(variance.dtype).tiny).sqrt() * noise


def _check_net(net: nn.Sequential, likelihood: str) -> list[nn.Linear]:
    """Validates ``net`` for ``likelihood`` and returns its linear layers."""
    if not isinstance(net, nn.Sequential):
        raise TypeError(f"net must be an nn.Sequential, got {type(net).__name__}")
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"likelihood={likelihood!r} must be one of {', '.join(LIKELIHOODS)}")
    for index, module in enumerate(net):
        if not isinstance(module, nn.Linear) and any(True for _ in module.parameters()):
            raise ValueError(
                f"net[{index}] ({type(module).__name__}) has parameters but is not nn.Linear"
            )
    linears = [module for module in net if isinstance(module, nn.Linear)]
    if not linears:
        raise ValueError("net must contain at least one nn.Linear layer")
    width = linears[-1].out_features
    if likelihood == "gaussian" and width != 1:
        raise ValueError(f"the gaussian likelihood needs 1 network output, net has {width}")
    if likelihood == "categorical" and width < 2:
        raise ValueError(f"the categorical likelihood needs >= 2 network outputs, net has {width}")
    return linears
