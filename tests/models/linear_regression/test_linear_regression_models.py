"""The Pyro models of the linear regression zoo against hand-written log joints: sites, shapes,
dtypes, devices, vectorisation and the refusal of bad arguments."""

import math

import pyro.distributions as dist
import pytest
import torch
from linear_regression_checks import F64, NOISE, scalar
from pyro import poutine
from pyro.infer import Predictive, Trace_ELBO
from pyro.infer.autoguide import AutoMultivariateNormal
from pyro.poutine.util import site_is_subsample

from pyroext.models import linear_regression as lr

# The Pyro models.

MODELS = {
    "known_noise": (lr.model_known_noise, {"noise_scale": NOISE, "prior_precision": 2.0}),
    "hyperprior": (lr.model_hyperprior, {"noise_scale": NOISE, "a0": 2.0, "b0": 3.0}),
    "unknown_noise": (lr.model_unknown_noise, {"prior_precision": 2.0, "a0": 2.0, "b0": 3.0}),
}
LATENTS = {"known_noise": [], "hyperprior": ["alpha"], "unknown_noise": ["tau"]}


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_model_sites_shapes_and_dtype(synthetic, name, dtype):
    model, kwargs = MODELS[name]
    x, y = (t.to(dtype) for t in synthetic)
    trace = poutine.trace(model).get_trace(x, y, **kwargs)
    sites = [
        n
        for n, site in trace.nodes.items()
        if site["type"] == "sample" and not site_is_subsample(site)
    ]
    assert sites == [*LATENTS[name], "w", "b", "obs"]
    (plate,) = trace.nodes["obs"]["cond_indep_stack"]
    assert (plate.name, plate.size, plate.dim) == ("data", 50, -1)
    assert trace.nodes["w"]["value"].shape == (3,)
    assert trace.nodes["b"]["value"].shape == ()
    assert trace.nodes["obs"]["is_observed"] and trace.nodes["obs"]["value"].shape == (50,)
    assert trace.nodes["_RETURN"]["value"].shape == (50,)
    assert all(trace.nodes[n]["value"].dtype == dtype for n in sites)
    prior_draw = poutine.trace(model).get_trace(x, **kwargs).nodes["obs"]
    assert not prior_draw["is_observed"] and prior_draw["value"].shape == (50,)


def _hand_log_joint(name, x, y, w, b, scale):
    kwargs = MODELS[name][1]
    prior_sd, noise = {
        "known_noise": (kwargs.get("prior_precision", 1) ** -0.5, NOISE),
        "hyperprior": (scale**-0.5, NOISE),
        "unknown_noise": ((scale * 2.0) ** -0.5, scale**-0.5),
    }[name]
    log_joint = dist.Normal(scalar(0.0), prior_sd).log_prob(torch.cat([w, b[None]])).sum()
    log_joint += dist.Normal(x @ w + b, noise).log_prob(y).sum()
    if name != "known_noise":
        log_joint += dist.Gamma(scalar(2.0), scalar(3.0)).log_prob(scalar(scale))
    return log_joint


@pytest.mark.parametrize("name", MODELS)
def test_model_log_joint_matches_hand_computation(synthetic, name):
    model, kwargs = MODELS[name]
    x, y = synthetic
    values = {"w": torch.tensor([0.3, -1.2, 0.7], dtype=F64), "b": scalar(-0.4)}
    values |= {site: scalar(1.7) for site in LATENTS[name]}
    trace = poutine.trace(poutine.condition(model, data=values)).get_trace(x, y, **kwargs)
    expected = _hand_log_joint(name, x, y, values["w"], values["b"], 1.7)
    assert float(trace.log_prob_sum()) == pytest.approx(float(expected), abs=1e-10)


@pytest.mark.parametrize("name", MODELS)
def test_models_vectorise_over_particles(synthetic, name):
    model, kwargs = MODELS[name]
    x, y = synthetic
    draws = Predictive(model, num_samples=7, parallel=True, return_sites=["obs"])(x, **kwargs)
    assert draws["obs"].shape == (7, 50)
    guide = AutoMultivariateNormal(model)
    loss = Trace_ELBO(num_particles=4, vectorize_particles=True).loss(model, guide, x, y, **kwargs)
    assert math.isfinite(loss)


@pytest.mark.parametrize("name", MODELS)
def test_models_follow_the_device_of_x(synthetic, name):
    # With "meta" as the default device, a constant not created on x's device breaks the trace.
    model, kwargs = MODELS[name]
    with torch.device("meta"):
        trace = poutine.trace(model).get_trace(*synthetic, **kwargs)
        log_joint = trace.log_prob_sum()
    assert log_joint.device == synthetic[0].device and math.isfinite(log_joint)


BAD_ARGUMENTS = [
    ("known_noise", {"noise_scale": 0.0}, "noise_scale"),
    ("known_noise", {"prior_precision": -1.0}, "prior_precision"),
    ("known_noise", {"noise_scale": math.inf}, "noise_scale"),
    ("hyperprior", {"a0": 0.0}, "a0"),
    ("hyperprior", {"b0": -2.0}, "b0"),
    ("hyperprior", {"noise_scale": -1.0}, "noise_scale"),
    ("unknown_noise", {"a0": math.nan}, "a0"),
    ("unknown_noise", {"b0": 0.0}, "b0"),
    ("unknown_noise", {"prior_precision": 0.0}, "prior_precision"),
]


@pytest.mark.parametrize(("name", "bad", "argument"), BAD_ARGUMENTS)
def test_models_reject_bad_scales(synthetic, name, bad, argument):
    model, kwargs = MODELS[name]
    with pytest.raises(ValueError, match=rf"{argument}=.* must be a finite number > 0"):
        model(*synthetic, **(kwargs | bad))


@pytest.mark.parametrize("name", MODELS)
def test_models_reject_bad_data(synthetic, name):
    model, kwargs = MODELS[name]
    x, y = synthetic
    with pytest.raises(ValueError, match=r"x must be a 2-D tensor"):
        model(x[:, 0], y, **kwargs)
    with pytest.raises(ValueError, match=r"y must be a tensor of shape \(N,\) = \(50,\)"):
        model(x, y[:-1], **kwargs)


def test_references_reject_bad_arguments(synthetic):
    x, y = synthetic
    with pytest.raises(ValueError, match="noise_scale"):
        lr.conjugate_posterior(x, y, noise_scale=0.0, prior_precision=1.0)
    with pytest.raises(ValueError, match="max_iter"):
        lr.vb_hyperprior(x, y, noise_scale=1.0, a0=1.0, b0=1.0, max_iter=0)
    post = lr.conjugate_posterior(x, y, noise_scale=1.0, prior_precision=1.0)
    with pytest.raises(ValueError, match="prob"):
        lr.predictive_interval_known_noise(post, x, noise_scale=1.0, prob=1.0)
    with pytest.raises(ValueError, match="x_new has 2 columns"):
        lr.predictive_interval_known_noise(post, x[:, :2], noise_scale=1.0)
    with pytest.raises(ValueError, match="shapes"):
        lr.kl_gaussian(post.mean, post.cov, post.mean[:2], post.cov)
