"""The Gaussian base ``q_0`` of the MCMC-in-guide guides: its parameters, law and whitening."""

__all__ = ["BASE_DISTS", "GaussianBase"]

import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.nn import PyroParam
from torch import Tensor, nn

BASE_DISTS = ("diagonal", "cholesky")


class GaussianBase:
    """Mixin of a guide module: ``q_0 = N(loc, A A^T)`` over the flat unconstrained latents.

    ``A`` is ``diag(scale)`` (as :class:`~pyro.infer.autoguide.AutoDiagonalNormal`) or
    ``diag(scale) @ scale_tril`` with a unit lower-triangular ``scale_tril`` (as
    :class:`~pyro.infer.autoguide.AutoMultivariateNormal`). Kernels move in its whitened
    coordinates ``A^-1 (z - loc)``, where ``q_0`` is standard normal, so their step sizes are
    in units of ``q_0``'s scale, which shrinks with the posterior during training.
    """

    base_dist: str
    loc: Tensor
    scale: Tensor
    scale_tril: Tensor

    def _setup_base(self, init_loc: Tensor, init_scale: float) -> None:
        self.loc = nn.Parameter(init_loc)
        self.scale = PyroParam(
            init_loc.new_full(init_loc.shape, init_scale), constraints.softplus_positive
        )
        if self.base_dist == "cholesky":
            eye = torch.eye(init_loc.shape[-1], dtype=init_loc.dtype, device=init_loc.device)
            self.scale_tril = PyroParam(eye, constraints.unit_lower_cholesky)

    def base_distribution(self) -> dist.TorchDistribution:
        """The base ``q_0`` over the flattened unconstrained latents."""
        if self.base_dist == "cholesky":
            return dist.MultivariateNormal(self.loc, scale_tril=self._base_tril())
        return dist.Normal(self.loc, self.scale).to_event(1)

    def _base_tril(self) -> Tensor:
        return self.scale.unsqueeze(-1) * self.scale_tril

    def _whiten(self, z: Tensor) -> Tensor:
        """``A^-1 (z - loc)``: standard normal under ``q_0``."""
        if self.base_dist == "cholesky":
            centred = (z - self.loc).unsqueeze(-1)
            return torch.linalg.solve_triangular(self._base_tril(), centred, upper=False)[..., 0]
        return (z - self.loc) / self.scale

    def _unwhiten(self, white: Tensor) -> Tensor:
        """``loc + A white``, the inverse of :meth:`_whiten`."""
        if self.base_dist == "cholesky":
            return self.loc + (self._base_tril() @ white.unsqueeze(-1))[..., 0]
        return self.loc + self.scale * white
