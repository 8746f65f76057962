"""Sites, dims and log likelihoods of the ArviZ export, and its checks of bad input."""

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import MCMC, NUTS
from pyro.infer.autoguide import AutoNormal

from pyroext.arviz import from_pyro, from_pyro_svi
from pyroext.infer import run_svi

G, U, R, F = 3, 4, 5, 2


def nested(x, y=None, v=None):
    mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    coef = pyro.sample(
        "coef", dist.Normal(torch.zeros(F), 1.0).to_event(1), infer={"event_dims": ["feature"]}
    )
    with pyro.plate("group", G, dim=-2):
        alpha = pyro.sample("alpha", dist.Normal(mu, 1.0))
        with pyro.plate("unit", U, dim=-1):
            beta = pyro.sample("beta", dist.Normal(alpha, 1.0))
            theta = pyro.deterministic("theta", beta + (x * coef).sum(-1))
            pyro.sample("y", dist.Normal(theta, 1.0), obs=y)
    with pyro.plate("rep", R, dim=-1):
        mvn = dist.MultivariateNormal(coef, torch.eye(F))
        pyro.sample("v", mvn, obs=v, infer={"event_dims": ["feature"]})


def nested_data():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(G, U, F, generator=generator)
    y = torch.randn(G, U, generator=generator)
    v = torch.randn(R, F, generator=generator) + 1.0
    return x, y, v


def simple(y):
    mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
    with pyro.plate("data", len(y)):
        pyro.sample("obs", dist.Normal(mu, 1.0), obs=y)


Y = torch.tensor([0.3, -0.2, 1.1, 0.4])


def test_nested_plates_event_dims_and_two_observed_sites():
    x, y, v = nested_data()
    guide = AutoNormal(nested)
    run_svi(nested, guide, x, y, v, num_steps=100, progress=False, seed=0)
    dt = from_pyro_svi(nested, guide, x, y, v, num_samples=60, seed=1)
    post = dt.posterior
    assert post.mu.dims == ("chain", "draw")
    assert post.coef.dims == ("chain", "draw", "feature")
    assert post.alpha.dims == ("chain", "draw", "group")
    assert post.beta.dims == post.theta.dims == ("chain", "draw", "group", "unit")
    assert set(dt.observed_data.data_vars) == set(dt.log_likelihood.data_vars) == {"y", "v"}
    assert set(dt.posterior_predictive.data_vars) == {"y", "v"}
    assert dt.observed_data.v.dims == ("rep", "feature")
    assert dt.log_likelihood.y.dims == ("chain", "draw", "group", "unit")
    assert dt.log_likelihood.v.dims == ("chain", "draw", "rep")
    assert dt.posterior_predictive.v.dims == ("chain", "draw", "rep", "feature")
    assert list(post.unit.values) == [0, 1, 2, 3]
    for node in dt.subtree:
        assert not [dim for dim in node.dataset.dims if "_dim_" in str(dim)], node.path

    beta, coef = torch.from_numpy(post.beta.values[0]), torch.from_numpy(post.coef.values[0])
    theta = beta + (x * coef[:, None, None, :]).sum(-1)
    np.testing.assert_allclose(post.theta.values[0], theta.numpy(), rtol=1e-6, atol=1e-6)
    expected_y = torch.distributions.Normal(theta, 1.0).log_prob(y)
    expected_v = torch.distributions.MultivariateNormal(coef[:, None, :], torch.eye(F)).log_prob(v)
    np.testing.assert_allclose(dt.log_likelihood.y.values[0], expected_y.numpy(), rtol=1e-5)
    np.testing.assert_allclose(dt.log_likelihood.v.values[0], expected_v.numpy(), rtol=1e-5)


def test_user_dims_and_coords_override_plates():
    x, y, v = nested_data()
    dt = from_pyro_svi(
        nested,
        AutoNormal(nested),
        x,
        y,
        v,
        num_samples=10,
        dims={"alpha": ["group", "one"], "coef": ["covariate"], "v": ["trial", "covariate"]},
        coords={"group": ["a", "b", "c"], "covariate": ["age", "dose"]},
    )
    assert dt.posterior.alpha.dims == ("chain", "draw", "group", "one")
    assert dt.posterior.sizes["one"] == 1
    assert list(dt.posterior.covariate.values) == ["age", "dose"]
    assert dt.log_likelihood.v.dims == ("chain", "draw", "trial")
    assert list(dt.log_likelihood.y.group.values) == ["a", "b", "c"]


def test_model_that_cannot_be_vectorised_falls_back_with_a_warning():
    def branching(y):
        mu = pyro.sample("mu", dist.Normal(0.0, 2.0))
        scale = 1.0 if mu.item() > 0 else 2.0
        pyro.deterministic("shift", mu * scale)
        with pyro.plate("data", len(y)):
            pyro.sample("obs", dist.Normal(mu, scale), obs=y)

    guide = AutoNormal(branching)
    run_svi(branching, guide, Y, num_steps=50, progress=False, seed=0)
    with pytest.warns(UserWarning, match="one draw at a time") as record:
        dt = from_pyro_svi(branching, guide, Y, num_samples=40, seed=0)
    assert all("the model could not be evaluated" in str(w.message) for w in record)
    mu = torch.from_numpy(dt.posterior.mu.values[0])
    scale = torch.where(mu > 0, 1.0, 2.0)
    np.testing.assert_allclose(dt.posterior.shift.values[0], (mu * scale).numpy())
    expected = dist.Normal(mu[:, None], scale[:, None]).log_prob(Y)
    np.testing.assert_allclose(dt.log_likelihood.obs.values[0], expected.numpy(), rtol=1e-6)
    lp = dist.Normal(0.0, 2.0).log_prob(mu) + expected.sum(-1)
    np.testing.assert_allclose(dt.sample_stats.lp.values[0], lp.numpy(), rtol=1e-5)
    assert dt.posterior_predictive.obs.shape == (1, 40, 4)


def test_simplex_and_factor_sites():
    def model(counts):
        p = pyro.sample("p", dist.Dirichlet(torch.ones(3)))
        pyro.factor("penalty", -((p[..., 0] - 0.5) ** 2))
        with pyro.plate("data", len(counts)):
            pyro.sample("obs", dist.Categorical(p), obs=counts)

    counts = torch.tensor([0, 1, 1, 2, 0, 0])
    dt = from_pyro_svi(model, AutoNormal(model), counts, num_samples=30, seed=0)
    p = dt.posterior.p.values[0]
    assert dt.posterior.p.dims == ("chain", "draw", "p_dim_0")
    # The stick-breaking transform of a 3-simplex has two unconstrained coordinates.
    assert dt.unconstrained_posterior.p.dims == ("chain", "draw", "p_dim_0")
    assert dt.unconstrained_posterior.p.shape == (1, 30, 2)
    assert set(dt.observed_data.data_vars) == set(dt.log_likelihood.data_vars) == {"obs"}
    prior = dist.Dirichlet(torch.ones(3)).log_prob(torch.from_numpy(p)).numpy()
    lp = prior - (p[:, 0] - 0.5) ** 2 + np.log(p[:, counts.numpy()]).sum(-1)
    np.testing.assert_allclose(dt.sample_stats.lp.values[0], lp, rtol=1e-5)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"num_samples": 0}, "num_samples"),
        ({"num_samples": 2.5}, "num_samples"),
        ({"prior": True}, "prior"),
        ({"prior": -3}, "prior"),
        ({"dims": {"missing": ["d"]}}, "dims"),
        ({"dims": {"obs": ["a", "b", "c"]}}, "dims"),
        ({"dims": {"mu": ["data"]}, "coords": {}}, "dims"),
        ({"coords": {"nowhere": [1, 2]}}, "coords"),
        ({"coords": {"data": [1, 2]}}, "coords"),
        ({"constant_data": [1.0, 2.0]}, "constant_data"),
        ({"predictions": {"z": Y}}, "predictions"),
        ({"pred_dims": {"missing": ["d"]}, "predictions": {"y": Y}}, "pred_dims"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(options, message):
    with pytest.raises(ValueError, match=message):
        from_pyro_svi(simple, AutoNormal(simple), Y, **{"num_samples": 5, **options})


def test_bad_models_guides_and_mcmc_raise_value_error():
    def bad_event_dims(y):
        pyro.sample("w", dist.Normal(torch.zeros(2), 1.0).to_event(1), infer={"event_dims": []})

    with pytest.raises(ValueError, match="event_dims"):
        from_pyro_svi(bad_event_dims, AutoNormal(bad_event_dims), Y)

    def subsampled(y):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("data", len(y), subsample_size=2) as index:
            pyro.sample("obs", dist.Normal(mu, 1.0), obs=y[index])

    with pytest.raises(ValueError, match="subsamples 2 of 4"):
        from_pyro_svi(subsampled, AutoNormal(subsampled), Y)

    def partial_guide(y):
        pass

    with pytest.raises(ValueError, match="guide"):
        from_pyro_svi(simple, partial_guide, Y)
    with pytest.raises(ValueError, match="run"):
        from_pyro(MCMC(NUTS(simple), num_samples=5))


def test_mcmc_predictions_need_latents_of_fixed_shape():
    def local(y):
        with pyro.plate("data", len(y)):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("obs", dist.Normal(z, 1.0), obs=y)

    mcmc = MCMC(NUTS(local), num_samples=5, warmup_steps=5, disable_progbar=True)
    mcmc.run(Y)
    with pytest.raises(ValueError, match="predictions"):
        from_pyro(mcmc, predictions={"y": Y[:2]})
    dt = from_pyro(mcmc, predictions={"y": Y + 1})
    assert dt.predictions.obs.dims == ("chain", "draw", "data")
