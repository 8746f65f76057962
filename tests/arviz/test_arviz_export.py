"""ArviZ 1.x export of MCMC and SVI results: eight schools, conjugate regression, round trip."""

import math

import arviz_plots
import arviz_stats
import matplotlib
import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
import xarray as xr
from pyro.infer import MCMC, NUTS
from pyro.infer.autoguide import AutoMultivariateNormal, AutoNormal

import pyroext
from pyroext.arviz import collect_sample_stats, from_pyro, from_pyro_svi
from pyroext.infer import run_svi
from pyroext.models.linear_regression import conjugate_posterior, model_known_noise

matplotlib.use("Agg")

Y = torch.tensor([28.0, 8, -3, 7, -1, 1, 18, 12], dtype=torch.float64)
SIGMA = torch.tensor([15.0, 10, 16, 11, 9, 11, 10, 18], dtype=torch.float64)
SCHOOLS = [
    "Choate",
    "Deerfield",
    "Andover",
    "Exeter",
    "Hotchkiss",
    "Lawrenceville",
    "StPauls",
    "Hermon",
]


def eight_schools(sigma, y=None):
    mu = pyro.sample("mu", dist.Normal(sigma.new_tensor(0.0), 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(sigma.new_tensor(5.0)))
    with pyro.plate("school", len(sigma)):
        eta = pyro.sample("eta", dist.Normal(sigma.new_tensor(0.0), 1.0))
        theta = pyro.deterministic("theta", mu + tau * eta)
        pyro.sample("obs", dist.Normal(theta, sigma), obs=y)


@pytest.fixture(scope="module")
def nuts_run():
    pyro.set_rng_seed(1)
    hook, running_means = collect_sample_stats(), []

    def hooks(kernel, params, stage, i):
        hook(kernel, params, stage, i)
        if stage.startswith("Sample"):
            running_means.append(kernel._mean_accept_prob)

    # Pyro runs chains in worker processes when CPUs are free, and the hook must run here.
    kernel = NUTS(eight_schools)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pyro.infer.mcmc.api.mp, "cpu_count", lambda: 1)
        with pytest.warns(UserWarning, match="sequentially"):
            mcmc = MCMC(kernel, 200, 100, num_chains=2, hook_fn=hooks, disable_progbar=True)
    mcmc.run(SIGMA, Y)
    return mcmc, hook, np.reshape(running_means, (2, 200))


@pytest.fixture(scope="module")
def nuts_tree(nuts_run):
    mcmc, hook, _ = nuts_run
    return from_pyro(mcmc, sample_stats=hook.records, coords={"school": SCHOOLS})


def train_eight_schools(num_steps=300):
    guide = AutoNormal(eight_schools)
    run_svi(eight_schools, guide, SIGMA, Y, num_steps=num_steps, progress=False, seed=0)
    return guide


def assert_no_padding_dims(tree):
    for node in tree.subtree:
        assert not [dim for dim in node.dataset.dims if "_dim_" in str(dim)], node.path


def test_nuts_groups_dims_and_sample_stats(nuts_tree, nuts_run):
    dt = nuts_tree
    assert set(dt.children) == {
        "posterior",
        "posterior_predictive",
        "log_likelihood",
        "sample_stats",
        "observed_data",
    }
    assert set(dt.posterior.data_vars) == {"mu", "tau", "eta", "theta"}
    assert dt.posterior.mu.dims == ("chain", "draw")
    assert dt.posterior.theta.dims == ("chain", "draw", "school")
    assert dt.posterior.sizes == {"chain": 2, "draw": 200, "school": 8}
    assert list(dt.posterior.school.values) == SCHOOLS
    assert set(dt.observed_data.data_vars) == set(dt.log_likelihood.data_vars) == {"obs"}
    np.testing.assert_array_equal(dt.observed_data.obs, Y.numpy())
    theta = dt.posterior.mu + dt.posterior.tau * dt.posterior.eta
    np.testing.assert_allclose(dt.posterior.theta, theta, rtol=1e-12)
    stats = dt.sample_stats
    assert set(stats.data_vars) == {"lp", "acceptance_rate", "diverging", "step_size"}
    assert stats.diverging.dtype == bool and stats.lp.dims == ("chain", "draw")
    assert dt.posterior.attrs["sample_dims"] == ["chain", "draw"]
    assert dt.attrs["inference_library"] == "pyro"
    assert dt.attrs["pyroext_version"] == pyroext.__version__
    assert_no_padding_dims(dt)
    mcmc, _, _ = nuts_run
    samples = mcmc.get_samples(group_by_chain=True)
    np.testing.assert_array_equal(dt.posterior.eta, samples["eta"].numpy())


def test_nuts_result_feeds_arviz(nuts_tree):
    dt = nuts_tree
    rhat = arviz_stats.rhat(dt).to_dataset()
    assert all(float(rhat[name].max()) < 1.05 for name in rhat.data_vars)
    ess = arviz_stats.ess(dt).to_dataset()
    assert float(ess["mu"]) > 50
    summary = arviz_stats.summary(dt)
    assert "theta[Choate]" in summary.index and "r_hat" in summary.columns
    with pytest.warns(UserWarning, match="Pareto"):
        loo = arviz_stats.loo(dt)
    assert -35 < loo.elpd < -28 and loo.n_data_points == 8
    pc = arviz_plots.plot_dist(dt, var_names=["mu", "tau"], backend="matplotlib")
    assert pc.viz["figure"].item() is not None
    matplotlib.pyplot.close("all")


def test_sample_stats_hook_matches_the_kernel(nuts_run, nuts_tree):
    mcmc, hook, running_means = nuts_run
    stats = nuts_tree.sample_stats
    # NUTS keeps only the running mean of the acceptance probabilities; the hook inverts it.
    draws = np.arange(1, 201)
    np.testing.assert_allclose(np.cumsum(stats.acceptance_rate, 1) / draws, running_means)
    assert float(stats.acceptance_rate.min()) >= 0 and float(stats.acceptance_rate.max()) <= 1
    for chain, divergent in enumerate(mcmc.diagnostics()["divergences"].values()):
        assert np.flatnonzero(stats.diverging[chain]).tolist() == list(divergent)
    assert np.all(stats.step_size[:, 1:].values == stats.step_size[:, :-1].values)
    assert hook.records["lp"].shape == (2, 200)
    assert float(stats.lp.std()) > 0


def test_nuts_default_stats_prior_and_predictions(nuts_run):
    mcmc, _, _ = nuts_run
    new_sigma = SIGMA * 2
    dt = from_pyro(
        mcmc,
        prior=50,
        predictions={"sigma": new_sigma, "y": None},
        constant_data={"sigma": SIGMA},
        dims={"sigma": ["school"]},
        pred_dims={"sigma": ["school"]},
        coords={"school": SCHOOLS},
        log_likelihood=False,
    )
    assert "log_likelihood" not in dt.children
    assert set(dt.sample_stats.data_vars) == {"diverging"}
    assert dt.prior.sizes == {"chain": 1, "draw": 50, "school": 8}
    assert set(dt.prior_predictive.data_vars) == {"obs"}
    assert list(dt.constant_data.school.values) == SCHOOLS
    assert dt.predictions.obs.sizes == {"chain": 2, "draw": 200, "school": 8}
    assert list(dt.predictions.school.values) == SCHOOLS
    np.testing.assert_array_equal(dt.predictions.theta, dt.posterior.theta)
    ratio = dt.predictions.obs.std(("chain", "draw")) / dt.posterior_predictive.obs.std()
    assert float(ratio.mean()) > 1.3
    np.testing.assert_array_equal(dt.predictions_constant_data.sigma, new_sigma.numpy())


def test_svi_export_feeds_arviz():
    guide = train_eight_schools()
    dt = from_pyro_svi(eight_schools, guide, SIGMA, Y, num_samples=400, seed=0)
    assert set(dt.children) == {
        "posterior",
        "unconstrained_posterior",
        "posterior_predictive",
        "log_likelihood",
        "sample_stats",
        "observed_data",
    }
    assert dt.attrs["guide"] == "AutoNormal"
    assert dt.posterior.sizes == {"chain": 1, "draw": 400, "school": 8}
    assert set(dt.sample_stats.data_vars) == {"lp", "lq"}
    # Only tau is constrained; AutoNormal works with log(tau).
    assert set(dt.unconstrained_posterior.data_vars) == {"tau"}
    np.testing.assert_allclose(dt.unconstrained_posterior.tau, np.log(dt.posterior.tau))
    assert "theta" in dt.posterior and "theta" not in dt.observed_data
    assert "theta" not in dt.log_likelihood
    assert_no_padding_dims(dt)
    with pytest.warns(UserWarning, match="Pareto"):
        loo = arviz_stats.loo_approximate_posterior(dt, dt.sample_stats.lp, dt.sample_stats.lq)
    assert -35 < loo.elpd < -28
    assert np.isfinite(arviz_stats.summary(dt, kind="stats").to_numpy()).all()
    assert float(arviz_stats.ess(dt).to_dataset()["mu"]) > 200


def test_svi_lp_and_lq_match_independent_scoring():
    guide = train_eight_schools()
    dt = from_pyro_svi(eight_schools, guide, SIGMA, Y, num_samples=50, seed=3)
    post = {name: torch.from_numpy(dt.posterior[name].values[0]) for name in ["mu", "tau", "eta"]}
    q = {
        "mu": dist.Normal(guide.locs.mu, guide.scales.mu),
        "tau": dist.TransformedDistribution(
            dist.Normal(guide.locs.tau, guide.scales.tau), [torch.distributions.ExpTransform()]
        ),
        "eta": dist.Normal(guide.locs.eta, guide.scales.eta),
    }
    for s in range(50):
        draw = {name: value[s] for name, value in post.items()}
        conditioned = pyro.poutine.condition(eight_schools, data=draw)
        trace = pyro.poutine.trace(conditioned).get_trace(SIGMA, Y)
        with torch.no_grad():
            lq = sum(q[name].log_prob(value).sum() for name, value in draw.items())
        assert float(dt.sample_stats.lp[0, s]) == pytest.approx(
            float(trace.log_prob_sum()), abs=1e-5
        )
        assert float(dt.sample_stats.lq[0, s]) == pytest.approx(float(lq), abs=1e-5)


@pytest.fixture(scope="module")
def regression():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(40, 3, dtype=torch.float64, generator=generator)
    noise = torch.randn(40, dtype=torch.float64, generator=generator)
    y = x @ x.new_tensor([1.0, -2.0, 0.5]) + 0.3 + 0.5 * noise
    guide = AutoMultivariateNormal(model_known_noise)
    adam = pyro.optim.Adam({"lr": 0.02})
    options = {"model_kwargs": {"noise_scale": 0.5}, "progress": False}
    run_svi(model_known_noise, guide, x, y, num_steps=1500, optim=adam, seed=0, **options)
    x_new = torch.randn(5, 3, dtype=torch.float64, generator=generator)
    dt = from_pyro_svi(
        model_known_noise,
        guide,
        x,
        y,
        model_kwargs={"noise_scale": 0.5},
        num_samples=4000,
        seed=0,
        predictions={"x": x_new, "y": None},
        dims={"w": ["feature"]},
        pred_dims={"x": ["data", "feature"]},
        coords={"feature": ["age", "bmi", "bp"], "data": np.arange(40) + 100},
    )
    theta = np.concatenate([dt.posterior.w.values[0], dt.posterior.b.values[0][:, None]], axis=1)
    q = guide.get_posterior()
    return x, y, x_new, q.mean.detach().numpy(), q.covariance_matrix.detach().numpy(), dt, theta


def test_conjugate_regression_moments_match_the_guide(regression):
    x, y, _, mean, cov, _, theta = regression
    sd, n = np.sqrt(np.diag(cov)), theta.shape[0]
    np.testing.assert_array_less(np.abs(theta.mean(0) - mean), 4 * sd / math.sqrt(n))
    cov_se = np.sqrt((np.outer(sd**2, sd**2) + cov**2) / n)
    np.testing.assert_array_less(np.abs(np.cov(theta.T) - cov), 5 * cov_se)
    # The Gaussian guide can match the exact posterior; after training it is close.
    exact = conjugate_posterior(x, y, noise_scale=0.5, prior_precision=1.0)
    np.testing.assert_array_less(np.abs(mean - exact.mean.numpy()), exact.cov.diagonal().sqrt())


def test_conjugate_regression_predictions_and_coords(regression):
    _, _, x_new, _, _, dt, theta = regression
    assert list(dt.posterior.feature.values) == ["age", "bmi", "bp"]
    assert list(dt.log_likelihood.data.values[:2]) == [100, 101]
    # The 40 fitted labels do not fit the 5 new points, which get 0..4.
    assert dt.predictions.obs.sizes == {"chain": 1, "draw": 4000, "data": 5}
    assert list(dt.predictions.data.values) == [0, 1, 2, 3, 4]
    assert dt.predictions_constant_data.x.dims == ("data", "feature")
    predicted = (x_new.numpy() @ theta[:, :3].T + theta[:, 3]).mean(1)
    np.testing.assert_allclose(dt.predictions.obs.mean(("chain", "draw")), predicted, atol=0.06)


def test_netcdf_round_trip(tmp_path):
    guide = train_eight_schools(num_steps=50)
    dt = from_pyro_svi(
        eight_schools,
        guide,
        SIGMA,
        Y,
        num_samples=100,
        prior=30,
        constant_data={"sigma": SIGMA},
        dims={"sigma": ["school"]},
        coords={"school": SCHOOLS},
        seed=0,
    )
    path = tmp_path / "eight_schools.nc"
    dt.to_netcdf(path, engine="h5netcdf")
    with xr.open_datatree(path, engine="h5netcdf") as loaded:
        assert set(loaded.children) == set(dt.children)
        assert loaded.attrs == dt.attrs
        for name, node in dt.children.items():
            xr.testing.assert_identical(loaded[name].to_dataset(), node.to_dataset())


def test_draws_that_require_grad_convert():
    def model(y):
        mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
        with pyro.plate("data", len(y)):
            pyro.sample("obs", dist.Normal(mu, 1.0), obs=y)

    def guide(y):
        # The converter runs guides without grad; this one turns it back on.
        with torch.enable_grad():
            loc = pyro.param("loc", torch.tensor(0.3))
            scale = pyro.param("scale", torch.tensor(0.5), constraint=dist.constraints.positive)
            pyro.sample("mu", dist.Normal(loc, scale))

    y = torch.tensor([0.1, -0.4, 0.9])
    assert pyro.poutine.trace(guide).get_trace(y).nodes["mu"]["value"].requires_grad
    dt = from_pyro_svi(
        model, guide, y, num_samples=20, constant_data={"y": y.clone().requires_grad_()}
    )
    assert dt.posterior.mu.shape == (1, 20)
    assert np.isfinite(dt.log_likelihood.obs).all()
    np.testing.assert_allclose(dt.constant_data.y, y.numpy())
