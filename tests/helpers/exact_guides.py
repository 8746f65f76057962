"""Guides of the exact posterior's family, for tests that need a known k-hat."""

__all__ = ["exact_family_guide"]

import pyro
import pyro.distributions as dist


def exact_family_guide(posterior, scale):
    """The conjugate posterior's Gaussian with its covariance scaled by ``scale**2``: exact
    at 1, too narrow below (k-hat of p/q about ``1 - scale**2``)."""

    def guide(x, y=None):
        theta = pyro.sample(
            "theta",
            dist.MultivariateNormal(posterior.mean, scale**2 * posterior.cov),
            infer={"is_auxiliary": True},
        )
        pyro.sample("w", dist.Delta(theta[:-1]).to_event(1))
        pyro.sample("b", dist.Delta(theta[-1]))

    return guide
