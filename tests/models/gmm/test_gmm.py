"""The Pyro Gaussian mixture: the enumerated ELBO against the hand-written mixture density,
MAP assignments and input checks (SVI against EM and CAVI: test_gmm_svi.py)."""

import functools

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import TraceEnum_ELBO, infer_discrete
from pyro.infer.autoguide import AutoDelta

from pyroext.data import load_faithful
from pyroext.infer import run_svi
from pyroext.models.gmm import gmm_model, init_from_data, mixture_log_likelihood, responsibilities


@pytest.fixture(scope="module")
def faithful():
    return load_faithful(standardize=True, dtype=torch.float64).x


def map_fit(x, k, covariance, steps=1500):
    model = functools.partial(gmm_model, k=k, covariance=covariance)
    guide = AutoDelta(poutine.block(model, hide=["assignment"]), init_loc_fn=init_from_data(x, k))
    run_svi(
        model,
        guide,
        x,
        num_steps=steps,
        optim=pyro.optim.ClippedAdam({"lr": 0.05, "lrd": 0.1 ** (1 / steps)}),
        loss=TraceEnum_ELBO(max_plate_nesting=1),
        progress=False,
        seed=0,
    )
    return model, guide, guide.median(x)


@pytest.mark.parametrize("covariance", ["diagonal", "full"])
def test_enumerated_elbo_is_the_log_joint_of_the_map_point(faithful, covariance):
    model = functools.partial(gmm_model, k=3, covariance=covariance)
    guide = AutoDelta(
        poutine.block(model, hide=["assignment"]), init_loc_fn=init_from_data(faithful, 3)
    )
    with torch.no_grad():
        point = guide(faithful)
        elbo = -TraceEnum_ELBO(max_plate_nesting=1).loss(model, guide, faithful)
    corr = point.get("corr_chol")
    log_prior = (
        dist.Dirichlet(torch.ones(3, dtype=torch.float64)).log_prob(point["weights"])
        + dist.Normal(0.0, 10.0).log_prob(point["locs"]).sum()
        + dist.LogNormal(0.0, 1.0).log_prob(point["scales"]).sum()
    )
    if corr is not None:
        log_prior = log_prior + dist.LKJCholesky(2, torch.tensor(1.0)).log_prob(corr).sum()
    log_lik = mixture_log_likelihood(
        faithful, point["weights"], point["locs"], point["scales"], corr
    )
    assert elbo == pytest.approx((log_prior + log_lik).item(), rel=1e-8)


def test_map_assignments_are_the_most_responsible_components(faithful):
    model, guide, point = map_fit(faithful, 2, "diagonal", steps=200)
    decoded = infer_discrete(
        poutine.replay(model, trace=poutine.trace(guide).get_trace(faithful)),
        first_available_dim=-2,
        temperature=0,
    )
    assignment = poutine.trace(decoded).get_trace(faithful).nodes["assignment"]["value"]
    expected = responsibilities(faithful, point["weights"], point["locs"], point["scales"]).argmax(
        -1
    )
    assert torch.equal(assignment, expected)


@pytest.mark.parametrize(
    "x, k, options, message",
    [
        (torch.zeros(5, 2), 0, {}, r"k=0 must be an integer in \[1, N\] = \[1, 5\]"),
        (torch.zeros(5, 2), 6, {}, r"k=6 must be an integer in \[1, N\] = \[1, 5\]"),
        (
            torch.tensor([[0.0, float("nan")], [1.0, 2.0]]),
            1,
            {},
            r"x must contain only finite values \(found NaN or inf\)",
        ),
        (torch.zeros(5), 1, {}, r"x must be a 2-D tensor of shape \(N, D\), got shape \(5,\)"),
        (torch.zeros(5, 2), 2, {"covariance": "tied"}, "covariance='tied' must be one of"),
    ],
)
def test_bad_input_is_refused_before_sampling(x, k, options, message):
    with pytest.raises(ValueError, match=message):
        gmm_model(x, k, **options)
