"""Every registered guide on the zoo's models: training, ``Predictive``, median and quantiles,
save and load, and the ArviZ export, so that a guide added to the registry is tested on real
models by default (the contract on small synthetic models is ``test_guide_contract.py``)."""

import functools
from collections.abc import Callable
from typing import NamedTuple

import pyro
import pytest
import torch
from pyro.distributions import constraints
from pyro.infer import SVI, Predictive, Trace_ELBO
from pyro.infer.autoguide import AutoDelta
from pyro.poutine.util import site_is_subsample

from pyroext.arviz import from_pyro_svi
from pyroext.data import load_diabetes, load_faithful
from pyroext.guides import GUIDES, make_guide
from pyroext.infer import load_guide, save_guide
from pyroext.models import gmm
from pyroext.models import linear_regression as lr
from pyroext.models.bnn import BayesianMLP, GaussianPrior, relu_mlp

F64 = torch.float64
DRAWS = 40


def linear_regression():
    data = load_diabetes(dtype=F64)
    model = functools.partial(lr.model_known_noise, noise_scale=0.7)
    return model, (data.x[:60], data.y[:60]), {}


def mixture():
    x = load_faithful(standardize=True, dtype=F64).x[:80]
    model = functools.partial(gmm.gmm_marginal_model, k=2, covariance="full")
    return model, (x,), {"init_loc_fn": gmm.init_from_data(x, 2)}


def network():
    data = load_diabetes(dtype=F64)
    model = BayesianMLP(relu_mlp([10, 3, 1]), prior=GaussianPrior(), likelihood="gaussian")
    return model.double(), (data.x[:50], data.y[:50]), {}


ZOO = {"linear_regression": linear_regression, "gmm": mixture, "bnn": network}


class Trained(NamedTuple):
    name: str
    model: Callable
    guide: Callable
    args: tuple
    options: dict
    latents: dict[str, torch.Size]
    elementwise: set[str]  # sites whose constraining map acts on each coordinate alone
    losses: list[float]


@pytest.fixture(params=sorted(GUIDES))
def guide_name(request):
    return request.param


@pytest.fixture(params=sorted(ZOO))
def trained(request, guide_name):
    """A guide of the registry after 15 SVI steps on a zoo model, with the model's latents."""
    model, args, options = ZOO[request.param]()
    guide = make_guide(guide_name, model, **options)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.01}), Trace_ELBO())
    losses = [svi.step(*args) for _ in range(15)]
    trace = pyro.poutine.trace(model).get_trace(*args)
    sites = [
        site
        for site in trace.nodes.values()
        if site["type"] == "sample" and not site["is_observed"] and not site_is_subsample(site)
    ]
    latents = {site["name"]: site["value"].shape for site in sites}
    elementwise = {site["name"] for site in sites if _elementwise(site["fn"].support)}
    return Trained(guide_name, model, guide, args, options, latents, elementwise, losses)


def test_training_gives_finite_losses(trained):
    assert all(torch.isfinite(torch.tensor(trained.losses)))


def test_predictive_draws_every_latent_in_its_shape(trained):
    model, guide, args, latents = trained.model, trained.guide, trained.args, trained.latents
    draws = Predictive(model, guide=guide, num_samples=5, return_sites=list(latents))(*args)
    for name, shape in latents.items():  # Predictive may keep a size-1 plate dimension
        assert draws[name].shape[-len(shape) :] == shape if shape else True
        assert draws[name].numel() == 5 * shape.numel()
    assert all(torch.isfinite(value).all() for value in draws.values())


def test_median_and_quantiles_have_the_latents_shapes(trained):
    guide, args, latents = trained.guide, trained.args, trained.latents
    median = guide.median(*args)
    assert {site: median[site].shape for site in latents} == latents
    if GUIDES[trained.name] is AutoDelta:
        return  # a point mass has no quantiles
    quantiles = guide.quantiles([0.1, 0.5, 0.9], *args)
    for site, shape in latents.items():
        low, middle, high = quantiles[site]
        assert low.shape == middle.shape == high.shape == shape
        if site in trained.elementwise:  # a simplex or Cholesky map mixes the coordinates
            assert (low <= middle).all() and (middle <= high).all()


def test_save_and_load_restore_the_median(trained, tmp_path):
    save_guide(trained.guide, tmp_path / "guide.pt")
    expected = trained.guide.median(*trained.args)
    pyro.clear_param_store()
    fresh = make_guide(trained.name, trained.model, **trained.options)
    restored = load_guide(fresh, tmp_path / "guide.pt", *trained.args).median(*trained.args)
    for site in trained.latents:
        torch.testing.assert_close(restored[site], expected[site])


def test_export_holds_every_latent_and_finite_densities(trained):
    tree = from_pyro_svi(trained.model, trained.guide, *trained.args, num_samples=DRAWS, seed=0)
    posterior = tree["posterior"]
    for site, shape in trained.latents.items():
        assert posterior[site].shape[:2] == (1, DRAWS)
        assert posterior[site].size == DRAWS * shape.numel()
    stats = tree["sample_stats"]
    assert torch.isfinite(torch.as_tensor(stats["lp"].values)).all()
    if GUIDES[trained.name] is not AutoDelta:
        assert torch.isfinite(torch.as_tensor(stats["lq"].values)).all()
    assert "log_likelihood" in tree.children


def _elementwise(support):
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    return support.event_dim == 0
