"""Guide health: a collapsed AutoMetFlow and an AutoDAIS at its step-size cap are named, with
the fix; a freshly built guide and the Gaussian guides are healthy."""

import pyro
import pytest
import torch
from guide_targets import correlated_regression, regression
from pyro.infer.autoguide import AutoDiagonalNormal

from pyroext.guides import AutoDAIS, AutoMetFlow
from pyroext.guides.health import ACCEPTANCE_FLOOR, guide_health, warn_if_unhealthy


@pytest.fixture
def data():
    return correlated_regression(20)


def test_a_fresh_metflow_is_healthy(data):
    pyro.set_rng_seed(0)
    guide = AutoMetFlow(regression, K=3)
    guide(*data)
    health = guide_health(guide, *data)
    assert health.acceptance.shape == (3,) and (health.acceptance > 0.2).all()
    assert health.problems == () and "healthy" in repr(health)


def test_a_collapsed_metflow_is_named_with_the_fix(data):
    """Jumps of tens of base scales on a posterior a few base scales wide: no proposal is
    ever accepted, which is what a MetFlow collapsed in training looks like."""
    pyro.set_rng_seed(0)
    guide = AutoMetFlow(regression, K=3, flow_init="random")
    guide(*data)
    with torch.no_grad():
        for parameter in guide.flow.parameters():
            parameter.add_(30 * torch.randn_like(parameter))
    health = guide_health(guide, *data)
    assert (health.acceptance < ACCEPTANCE_FLOOR).all()
    with pytest.warns(UserWarning, match=r"AutoMetFlow: the acceptance of step\(s\) 1, 2, 3 is"):
        warn_if_unhealthy(health)
    assert "num_particles=8" in health.problems[0]


def test_dais_at_its_step_size_cap_is_named(data):
    pyro.set_rng_seed(0)
    guide = AutoDAIS(regression, K=2)
    guide(*data)
    healthy = guide_health(guide, *data)
    assert healthy.problems == () and healthy.step_size_max == guide.eta_max
    with torch.no_grad():
        guide.eta_logit0.fill_(12.0)
    health = guide_health(guide, *data)
    # 10 sigmoid(12 + coeff beta): within 1e-4 of the cap
    torch.testing.assert_close(
        health.step_size, torch.full((2,), 10.0).double(), atol=1e-4, rtol=0
    )
    assert len(health.problems) == 1
    assert "step size of step(s) 1, 2 sits at its cap eta_max=10" in health.problems[0]


def test_guides_without_steps_are_healthy(data):
    for guide in (AutoDiagonalNormal(regression), AutoMetFlow(regression, K=0)):
        guide(*data)
        health = guide_health(guide, *data)
        assert health.acceptance is None and health.problems == ()
