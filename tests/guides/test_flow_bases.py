"""MCMC-in-guide guides over a flow base: K = 0 is Pyro's normalising-flow guide over the same
layers, and the base's density away from its own draws inverts the flow."""

import pyro
import pytest
import torch
from guide_targets import (
    correlated_regression,
    loss_with_seed,
    perturb_base_flow,
    positive_model,
    regression,
)
from pyro.distributions.transforms import AffineTransform, ComposeTransformModule
from pyro.infer import Trace_ELBO
from pyro.infer.autoguide import AutoNormalizingFlow

from pyroext.guides import AutoDAIS, AutoMetFlow
from pyroext.guides.base_flows import BASE_FLOWS, base_flow_transforms


@pytest.fixture
def positive_data():
    return 1.5 * torch.randn(20, dtype=torch.float64) + 0.5


@pytest.mark.parametrize("base_flow", BASE_FLOWS)
@pytest.mark.parametrize("guide_class", [AutoMetFlow, AutoDAIS])
def test_zero_steps_with_a_flow_base_is_that_flow_guide(positive_data, guide_class, base_flow):
    """K = 0 with flow layers is Pyro's AutoNormalizingFlow over the same layers and affine
    map: the same ELBO estimate from the same draws."""
    pyro.set_rng_seed(5)
    ours = guide_class(positive_model, K=0, base_flow=base_flow, base_flow_layers=2)
    ours(positive_data)
    perturb_base_flow(ours)
    layers = base_flow_transforms(base_flow, ours.base_flow_nets, detached=False)
    affine = AffineTransform(ours.loc.detach(), ours.scale.detach(), event_dim=1)
    pyros = AutoNormalizingFlow(
        positive_model, lambda dim: ComposeTransformModule([*layers, affine])
    )
    pyros(positive_data)
    elbo = Trace_ELBO(num_particles=100, vectorize_particles=True, max_plate_nesting=1)
    losses = [loss_with_seed(elbo, positive_model, g, positive_data) for g in (ours, pyros)]
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)


@pytest.mark.parametrize("base_flow", BASE_FLOWS)
def test_flow_base_density_of_other_points_inverts_the_flow(base_flow):
    """log q_0 of points that are not the base's own draws inverts the layers (in float64);
    it equals log q_0 of the draws, whose cached inverses it reuses."""
    x, y = correlated_regression(10)
    guide = AutoDAIS(regression, K=1, base_flow=base_flow, base_flow_layers=2)
    guide(x, y)
    perturb_base_flow(guide)
    base = guide.base_distribution()
    draws = base.sample((50,))
    cached = base.log_prob(draws)
    torch.testing.assert_close(base.log_prob(draws.clone()), cached, rtol=1e-6, atol=1e-6)
    assert draws.dtype == torch.float64 and cached.isfinite().all()
