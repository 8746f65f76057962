"""Gradients of log densities inside guides, differentiable when the guide is being trained."""

__all__ = ["JIT_MESSAGE", "value_and_grad"]

from collections.abc import Callable

import torch
from torch import Tensor

JIT_MESSAGE = (
    "torch.jit.trace cannot record the gradient of the model's log density that this guide "
    "takes inside each step (its backward pass saves tensors the tracer cannot capture); use "
    "Trace_ELBO instead of JitTrace_ELBO, and do not jit-trace the guide"
)


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
        tracing = torch.jit.is_tracing()  # the failing backward pass leaves tracing state off
        try:
            (grad,) = torch.autograd.grad(value.sum(), point, create_graph=training)
        except RuntimeError as error:
            if tracing and "as a constant" in str(error):
                raise RuntimeError(JIT_MESSAGE) from error
            raise
    if training:
        return value, grad
    return value.detach(), grad.detach()
