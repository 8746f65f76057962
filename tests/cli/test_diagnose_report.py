"""What ``diagnose`` reports beyond the summary: deterministic sites (eight schools' theta),
--var-names, the 5%-95% interval, the LOO verdict with its count of bad Pareto k, the guide
health of MCMC-in-guide fits (section and figure) and the divergences of MCMC fits."""

import functools
import warnings

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from arviz_base import from_dict
from exact_guides import exact_family_guide
from pyro.infer.autoguide import AutoNormal

from pyroext.arviz import from_pyro_svi
from pyroext.cli import main
from pyroext.cli.diagnose import diagnose_run
from pyroext.cli.figures import ppc_figure
from pyroext.data import synthetic_regression
from pyroext.guides import AutoDAIS, AutoMetFlow
from pyroext.infer import run_svi
from pyroext.models import linear_regression as lr
from pyroext.runs import POSTERIOR_FILE, save_datatree

Y = torch.tensor([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0], dtype=torch.float64)
SIGMA = torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0], dtype=torch.float64)


def eight_schools(sigma, y=None):
    mu = pyro.sample("mu", dist.Normal(sigma.new_zeros(()), 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(sigma.new_tensor(5.0)))
    with pyro.plate("school", len(sigma)):
        eta = pyro.sample("eta", dist.Normal(sigma.new_zeros(()), 1.0))
        theta = pyro.deterministic("theta", mu + tau * eta)
        pyro.sample("obs", dist.Normal(theta, sigma), obs=y)


def _run_folder(tmp_path, model, guide, *args, num_samples=400):
    tree = from_pyro_svi(model, guide, *args, num_samples=num_samples, seed=0)
    save_datatree(tree, tmp_path / POSTERIOR_FILE)
    return tmp_path


@pytest.fixture(scope="module")
def schools(tmp_path_factory):
    pyro.clear_param_store()
    guide = AutoNormal(eight_schools)
    run_svi(eight_schools, guide, SIGMA, Y, num_steps=300, seed=0, progress=False)
    return _run_folder(tmp_path_factory.mktemp("schools"), eight_schools, guide, SIGMA, Y)


def test_deterministic_sites_are_kept_with_the_projects_interval(schools):
    report = diagnose_run(schools)
    rows = list(report.summary.index)
    assert [row for row in rows if row.startswith("theta")] == [f"theta[{i}]" for i in range(8)]
    assert {"eti90_lb", "eti90_ub"} <= set(report.summary.columns)  # fit's 5% and 95%
    mean, low = report.summary.loc["theta[0]", ["mean", "eti90_lb"]].astype(float)
    assert low < mean


def test_var_names_choose_what_is_summarised(schools, capsys):
    assert main(["diagnose", str(schools), "--var-names", "mu", "tau"]) == 0
    shown = capsys.readouterr().out
    assert "mu" in shown and "theta[0]" not in shown
    with pytest.raises(ValueError, match="var_names: sigma not in the posterior; valid names: "):
        diagnose_run(schools, var_names=["sigma"])


@pytest.mark.parametrize(
    "scale, verdict", [(1.0, "LOO reliable: all 100"), (0.3, "LOO unreliable")]
)
def test_the_loo_verdict_counts_bad_pareto_k(tmp_path, scale, verdict, capsys):
    data = synthetic_regression(num_data=100, dtype=torch.float64)
    options = {"noise_scale": 0.7, "prior_precision": 1.0}
    posterior = lr.conjugate_posterior(data.x, data.y, **options)
    model = functools.partial(lr.model_known_noise, **options)
    guide = exact_family_guide(posterior, scale)
    run = _run_folder(tmp_path, model, guide, data.x, data.y, num_samples=1000)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["diagnose", str(run)]) == 0
    assert not [w for w in caught if "pareto" in str(w.message).lower()]  # ours is one line
    out = capsys.readouterr().out
    assert verdict in out
    bad = int((diagnose_run(run).loo.pareto_k.values > 0.7).sum())
    if scale < 1:
        assert bad > 0 and f"LOO unreliable: {bad} of 100 Pareto k above" in out


def _regression():
    data = synthetic_regression(num_data=30, dtype=torch.float64)
    model = functools.partial(lr.model_known_noise, noise_scale=0.7, prior_precision=1.0)
    return model, data.x, data.y


def test_dais_fit_has_a_health_section_and_figure(tmp_path, capsys):
    model, x, y = _regression()
    pyro.clear_param_store()
    guide = AutoDAIS(model, K=3)
    run_svi(model, guide, x, y, num_steps=50, seed=0, progress=False)
    report = diagnose_run(_run_folder(tmp_path, model, guide, x, y))
    assert report.health.step_size.shape == (3,) and report.health.step_size_max == 10.0
    assert report.health.acceptance is None and report.health.problems == ()
    assert (tmp_path / "diagnostics" / "guide_health.png").stat().st_size > 10_000


def test_collapsed_metflow_is_named_in_the_report(tmp_path, capsys):
    model, x, y = _regression()
    pyro.set_rng_seed(0)
    guide = AutoMetFlow(model, K=2, flow_init="random")
    guide(x, y)
    with torch.no_grad():
        for parameter in guide.flow.parameters():
            parameter.add_(30 * torch.randn_like(parameter))
    run = _run_folder(tmp_path, model, guide, x, y)
    assert main(["diagnose", str(run)]) == 0
    out = capsys.readouterr().out
    assert "guide health (AutoMetFlow): acceptance per step [" in out
    assert "AutoMetFlow: the acceptance of step(s) 1, 2 is below 1%" in out


def test_mcmc_divergences_are_counted(tmp_path, capsys):
    rng = np.random.default_rng(0)
    diverging = np.zeros((2, 100), dtype=bool)
    diverging[0, [3, 50, 70]] = True
    tree = from_dict(
        {
            "posterior": {"mu": rng.normal(size=(2, 100))},
            "sample_stats": {"diverging": diverging},
        }
    )
    save_datatree(tree, tmp_path / POSTERIOR_FILE)
    assert main(["diagnose", str(tmp_path)]) == 0
    assert "divergent transitions: 3" in capsys.readouterr().out


@pytest.mark.parametrize("data", ["measurements", "rounded measurements", "labels"])
def test_the_ppc_has_a_panel_per_feature_and_histograms_for_labels(data):
    rng = np.random.default_rng(0)
    points, draws = 10 * rng.normal(size=(30, 2)), 10 * rng.normal(size=(1, 20, 30, 2))
    if data == "rounded measurements":  # integers, but nearly all distinct: densities
        points, draws = np.round(points), np.round(draws)
    if data == "labels":  # few values, each many times: histograms
        points, draws = rng.integers(0, 3, size=points.shape), rng.integers(0, 3, size=draws.shape)
    tree = from_dict(
        {"posterior_predictive": {"x": draws}, "observed_data": {"x": points}},
        dims={"x": ["obs", "feature"]},
        coords={"feature": ["eruptions", "waiting"]},
    )
    figure = ppc_figure(tree)
    titles = sorted(axis.get_title() for axis in figure.axes)
    assert titles == ["x[eruptions]", "x[waiting]"]
    assert all(axis.get_xlabel() == "observed value" for axis in figure.axes)
    styles = {line.get_drawstyle() for axis in figure.axes for line in axis.lines}
    assert styles == ({"steps-post"} if data == "labels" else {"default"})
