"""Gradients of log densities inside guides, differentiable when the guide is being trained."""

__all__ = ["value_and_grad"]

from collections.abc import Callable

import torch
from torch import Tensor


def value_and_grad(
    log_density: Callable[[Tensor], Tensor], position: Tensor
) -> tuple[Tensor, Tensor]:
    """Evaluates a batched log density and its gradient with respect to the position.

    When gradients are enabled (training), the gradient keeps its graph
    (``create_graph=True``): the ELBO then differentiates through the dynamics, which is what
    Hamiltonian and Langevin kernels inside a guide need. Under ``torch.no_grad`` (sampling,
    export) it is computed all the same and returned detached.

    Arguments:
        log_density: Maps positions ``(B, D)`` to log densities ``(B,)``.
        position: Positions ``(B, D)``.

    Returns:
        ``(log_density(position), grad)`` with shapes ``(B,)`` and ``(B, D)``.
    """
    training = torch.is_grad_enabled()
    with torch.enable_grad():
        point = position if position.requires_grad else position.detach().requires_grad_()
        value = log_density(point)
        (grad,) = torch.autograd.grad(value.sum(), point, create_graph=training)
    if training:
        return value, grad
    return value.detach(), grad.detach()
