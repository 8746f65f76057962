"""The base ``q_0`` of the MCMC-in-guide guides, a Gaussian optionally warped by flow layers:
its parameters, law and whitening."""

__all__ = ["BASE_DISTS", "BASE_TRAINING", "GaussianBase", "check_base_options", "own_elbo_term"]

import contextlib
from collections.abc import Callable, Iterator

import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.distributions.transforms import AffineTransform, LowerCholeskyAffine
from pyro.nn import PyroParam
from torch import Tensor, nn

from pyroext.checks import check_counts
from pyroext.guides.base_flows import BASE_FLOWS, base_flow_nets, base_flow_transforms

BASE_DISTS = ("diagonal", "cholesky")
BASE_TRAINING = ("own", "joint")


class GaussianBase:
    """Mixin of a guide module: ``q_0 = N(loc, A A^T)`` over the flat unconstrained latents.

    ``A`` is ``diag(scale)`` (as :class:`~pyro.infer.autoguide.AutoDiagonalNormal`) or
    ``diag(scale) @ scale_tril`` with a unit lower-triangular ``scale_tril`` (as
    :class:`~pyro.infer.autoguide.AutoMultivariateNormal`). Kernels move in its whitened
    coordinates ``A^-1 (z - loc)``, where ``q_0`` is standard normal, so their step sizes are
    in units of ``q_0``'s scale, which shrinks with the posterior during training.
    With ``base_flow``, ``q_0`` is the law of ``loc + A F(e)``, ``e`` standard normal and
    ``F`` a few flow layers (:mod:`~pyroext.guides.base_flows`) starting at the identity;
    the whitening stays affine, so that the kernels' step sizes keep their units.
    Inside :meth:`detached_base` every use of ``q_0`` sees its parameters as constants.
    """

    base_dist: str
    base_flow: str | None = None
    base_flow_layers: int = 1
    loc: Tensor
    scale: Tensor
    scale_tril: Tensor
    _base_detached: bool = False

    @contextlib.contextmanager
    def detached_base(self) -> Iterator[None]:
        """Within it, ``q_0``'s law and whitening carry no gradient to its parameters."""
        self._base_detached = True
        try:
            yield
        finally:
            self._base_detached = False

    def _base_loc(self) -> Tensor:
        return self.loc.detach() if self._base_detached else self.loc

    def _base_factor(self) -> Tensor:
        """``A``: the scale vector (diagonal) or the lower-triangular factor (cholesky)."""
        if self.base_dist == "cholesky":
            factor = self.scale.unsqueeze(-1) * self.scale_tril
        else:
            factor = self.scale
        return factor.detach() if self._base_detached else factor

    def _setup_base(self, init_loc: Tensor, init_scale: float) -> None:
        self.loc = nn.Parameter(init_loc)
        self.scale = PyroParam(
            init_loc.new_full(init_loc.shape, init_scale), constraints.softplus_positive
        )
        if self.base_dist == "cholesky":
            eye = torch.eye(init_loc.shape[-1], dtype=init_loc.dtype, device=init_loc.device)
            self.scale_tril = PyroParam(eye, constraints.unit_lower_cholesky)
        if self.base_flow is not None:
            nets = base_flow_nets(self.base_flow, init_loc.shape[-1], self.base_flow_layers)
            self.base_flow_nets = nets.to(dtype=init_loc.dtype, device=init_loc.device)

    def base_distribution(self) -> dist.TorchDistribution:
        """The base ``q_0`` over the flattened unconstrained latents."""
        if self.base_flow is not None:
            return self._flow_distribution()
        return self.gaussian_part()

    def gaussian_part(self) -> dist.TorchDistribution:
        """``q_0`` without its flow layers: the law of ``loc + A e`` (``q_0`` itself without
        ``base_flow``), whose density needs no flow inversion."""
        if self.base_dist == "cholesky":
            return dist.MultivariateNormal(self._base_loc(), scale_tril=self._base_factor())
        return dist.Normal(self._base_loc(), self._base_factor()).to_event(1)

    def _flow_distribution(self) -> dist.TransformedDistribution:
        loc, factor = self._base_loc(), self._base_factor()
        noise = dist.Normal(torch.zeros_like(loc), torch.ones_like(loc)).to_event(1)
        layers = base_flow_transforms(self.base_flow, self.base_flow_nets, self._base_detached)
        # cache_size=1: log q_0 of the base's own draws reuses the layers' cached inverses
        # instead of inverting an autoregressive flow, which takes D network passes.
        if self.base_dist == "cholesky":
            affine = LowerCholeskyAffine(loc, factor, cache_size=1)
        else:
            affine = AffineTransform(loc, factor, event_dim=1, cache_size=1)
        return dist.TransformedDistribution(noise, [*layers, affine])

    def _whiten(self, z: Tensor) -> Tensor:
        """``A^-1 (z - loc)``: standard normal under ``q_0``."""
        centred, factor = z - self._base_loc(), self._base_factor()
        if self.base_dist == "cholesky":
            white = torch.linalg.solve_triangular(factor, centred.unsqueeze(-1), upper=False)
            return white[..., 0]
        return centred / factor

    def _unwhiten(self, white: Tensor) -> Tensor:
        """``loc + A white``, the inverse of :meth:`_whiten`."""
        if self.base_dist == "cholesky":
            return self._base_loc() + (self._base_factor() @ white.unsqueeze(-1))[..., 0]
        return self._base_loc() + self._base_factor() * white


def check_base_options(
    base_dist: str,
    base_training: str,
    init_scale: float,
    base_flow: str | None = None,
    base_flow_layers: int = 1,
) -> None:
    """Checks the base's options of an MCMC-in-guide guide.

    Raises:
        ValueError: Naming the first invalid option and its valid values.
    """
    if base_flow is not None and base_flow not in BASE_FLOWS:
        raise ValueError(f"base_flow={base_flow!r} must be None or one of {', '.join(BASE_FLOWS)}")
    check_counts(base_flow_layers=base_flow_layers)
    if base_dist not in BASE_DISTS:
        raise ValueError(f"base_dist={base_dist!r} must be one of {', '.join(BASE_DISTS)}")
    if base_training not in BASE_TRAINING:
        raise ValueError(
            f"base_training={base_training!r} must be one of {', '.join(BASE_TRAINING)}"
        )
    if not init_scale > 0:
        raise ValueError(f"init_scale={init_scale!r} must be > 0")


def own_elbo_term(z0: Tensor, log_q0: Tensor, log_joint: Callable[[Tensor], Tensor]) -> Tensor:
    """Zero-valued, with the gradient of the base's own ELBO integrand ``log p(z_0) - log
    q_0(z_0)`` at reparameterised draws ``z0`` (``log_q0`` their base log density): subtracted
    from a guide's log density, it trains the base as the K = 0 guide is trained, while the
    steps start from detached draws.
    """
    own = log_joint(z0) - log_q0
    return own - own.detach()
