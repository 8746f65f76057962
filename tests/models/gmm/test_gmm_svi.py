"""SVI on the Gaussian mixture against exact references: the marginal model's log joint against
the enumerated one, guide-side enumeration against sampled assignments, the full mean-field
guide against CAVI, and SVI-MAP and SVI posteriors against EM and the known parameters."""

import functools
import math

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceEnum_ELBO
from pyro.infer.autoguide import AutoDelta, AutoNormal

from pyroext.data import SYNTHETIC_COVARIANCES, SYNTHETIC_MEANS, load_faithful, synthetic_mixture
from pyroext.guides.categorical import AutoLocalCategorical
from pyroext.infer import run_svi
from pyroext.models.gmm import (
    gmm_marginal_model,
    gmm_model,
    init_from_data,
    mean_field_guide,
    mixture_log_likelihood,
    responsibilities,
)
from pyroext.models.gmm.em import em
from pyroext.models.gmm.vb import vb_gmm

F64 = torch.float64


@pytest.fixture(scope="module")
def faithful():
    return load_faithful(standardize=True, dtype=F64).x


@pytest.fixture(scope="module")
def synthetic():
    return synthetic_mixture(dtype=F64).x


def train(model, guide, x, steps, loss=None, lr=0.05):
    return run_svi(
        model,
        guide,
        x,
        num_steps=steps,
        optim=pyro.optim.ClippedAdam({"lr": lr, "lrd": 0.02 ** (1 / steps)}),
        loss=loss or TraceEnum_ELBO(max_plate_nesting=1),
        progress=False,
        seed=0,
    )


def guide_draws(guide, x, num=4000):
    with torch.no_grad(), poutine.block(), pyro.plate("draws", num, dim=-2):
        return guide(x)


@pytest.mark.parametrize("covariance", ["diagonal", "full"])
def test_marginal_model_has_the_enumerated_log_joint(faithful, covariance):
    options = {"k": 3, "covariance": covariance}
    model = functools.partial(gmm_model, **options)
    marginal = functools.partial(gmm_marginal_model, **options)
    guide = AutoDelta(marginal, init_loc_fn=init_from_data(faithful, 3))
    with torch.no_grad():
        enumerated = TraceEnum_ELBO(max_plate_nesting=1).loss(model, guide, faithful)
        summed = Trace_ELBO(max_plate_nesting=1).loss(marginal, guide, faithful)
        point = guide(faithful)
        trace = poutine.trace(poutine.condition(marginal, point)).get_trace(faithful)
    assert summed == pytest.approx(enumerated, rel=1e-12)
    corr = point.get("corr_chol")
    expected = responsibilities(faithful, point["weights"], point["locs"], point["scales"], corr)
    assert torch.allclose(trace.nodes["responsibilities"]["value"], expected, atol=1e-12)


def test_marginal_model_broadcasts_over_draws(faithful):
    marginal = functools.partial(gmm_marginal_model, k=2, covariance="full")
    guide = AutoNormal(marginal, init_loc_fn=init_from_data(faithful, 2), init_scale=0.3)
    draws = guide_draws(guide, faithful, num=5)
    with torch.no_grad(), pyro.plate("draws", 5, dim=-2):
        batched = poutine.trace(poutine.condition(marginal, draws)).get_trace(faithful)
    log_lik = batched.nodes["x"]["fn"].log_prob(faithful).sum(-1).reshape(5)
    for i in range(5):
        one = {name: value[i] for name, value in draws.items()}
        reference = mixture_log_likelihood(
            faithful, one["weights"].reshape(2), one["locs"], one["scales"], one["corr_chol"]
        )
        assert log_lik[i].item() == pytest.approx(reference.item(), rel=1e-12)


def test_guide_side_enumeration_is_the_expectation_over_sampled_assignments(faithful):
    """With the globals at a point, TraceEnum's loss sums q(z_n) exactly; Trace_ELBO samples z."""
    model = functools.partial(gmm_model, k=2, covariance="full")
    guide = mean_field_guide(faithful, 2, covariance="full", globals_guide=AutoDelta)
    guide(faithful)
    with torch.no_grad():
        guide[1].logits.copy_(torch.randn(272, 2, generator=torch.Generator().manual_seed(1)))
        exact = TraceEnum_ELBO(max_plate_nesting=1).loss(model, guide, faithful)
        guide[1].enumerate = False
        sampled = torch.tensor(
            [Trace_ELBO(max_plate_nesting=1).loss(model, guide, faithful) for _ in range(400)]
        )
    mcse = sampled.std().item() / math.sqrt(len(sampled))
    assert abs(sampled.mean().item() - exact) < 4 * mcse
    assert mcse < 2.0  # the entropy of q(z) alone is ~130 nats: the check has power


@pytest.mark.slow
def test_mean_field_svi_agrees_with_cavi_on_old_faithful(faithful):
    """Bishop's CAVI (Normal-Wishart priors) and SVI with the full mean-field guide (priors of
    gmm_model) agree on the posterior means of weights and means within one posterior sd, and
    their responsibilities coincide; the priors differ, so exact equality is not expected."""
    model = functools.partial(gmm_model, k=2, covariance="full")
    guide = mean_field_guide(faithful, 2, covariance="full")
    train(model, guide, faithful, steps=1500)
    draws = guide_draws(guide[0], faithful)
    vb = vb_gmm(faithful, 2)
    order = vb.m[:, 0].argsort()
    weights, locs = draws["weights"].reshape(-1, 2), draws["locs"]
    assert bool((locs[:, 0, 0] < locs[:, 1, 0]).all())  # no label switching in the draws
    cavi_weights = (vb.alpha / vb.alpha.sum())[order]
    assert torch.all((weights.mean(0) - cavi_weights).abs() < weights.std(0))
    assert torch.all((locs.mean(0) - vb.m[order]).abs() < locs.std(0))
    q_z = guide[1].probs()
    assert (q_z - vb.responsibilities[:, order]).abs().mean() < 0.01


@pytest.mark.slow
@pytest.mark.parametrize("data", ["faithful", "synthetic"])
def test_svi_map_reaches_the_em_optimum(data, faithful, synthetic):
    x = {"faithful": faithful, "synthetic": synthetic}[data]
    k = {"faithful": 2, "synthetic": 3}[data]
    reference = em(x, k)
    model = functools.partial(gmm_model, k=k, covariance="full")
    marginal = functools.partial(gmm_marginal_model, k=k, covariance="full")
    guide = AutoDelta(marginal, init_loc_fn=init_from_data(x, k))
    train(model, guide, x, steps=1500)
    point = guide.median(x)
    log_lik = mixture_log_likelihood(
        x, point["weights"], point["locs"], point["scales"], point["corr_chol"]
    ).item()
    assert abs(log_lik - reference.log_likelihood) < 1e-3 * abs(reference.log_likelihood)
    order, em_order = point["locs"][:, 0].argsort(), reference.means[:, 0].argsort()
    assert torch.allclose(point["locs"][order], reference.means[em_order], atol=0.01)
    assert torch.allclose(point["weights"][order], reference.weights[em_order], atol=0.01)


@pytest.mark.slow
def test_svi_posterior_recovers_the_known_means(synthetic):
    """N=2000, K=3 well separated: posterior means within 3 standard errors of the truth."""
    model = functools.partial(gmm_model, k=3, covariance="full")
    marginal = functools.partial(gmm_marginal_model, k=3, covariance="full")
    guide = AutoNormal(marginal, init_loc_fn=init_from_data(synthetic, 3), init_scale=0.05)
    train(model, guide, synthetic, steps=1500)
    locs = guide_draws(guide, synthetic)["locs"]
    order = locs.mean(0)[:, 0].argsort()
    means = locs.mean(0)[order]
    weights = em(synthetic, 3).weights[em(synthetic, 3).means[:, 0].argsort()]
    true_covs = torch.tensor(SYNTHETIC_COVARIANCES, dtype=F64)
    se = (true_covs.diagonal(dim1=1, dim2=2) / (weights * len(synthetic)).unsqueeze(1)).sqrt()
    errors = (means - torch.tensor(SYNTHETIC_MEANS, dtype=F64)) / se
    assert bool((errors.abs() < 3).all()), errors
    # the guide's posterior sd is the standard error, within the mean-field shrinkage
    assert torch.allclose(locs.std(0)[order], se, rtol=0.3)


def test_local_categorical_indexes_subsampled_logits():
    def model(x):
        with pyro.plate("obs", 6, subsample_size=3) as index:
            z = pyro.sample("z", pyro.distributions.Categorical(torch.ones(4)))
            pyro.sample("x", pyro.distributions.Normal(z.double(), 1.0), obs=x[index])

    x = torch.zeros(6, dtype=F64)
    guide = AutoLocalCategorical(model, site="z", enumerate=False)
    guide(x)
    with torch.no_grad():
        guide.logits.copy_(torch.randn(6, 4, generator=torch.Generator().manual_seed(0)))
    trace = poutine.trace(guide).get_trace(x)
    index = trace.nodes["obs"]["value"]
    expected = torch.log_softmax(guide.logits, -1)[index]
    assert torch.allclose(trace.nodes["z"]["fn"].logits, expected, atol=1e-6)
    assert not torch.allclose(expected[0], expected[1])
    assert guide.probs().shape == (6, 4)


def test_local_categorical_refuses_a_site_that_is_not_categorical(faithful):
    model = functools.partial(gmm_model, k=2)
    with pytest.raises(ValueError, match="site='locs' is not a categorical latent site"):
        AutoLocalCategorical(model, site="locs")(faithful)
