"""The annealed targets of AIS, UHA and the Monte Carlo VAEs: a geometric path from a base."""

__all__ = ["AnnealedTarget"]

from torch import Tensor

from pyroext.kernels.autodiff import value_and_grad
from pyroext.kernels.base import LogDensity, ValueAndGrad


class AnnealedTarget:
    r"""The geometric path :math:`\log\gamma_\beta = (1 - \beta) \log q_0 + \beta \log p`.

    Each position is scored once: the two terms and their gradients at the last position
    scored are kept, so moving to the next temperature, or reading the importance weight's
    terms at the state a step ended in, costs no new evaluation of ``q_0`` or ``p``.

    Arguments:
        log_base: ``log q_0``, ``(..., D) -> (...)``.
        log_target: ``log p`` (unnormalised), same shapes.

    Example:
        >>> import torch
        >>> path = AnnealedTarget(lambda z: -(z**2).sum(-1), lambda z: -((z - 1) ** 2).sum(-1))
        >>> with torch.no_grad():
        ...     value, grad = path.at(torch.tensor(0.5))(torch.zeros(1, 2))
        >>> value, grad
        (tensor([-1.]), tensor([[1., 1.]]))

    References:
        | Annealed Importance Sampling (Neal, 2001)
        | https://arxiv.org/abs/physics/9803008
    """

    def __init__(self, log_base: LogDensity, log_target: LogDensity) -> None:
        self.log_base, self.log_target = log_base, log_target
        self.position: Tensor | None = None
        self.terms: tuple[Tensor, ...] = ()

    def log_terms(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """``log q_0(z)`` and ``log p(z)``."""
        log_q, log_p, _, _ = self._terms(z)
        return log_q, log_p

    def at(self, beta: Tensor) -> ValueAndGrad:
        """The log target at temperature ``beta`` and its gradient, as one function."""

        def annealed(z: Tensor) -> tuple[Tensor, Tensor]:
            log_q, log_p, grad_q, grad_p = self._terms(z)
            return (1 - beta) * log_q + beta * log_p, (1 - beta) * grad_q + beta * grad_p

        return annealed

    def _terms(self, z: Tensor) -> tuple[Tensor, ...]:
        if z is not self.position:
            log_q, grad_q = value_and_grad(self.log_base, z)
            log_p, grad_p = value_and_grad(self.log_target, z)
            self.position, self.terms = z, (log_q, log_p, grad_q, grad_p)
        return self.terms
