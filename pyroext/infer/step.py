"""``pyro.infer.SVI`` whose step returns the loss as a device tensor instead of a float."""

__all__ = ["TensorSVI"]

import functools
from typing import Any

import pyro.infer.util
import torch
from pyro import poutine
from pyro.infer import SVI
from pyro.infer.elbo import ELBO
from pyro.optim import PyroOptim
from torch import Tensor

from pyroext.infer.compiled.elbo import CompiledELBO
from pyroext.infer.optim import FusedOptim


class TensorSVI(SVI):
    """Pyro's SVI, with :meth:`step_tensor` returning the loss without a device-to-host sync.

    ``SVI.step`` ends with ``torch_item(loss)``, which blocks on a GPU every step. When the
    ELBO's ``differentiable_loss`` (or, for JitTrace_ELBO, its compiled
    ``loss_and_surrogate_loss``) is its own gradient path, as for Trace_ELBO, TraceEnum_ELBO,
    TraceMeanField_ELBO, their Jit variants and TraceTMC_ELBO, the loss is built and
    differentiated as a tensor and stays on the device. Other objectives (RenyiELBO,
    TraceGraph_ELBO, a user ELBO that overrides ``loss_and_grads``) keep Pyro's own
    ``loss_and_grads``. Pyro's ELBOs may still sync internally (Trace_ELBO reads each site's
    ``log_prob_sum`` with ``torch_item``).

    Arguments:
        model: A Pyro model.
        guide: A Pyro guide.
        optim: A Pyro optimiser.
        loss: A Pyro ELBO instance.
    """

    def __init__(self, model: Any, guide: Any, optim: PyroOptim, loss: ELBO) -> None:
        super().__init__(model, guide, optim, loss)
        self.elbo = loss  # SVI keeps only the ELBO's bound methods
        for attribute, backward in SYNC_FREE_PATHS:
            if _is_gradient_path(loss, attribute):
                self.loss_and_grads = functools.partial(backward, loss)
                break

    def step_tensor(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Takes one gradient step, as ``SVI.step`` does, and returns the detached loss tensor.

        Raises:
            TypeError: For objectives whose loss is a tuple (ReweightedWakeSleep).
        """
        if isinstance(self.elbo, CompiledELBO):  # it knows its parameters: no capture needed
            prepare = self.optim.prepare if type(self.optim) is FusedOptim else None
            result = self.elbo.step(self.model, self.guide, *args, optimizer=prepare, **kwargs)
            if not result.updated:
                self.optim(result.params)
            for param in result.params:
                param.grad = None  # the next compiled step assigns its gradients
            return result.loss
        with poutine.trace(param_only=True) as param_capture:
            loss = self.loss_and_grads(self.model, self.guide, *args, **kwargs)
        params = {site["value"].unconstrained() for site in param_capture.trace.nodes.values()}
        self.optim(params)
        pyro.infer.util.zero_grads(params)
        if isinstance(loss, tuple):
            raise TypeError("run_svi needs a scalar loss; use pyro.infer.SVI for tuple losses")
        return loss.detach() if isinstance(loss, torch.Tensor) else torch.tensor(float(loss))


def _defining_class(cls: type, attribute: str) -> type | None:
    return next((c for c in cls.__mro__ if attribute in vars(c)), None)


def _is_gradient_path(loss: ELBO, attribute: str) -> bool:
    """Whether ``attribute`` computes what ``loss_and_grads`` differentiates: it must be defined
    at least as specifically, so that an ELBO overriding only ``loss_and_grads`` keeps it."""
    path = _defining_class(type(loss), attribute)
    if path is None:
        return False
    with_grads = _defining_class(type(loss), "loss_and_grads")
    return with_grads is None or issubclass(path, with_grads)


def _backward_surrogate(loss: ELBO, model: Any, guide: Any, *args: Any, **kwargs: Any) -> Tensor:
    # JitTrace_ELBO: its differentiable_loss adds a NaN hook and extra autograd nodes
    value, surrogate = loss.loss_and_surrogate_loss(model, guide, *args, **kwargs)
    if surrogate.requires_grad:
        surrogate.backward(retain_graph=loss.retain_graph)
    return value


def _backward_differentiable(
    loss: ELBO, model: Any, guide: Any, *args: Any, **kwargs: Any
) -> Tensor:
    value = loss.differentiable_loss(model, guide, *args, **kwargs)
    if value.requires_grad:
        value.backward(retain_graph=loss.retain_graph)
    return value


SYNC_FREE_PATHS = (
    ("loss_and_surrogate_loss", _backward_surrogate),
    ("differentiable_loss", _backward_differentiable),
)
