"""Guide health in run_svi: the bar shows acceptance and step sizes without changing the fit,
the result carries the final health, and a collapsed guide is warned about by name."""

import re
import warnings

import numpy as np
import pyro
import pytest
import torch
from guide_targets import correlated_regression, regression
from pyro.infer import Trace_ELBO
from pyro.infer.autoguide import AutoNormal

from pyroext.guides import AutoDAIS, AutoMetFlow
from pyroext.infer import run_svi
from pyroext.infer.progress import TrainingProgress

DATA = correlated_regression(20)


def _fit(guide, progress, num_steps=30):
    return run_svi(
        regression,
        guide,
        *DATA,
        num_steps=num_steps,
        loss=Trace_ELBO(num_particles=2, vectorize_particles=True),
        optim=pyro.optim.Adam({"lr": 0.01}),
        seed=0,
        progress=progress,
        display_every=5,
    )


def test_showing_health_leaves_the_fit_bit_for_bit(capsys):
    pyro.clear_param_store()
    shown = _fit(AutoMetFlow(regression, K=2), progress=True)
    pyro.clear_param_store()
    hidden = _fit(AutoMetFlow(regression, K=2), progress=False)
    np.testing.assert_array_equal(shown.losses, hidden.losses)
    assert shown.health.acceptance.shape == (2,)
    torch.testing.assert_close(shown.health.acceptance, hidden.health.acceptance)
    assert "acc=[" in capsys.readouterr().err


@pytest.mark.parametrize(
    "guide_class, shown",
    [
        (AutoDAIS, r"elbo=-3, eta=\[0.1 0.1 0.1\]"),
        (AutoMetFlow, r"elbo=-3, acc=\[(0\.\d+ ?){3}\]"),
    ],
)
def test_the_bar_shows_acceptance_or_step_size_per_step(guide_class, shown):
    """DAIS (no accept step) shows its step sizes, at eta_init before training; MetFlow its
    acceptance probabilities."""
    pyro.set_rng_seed(0)
    guide = guide_class(regression, K=3)
    guide(*DATA)
    with TrainingProgress(10, 0, True, guide) as bar:
        bar.update(5, np.full(5, 3.0), DATA, {})
        assert re.fullmatch(shown, bar.bar.postfix)


def test_a_guide_without_steps_has_no_health():
    pyro.clear_param_store()
    assert _fit(AutoNormal(regression), progress=False).health is None


def _collapsed_metflow():
    """Flow weights moved by tens: proposals land far outside a posterior a few base scales
    wide, and none is accepted (what a MetFlow collapsed in training looks like)."""
    pyro.set_rng_seed(0)
    guide = AutoMetFlow(regression, K=3, flow_init="random")
    guide(*DATA)
    with torch.no_grad():
        for parameter in guide.flow.parameters():
            parameter.add_(30 * torch.randn_like(parameter))
    return guide


def _capped_dais():
    pyro.set_rng_seed(0)
    guide = AutoDAIS(regression, K=2)
    guide(*DATA)
    with torch.no_grad():
        guide.eta_logit0.fill_(12.0)  # eta = 10 sigmoid(12 + ...): at the cap
    return guide


@pytest.mark.parametrize(
    "make_guide, message",
    [
        (_collapsed_metflow, r"AutoMetFlow: the acceptance of step\(s\) 1, 2, 3 is below 1%"),
        (_capped_dais, r"AutoDAIS: the step size of step\(s\) 1, 2 sits at its cap eta_max=10"),
    ],
)
def test_an_unhealthy_guide_is_warned_about_after_the_fit(make_guide, message):
    guide = make_guide()
    with pytest.warns(UserWarning, match=message) as caught:
        result = run_svi(
            regression,
            guide,
            *DATA,
            num_steps=3,
            optim=pyro.optim.Adam({"lr": 1e-6}),
            progress=False,
        )
    assert result.health.problems and caught[0].filename == __file__


def test_a_healthy_guide_is_not_warned_about():
    pyro.clear_param_store()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = _fit(AutoDAIS(regression, K=2), progress=False)
    assert result.health.problems == () and result.health.step_size.shape == (2,)
