"""Predictions of a Bayes-by-backprop network: predictive mean and entropy, calibration, and
the information gain of a new observation (VIME's exploration bonus).
"""

__all__ = [
    "expected_calibration_error",
    "information_gain",
    "predictive_entropy",
    "predictive_mean",
    "predictive_metrics",
    "sample_outputs",
]

import math

import pyro
import torch
from pyro import poutine
from torch import Tensor
from torch.distributions import Normal, kl_divergence
from torch.nn.functional import softplus

from pyroext.checks import check_counts
from pyroext.models.bnn.guide import AutoBayesByBackprop
from pyroext.models.bnn.model import BayesianMLP

# Plate of the weight draws; dim -2 leaves -1 to the model's data plate.
_DRAWS = "_bnn_draws"


@torch.no_grad()
def sample_outputs(
    model: BayesianMLP, guide: AutoBayesByBackprop, x: Tensor, *, num_samples: int = 100
) -> Tensor:
    """Network outputs at ``x`` under ``num_samples`` weight draws from the guide.

    Each draw is a whole network (the model is conditioned on the drawn weights), so the outputs
    of one draw are jointly distributed as a function of ``x``.

    Arguments:
        model: The Bayesian network.
        guide: Its guide.
        x: Inputs, shape ``(B, D)``.
        num_samples: Number of weight draws, >= 1.

    Returns:
        Regression means, shape ``(num_samples, B)``, or logits, ``(num_samples, B, C)``.

    Raises:
        ValueError: If ``num_samples < 1`` or ``x`` does not fit the network.
    """
    check_counts(num_samples=num_samples)
    if guide.prototype_trace is None:
        guide(x)
    with pyro.plate(_DRAWS, num_samples, dim=-2):
        weights = guide(x)
        return poutine.condition(model, data=weights)(x)


def predictive_mean(
    model: BayesianMLP, guide: AutoBayesByBackprop, x: Tensor, *, num_samples: int = 100
) -> Tensor:
    """Monte Carlo posterior predictive mean ``E[y | x, data]`` under the guide.

    Arguments:
        model: The Bayesian network.
        guide: Its guide.
        x: Inputs, shape ``(B, D)``.
        num_samples: Number of weight draws, >= 1.

    Returns:
        For regression, the mean of the network's output, shape ``(B,)``; for classification,
        the predictive class probabilities ``E_q[softmax(f(x))]`` (the mean of one-hot ``y``),
        shape ``(B, C)``.

    Raises:
        ValueError: If ``num_samples < 1`` or ``x`` does not fit the network.
    """
    outputs = sample_outputs(model, guide, x, num_samples=num_samples)
    if model.likelihood == "categorical":
        return outputs.softmax(-1).mean(0)
    return outputs.mean(0)


def predictive_entropy(probs: Tensor) -> Tensor:
    """Entropy ``-sum_c p_c log p_c`` in nats of each predictive distribution.

    Arguments:
        probs: Class probabilities, shape ``(..., C)``, e.g. from :func:`predictive_mean`.

    Returns:
        Entropies, shape ``probs.shape[:-1]``.

    Raises:
        ValueError: If ``probs`` is not a tensor of probability vectors.
    """
    _check_probs(probs)
    return -torch.special.xlogy(probs, probs).sum(-1)


def expected_calibration_error(probs: Tensor, labels: Tensor, *, num_bins: int = 10) -> float:
    """Expected calibration error with equal-width confidence bins.

    ``ECE = sum_m |B_m| / N |acc(B_m) - conf(B_m)|``, where bin ``B_m`` holds the points whose
    confidence (largest class probability) lies in ``((m - 1) / M, m / M]``, ``acc`` is the
    fraction of its points whose most probable class is the label and ``conf`` their mean
    confidence.

    Arguments:
        probs: Predictive class probabilities, shape ``(N, C)``.
        labels: True classes, shape ``(N,)``, integers in ``[0, C)``.
        num_bins: Number of bins ``M``, >= 1.

    Returns:
        The ECE, in [0, 1].

    Raises:
        ValueError: On badly shaped inputs, labels out of range or ``num_bins < 1``.

    References:
        Naeini, M. P., Cooper, G. and Hauskrecht, M. (2015). Obtaining well calibrated
        probabilities using Bayesian binning. AAAI.
        Guo, C., Pleiss, G., Sun, Y. and Weinberger, K. Q. (2017). On calibration of modern
        neural networks. ICML.
    """
    check_counts(num_bins=num_bins)
    _check_probs(probs)
    if probs.ndim != 2 or tuple(labels.shape) != probs.shape[:1] or probs.shape[0] == 0:
        raise ValueError(
            f"probs (N, C) and labels (N,) expected with N >= 1, got shapes "
            f"{tuple(probs.shape)} and {tuple(labels.shape)}"
        )
    if labels.dtype.is_floating_point or labels.min() < 0 or labels.max() >= probs.shape[1]:
        raise ValueError(f"labels must be integers in [0, {probs.shape[1]})")
    confidence, predicted = probs.max(-1)
    gap = (predicted == labels).to(probs.dtype) - confidence
    bins = (confidence * num_bins).ceil().long().clamp(1, num_bins) - 1
    per_bin = gap.new_zeros(num_bins).index_add_(0, bins, gap)
    return float(per_bin.abs().sum() / probs.shape[0])


def predictive_metrics(
    outputs: Tensor, y: Tensor, *, noise_scale: float | Tensor | None = None
) -> dict[str, float]:
    """Test metrics of the posterior predictive made of ``S`` networks' outputs.

    Classification (``outputs`` are logits ``(S, N, C)``, ``p`` the mean of their softmax):
    ``error`` (argmax of ``p`` is not the label), ``nll`` (``-mean log p_y``), ``ece``
    (:func:`expected_calibration_error`, 10 bins) and ``entropy`` (mean
    :func:`predictive_entropy`). Regression (``outputs`` are means ``(S, N)`` of the
    mixture ``1/S sum_s N(f_s(x), noise_scale^2)``): ``rmse`` of its mean, ``nll`` (``-mean log``
    of its density at ``y``) and ``coverage_90`` (fraction of ``y`` inside its central 90%
    interval). A deterministic network is ``S = 1``.

    Arguments:
        outputs: Network outputs at the test inputs, e.g. from :func:`sample_outputs`.
        y: Test targets, shape ``(N,)``.
        noise_scale: The Gaussian likelihood's noise sd (regression only).

    Returns:
        The metrics by name, NLLs in nats per point.

    Raises:
        ValueError: If the shapes do not match, or ``noise_scale`` is missing for regression
            or given for classification.
    """
    classification = outputs.ndim == 3
    if outputs.ndim not in (2, 3) or tuple(outputs.shape[1:2]) != tuple(y.shape):
        raise ValueError(
            f"outputs (S, N) or (S, N, C) and y (N,) expected, got shapes "
            f"{tuple(outputs.shape)} and {tuple(y.shape)}"
        )
    if classification == (noise_scale is not None):
        raise ValueError("noise_scale is needed for regression outputs (S, N) and only there")
    if classification:
        probs = outputs.softmax(-1).mean(0)
        return {
            "error": (probs.argmax(-1) != y).double().mean().item(),
            "nll": -probs.gather(-1, y[:, None]).clamp_min(1e-300).log().mean().item(),
            "ece": expected_calibration_error(probs, y),
            "entropy": predictive_entropy(probs).mean().item(),
        }
    components = Normal(outputs, torch.as_tensor(noise_scale, dtype=outputs.dtype))
    log_density = components.log_prob(y).logsumexp(0) - math.log(outputs.shape[0])
    cdf = components.cdf(y).mean(0)
    return {
        "rmse": (outputs.mean(0) - y).square().mean().sqrt().item(),
        "nll": -log_density.mean().item(),
        "coverage_90": ((cdf > 0.05) & (cdf < 0.95)).double().mean().item(),
    }


def information_gain(
    model: BayesianMLP,
    guide: AutoBayesByBackprop,
    x: Tensor,
    y: Tensor,
    *,
    num_steps: int = 1,
    step_size: float = 0.1,
    num_particles: int = 64,
) -> Tensor:
    """Information gain ``KL(q' || q)`` about the weights from observing ``(x, y)`` (VIME).

    ``q'`` is the guide after ``num_steps`` updates on the new data with the current guide as
    prior, i.e. steps down ``KL(q_phi || q) - E_{q_phi}[log p(y | x, w)]`` over
    ``phi = (mu, rho)``. As in VIME, each step is preconditioned by the diagonal Hessian of
    that KL term at ``phi = q`` (``1 / sigma^2`` for ``mu``, ``2 sigmoid(rho)^2 / sigma^2`` for
    ``rho``), which makes it invariant to the scale of each weight; a first step then moves
    ``mu`` by ``step_size sigma^2`` times the gradient of the expected log-likelihood, so the
    gain is larger for a point the model explains badly. The guide is left unchanged. The
    gain is a closed-form KL divergence between diagonal Gaussians, hence >= 0.

    Arguments:
        model: The Bayesian network.
        guide: Its trained guide.
        x: New inputs, shape ``(B, D)`` (usually ``B = 1``); the batch is observed jointly.
        y: New targets, shape ``(B,)``.
        num_steps: Number of update steps, >= 1.
        step_size: Step size ``lambda`` of the updates, > 0.
        num_particles: Weight draws per expected log-likelihood, >= 1.

    Returns:
        The gain in nats, a scalar tensor.

    Raises:
        ValueError: If a count or ``step_size`` is invalid, or the data do not fit the network.

    References:
        Houthooft, R., Chen, X., Duan, Y., Schulman, J., De Turck, F. and Abbeel, P. (2016).
        VIME: Variational information maximizing exploration. NeurIPS.
    """
    check_counts(num_steps=num_steps, num_particles=num_particles)
    if not 0 < step_size < math.inf:
        raise ValueError(f"step_size={step_size} must be a finite number > 0")
    model.check_batch(x, y, None)
    prior = {
        name: (loc.detach(), scale.detach())
        for name, (loc, scale) in guide.locs_and_scales().items()
    }
    locs = {name: loc.clone().requires_grad_() for name, (loc, _) in prior.items()}
    rhos = {name: _softplus_inverse(scale).requires_grad_() for name, (_, scale) in prior.items()}
    curvature = [1 / scale.square() for _, scale in prior.values()]
    curvature += [
        2 * torch.sigmoid(rhos[name].detach()).square() / scale.square()
        for name, (_, scale) in prior.items()
    ]
    params = [*locs.values(), *rhos.values()]
    for _ in range(num_steps):
        posterior = {name: (locs[name], softplus(rhos[name])) for name in prior}
        loss = _kl(posterior, prior) - _expected_log_likelihood(
            model, posterior, x, y, num_particles
        )
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for param, grad, hessian in zip(params, grads, curvature, strict=True):
                param -= step_size * grad / hessian
    with torch.no_grad():
        return _kl({name: (locs[name], softplus(rhos[name])) for name in prior}, prior)


def _expected_log_likelihood(
    model: BayesianMLP,
    posterior: dict[str, tuple[Tensor, Tensor]],
    x: Tensor,
    y: Tensor,
    num_particles: int,
) -> Tensor:
    """Reparameterised Monte Carlo estimate of ``E_q[log p(y | x, w)]``."""
    weights = {
        name: loc
        + scale * torch.randn((num_particles, 1, *loc.shape), dtype=loc.dtype, device=loc.device)
        for name, (loc, scale) in posterior.items()
    }
    with pyro.plate(_DRAWS, num_particles, dim=-2):
        trace = poutine.trace(poutine.condition(model, data=weights)).get_trace(x, y)
    site = trace.nodes["obs"]
    return site["fn"].log_prob(site["value"]).sum(-1).mean()


def _kl(
    posterior: dict[str, tuple[Tensor, Tensor]], prior: dict[str, tuple[Tensor, Tensor]]
) -> Tensor:
    """Sum over sites of the KL divergence between diagonal Gaussians."""
    terms = [kl_divergence(Normal(*posterior[name]), Normal(*prior[name])).sum() for name in prior]
    return torch.stack(terms).sum()


def _softplus_inverse(scale: Tensor) -> Tensor:
    return scale + torch.log(-torch.expm1(-scale))


def _check_probs(probs: Tensor) -> None:
    """Raises ValueError unless ``probs`` holds probability vectors along its last dimension."""
    tolerance = 1e3 * torch.finfo(probs.dtype).eps if probs.dtype.is_floating_point else 0
    valid = (
        probs.dtype.is_floating_point
        and probs.ndim >= 1
        and bool((probs >= 0).all())
        and bool(((probs.sum(-1) - 1).abs() <= tolerance).all())
    )
    if not valid:
        raise ValueError("probs must be non-negative and sum to 1 along the last dimension")
