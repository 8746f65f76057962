"""Exact mean and covariance of Gaussian guides, for closed-form comparisons."""

__all__ = ["gaussian_moments"]

import torch
from pyro.infer.autoguide import AutoContinuous, AutoNormal
from torch.distributions import LowRankMultivariateNormal, MultivariateNormal

from pyroext.guides.markov import AutoMarkovGuide


def gaussian_moments(guide: AutoNormal | AutoContinuous) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and covariance of a trained Gaussian guide over its flattened unconstrained latents.

    Latents are flattened in the model's sample order, each site row-major, which is the order
    :class:`~pyro.infer.autoguide.AutoContinuous` packs them in. For unconstrained latents
    (Gaussian regression weights, ...) this is the posterior approximation itself.

    Arguments:
        guide: An ``AutoNormal`` or an ``AutoContinuous`` guide whose ``get_posterior`` is
            Gaussian (AutoDiagonalNormal, AutoMultivariateNormal, AutoLowRankMultivariateNormal),
            already called at least once.

    Returns:
        ``(mean, cov)`` detached, with shapes ``(d,)`` and ``(d, d)``.

    Raises:
        TypeError: If the guide's approximation is not Gaussian.
    """
    with torch.no_grad():
        if isinstance(guide, AutoNormal):
            names = [name for name, _ in guide.prototype_trace.iter_stochastic_nodes()]
            locs, scales = zip(*(guide._get_loc_and_scale(n) for n in names), strict=True)
            mean = torch.cat([loc.reshape(-1) for loc in locs])
            return mean, torch.diag(torch.cat([s.reshape(-1) for s in scales]) ** 2)
        if isinstance(guide, AutoContinuous) and not isinstance(guide, AutoMarkovGuide):
            posterior = guide.get_posterior()
            base = getattr(posterior, "base_dist", posterior)
            if isinstance(base, torch.distributions.Normal):
                return base.loc.clone(), torch.diag(base.scale**2)
            if isinstance(base, MultivariateNormal | LowRankMultivariateNormal):
                return base.loc.clone(), base.covariance_matrix.clone()
    raise TypeError(f"{type(guide).__name__} is not a Gaussian guide")
