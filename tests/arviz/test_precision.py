"""Log-likelihoods are scored in float64 whatever the model's dtype: in float32 a
log-likelihood smaller in size than about 1e-45 is exactly 0, and PSIS fails on tied values."""

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.infer.autoguide import AutoNormal

from pyroext.arviz import from_pyro_svi
from pyroext.diagnostics import vi_loo
from pyroext.infer import run_svi


def logistic(x, y):
    weight = pyro.sample("weight", dist.Normal(x.new_zeros(()), 1.0))
    with pyro.plate("obs", len(y)):
        pyro.sample("y", dist.Bernoulli(logits=weight * x), obs=y)


def _data():
    x = torch.cat([torch.linspace(-3.0, 3.0, 40), torch.full((7,), 150.0)])
    y = (torch.rand(47, generator=torch.Generator().manual_seed(0)) < torch.sigmoid(x)).float()
    y[-7:] = 1.0  # far on the side of their label: log p(y) = -exp(-150 weight)
    return x, y


def test_float32_model_exports_float64_log_likelihoods_that_loo_takes():
    x, y = _data()
    pyro.clear_param_store()
    guide = AutoNormal(logistic)
    run_svi(
        logistic,
        guide,
        x,
        y,
        num_steps=300,
        optim=pyro.optim.Adam({"lr": 0.05}),
        seed=0,
        progress=False,
    )
    with torch.no_grad():
        float32 = dist.Bernoulli(logits=x[-7:] * 1.0).log_prob(y[-7:])
    assert (float32 == 0).all()  # the float32 precision the export must not use
    dt = from_pyro_svi(logistic, guide, x, y, num_samples=400, seed=1)
    pointwise = dt["log_likelihood"]["y"]
    assert pointwise.dtype == np.float64
    assert (pointwise.values[..., -7:] < 0).all()
    weight = dt["posterior"]["weight"].values[..., None]
    expected = np.broadcast_to(-np.exp(-150.0 * weight), pointwise.shape[:-1] + (7,))
    np.testing.assert_allclose(pointwise.values[..., -7:], expected, rtol=1e-6)
    loo = vi_loo(dt)
    assert np.isfinite(loo.elpd) and loo.n_data_points == 47
