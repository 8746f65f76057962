"""The autoguide contract, over every guide of the registry (Pyro's and pyroext's).

What Pyro's own ``tests/infer/test_autoguide.py`` asks of an autoguide, in this project's
words, so that a new guide is held to it by being registered; ``tests/pyro_suite/run.py`` runs
Pyro's file itself against pyroext's guides. Each test names the defect it guards against
where there was one.
"""

import io
import math
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI, JitTrace_ELBO, Predictive, Trace_ELBO
from pyro.infer.autoguide import AutoContinuous, AutoDelta, AutoGuideList
from pyro.infer.autoguide.initialization import init_to_sample, init_to_value

from pyroext.guides import GUIDES, AutoDAIS, AutoMarkovGuide, make_guide

F64 = torch.float64
MCMC = sorted(name for name, cls in GUIDES.items() if issubclass(cls, AutoMarkovGuide))
# AutoDelta is a point mass: it has a median but no quantiles, and no density to check.
WITH_QUANTILES = sorted(name for name, cls in GUIDES.items() if cls is not AutoDelta)
CONTINUOUS = sorted(name for name, cls in GUIDES.items() if issubclass(cls, AutoContinuous))


def three_supports():
    """Latents on R, (0, inf) and (0, 1): the constraining maps all enter."""
    pyro.sample("x", dist.Normal(torch.tensor(0.0, dtype=F64), 1.0))
    pyro.sample("y", dist.LogNormal(torch.tensor(0.0, dtype=F64), 1.0))
    pyro.sample("z", dist.Beta(torch.tensor(2.0, dtype=F64), 2.0))


def every_site_shape():
    pyro.sample("z1", dist.Normal(torch.tensor(0.0, dtype=F64), 1.0))
    pyro.sample("z2", dist.Normal(torch.zeros(2, dtype=F64), 1.0).to_event(1))
    with pyro.plate("plate", 3):
        pyro.sample("z3", dist.Normal(torch.zeros(3, dtype=F64), 1.0))
    pyro.sample("z4", dist.MultivariateNormal(torch.zeros(2, dtype=F64), torch.eye(2, dtype=F64)))
    pyro.sample("z5", dist.Dirichlet(torch.ones(3, dtype=F64)))
    pyro.sample("z7", dist.LKJCholesky(2, torch.tensor(1.0, dtype=F64)))


def hierarchical(y):
    """Ten group effects in a plate around a shared mean; Normal likelihood of scale 0.5."""
    mu = pyro.sample("mu", dist.Normal(torch.tensor(0.0, dtype=F64), 10.0))
    with pyro.plate("groups", y.shape[0]):
        effect = pyro.sample("effect", dist.Normal(mu, 1.0))
        pyro.sample("obs", dist.Normal(effect, 0.5), obs=y)


def regression(x, y=None):
    w = pyro.sample("w", dist.Normal(torch.zeros(2, dtype=F64), 1.0).to_event(1))
    sigma = pyro.sample("sigma", dist.LogNormal(torch.tensor(0.0, dtype=F64), 1.0))
    with pyro.plate("data", x.shape[0]):
        return pyro.sample("obs", dist.Normal((x * w).sum(-1), sigma), obs=y)


def serialisable_model():
    """At module level, so that it pickles with a guide that keeps its model."""
    pyro.sample("x", dist.Normal(torch.tensor(0.0, dtype=F64), 1.0))
    with pyro.plate("plate", 2):
        pyro.sample("y", dist.LogNormal(torch.tensor(0.0, dtype=F64), 1.0))
        pyro.sample("z", dist.Beta(torch.tensor(2.0, dtype=F64), 2.0))  # drawn via _Dirichlet


def fit(guide, model, *args, steps=100, particles=100, lr=0.05):
    elbo = Trace_ELBO(num_particles=particles, vectorize_particles=True, max_plate_nesting=1)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": lr, "betas": (0.8, 0.99)}), elbo)
    for _ in range(steps):
        svi.step(*args)
    return guide


def regression_data():
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(20, 2, generator=generator, dtype=F64)
    return x, x @ torch.tensor([1.0, -2.0], dtype=F64) + 0.3 * torch.randn(20, dtype=F64)


@pytest.mark.parametrize("name", sorted(GUIDES))
def test_factor_statements_enter_the_loss(name):
    def model(log_factor):
        pyro.sample("z1", dist.Normal(torch.tensor(0.0, dtype=F64), 1.0))
        pyro.factor("f1", log_factor)
        with pyro.plate("plate", 3):
            pyro.factor("f2", log_factor)
            pyro.sample("z3", dist.Normal(torch.zeros(3, dtype=F64), 1.0))

    guide = make_guide(name, model)
    elbo = Trace_ELBO()
    elbo.loss(model, guide, torch.tensor(0.0, dtype=F64))
    losses = []
    for factor in (5.0, 4.0):
        pyro.set_rng_seed(123)
        losses.append(elbo.loss(model, guide, torch.tensor(factor, dtype=F64)))
    assert losses[0] - losses[1] == pytest.approx(-1 - 3, abs=1e-9)


@pytest.mark.parametrize("particles", [1, 10])
@pytest.mark.parametrize("name", sorted(GUIDES))
def test_every_site_shape_gives_a_finite_loss(name, particles):
    guide = make_guide(name, every_site_shape)
    elbo = Trace_ELBO(num_particles=particles, vectorize_particles=True)
    assert math.isfinite(elbo.loss(every_site_shape, guide))


@pytest.mark.parametrize("name", sorted(GUIDES))
def test_median_after_training_is_the_posterior_median(name):
    guide = fit(make_guide(name, three_supports), three_supports, particles=500, lr=0.02)
    median = guide.median()
    assert median["x"].item() == pytest.approx(0.0, abs=0.1)
    # AutoDelta finds the mode of the unconstrained density, not the median.
    assert median["y"].item() == pytest.approx(math.exp(-1) if name == "delta" else 1.0, abs=0.1)
    assert median["z"].item() == pytest.approx(0.5, abs=0.1)


@pytest.mark.parametrize("name", WITH_QUANTILES)
def test_quantiles_are_ordered_and_median_is_their_middle(name):
    guide = fit(make_guide(name, three_supports), three_supports)
    levels = guide.quantiles([0.1, 0.5, 0.9])
    median = guide.median()
    for site in ("x", "y", "z"):
        assert levels[site].shape == (3,) and not levels[site].requires_grad
        assert torch.equal(median[site], levels[site][1])  # one estimate, not two
        assert levels[site][0] < levels[site][1] < levels[site][2]
    assert -3 < levels["x"][0] and levels["x"][2] < 3
    assert 0.01 < levels["y"][0] and levels["y"][2] < 100


@pytest.mark.parametrize("name", MCMC)
def test_median_is_repeatable_and_leaves_the_random_stream_alone(name):
    guide = make_guide(name, three_supports)
    guide()
    state = torch.get_rng_state()
    first, second = guide.median(), guide.median()
    assert torch.equal(state, torch.get_rng_state())
    for site in first:
        assert torch.equal(first[site], second[site])


@pytest.mark.parametrize("name", WITH_QUANTILES)
def test_quantiles_of_a_plate_site_keep_its_shape(name):
    """Defect: the MCMC guides unpacked all levels at once, so a 10-vector site in a plate came
    back as a scalar (median) or raised a broadcasting error (several levels)."""
    y = torch.arange(10, dtype=F64) * 3.0
    guide = make_guide(name, hierarchical, init_loc_fn=init_to_value(values={"effect": y}))
    guide(y)
    median, levels = guide.median(y), guide.quantiles([0.1, 0.9], y)
    assert median["effect"].shape == (10,) and levels["effect"].shape == (2, 10)
    assert torch.all(median["effect"].diff() > 2)  # one value per group, in the groups' order
    if GUIDES[name] is not AutoDAIS:  # DAIS's first steps already move towards the posterior
        torch.testing.assert_close(median["effect"], y, rtol=0, atol=0.05)
    assert torch.all(levels["effect"][0] < median["effect"])
    assert torch.all(median["effect"] < levels["effect"][1])


@pytest.mark.parametrize("name", sorted(GUIDES))
def test_median_before_training_is_the_initial_location(name):
    inits = {"x": torch.tensor(0.7, dtype=F64), "y": torch.tensor(2.5, dtype=F64)}

    def model():
        pyro.sample("x", dist.Normal(torch.tensor(0.0, dtype=F64), 1.0))
        pyro.sample("y", dist.LogNormal(torch.tensor(0.0, dtype=F64), 1.0))

    guide = make_guide(name, model, init_loc_fn=init_to_value(values=inits))
    guide()
    median = guide.median()
    for site, value in inits.items():
        # Exact for guides that start as their base (MetFlow's identity flow); DAIS's first
        # steps move the draws towards the posterior, by less than half the base's scale of
        # 0.1 in the unconstrained space (y's is log y).
        tolerance = 0.05 if GUIDES[name] is AutoDAIS else 1e-6
        assert median[site].item() == pytest.approx(value.item(), rel=tolerance, abs=tolerance)


@pytest.mark.parametrize("name", MCMC)
def test_init_strategy_runs_once_not_at_every_target_evaluation(name):
    """Defect: the target evaluated Pyro's init-wrapped model, re-running the init strategy
    (its random draws included) at every log-joint evaluation."""
    calls = []

    def counting_init(site):
        calls.append(site["name"])
        return init_to_sample(site)

    guide = make_guide(name, three_supports, init_loc_fn=counting_init)
    guide()
    setup_calls = len(calls)
    fit(guide, three_supports, steps=3, particles=4)
    guide.median()
    assert setup_calls == 3 and len(calls) == setup_calls


@pytest.mark.parametrize("name", MCMC)
def test_jit_traced_metflow_serialises_and_dais_says_why_it_cannot(name):
    """Defect: AutoDAIS under torch.jit.trace failed with "Cannot insert a Tensor that
    requires grad as a constant"; AutoMetFlow's trace held the init strategy's Dirichlet."""
    guide = make_guide(name, serialisable_model, K=2, init_loc_fn=init_to_sample)
    guide()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if GUIDES[name] is AutoDAIS:
            with pytest.raises(RuntimeError, match="torch.jit.trace cannot record the gradient"):
                torch.jit.trace_module(guide, {"call": ()}, check_trace=False)
            return
        traced = torch.jit.trace_module(guide, {"call": ()}, check_trace=False)
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer)
    buffer.seek(0)
    pyro.set_rng_seed(0)
    expected = guide.call()
    pyro.set_rng_seed(0)
    actual = torch.jit.load(buffer).call()
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, e)


def test_jit_traced_predictive_targets_the_training_data_not_its_inputs():
    """The remembered data are the very tensors the trace gets as inputs; recorded as inputs,
    a traced Predictive would target new inputs with the old observations (and the tracer's
    own check, re-running on copies, finds two different graphs)."""
    x, y = regression_data()
    guide = make_guide("metflow", regression, K=2)
    guide(x, y)
    predictive = Predictive(regression, guide=guide, num_samples=2, return_sites=["w"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace_module(predictive, {"call": (x,)})  # checks the trace
    pyro.set_rng_seed(5)
    (on_training_inputs,) = traced.call(x)
    pyro.set_rng_seed(5)
    (on_other_inputs,) = traced.call(x.flip(0))
    torch.testing.assert_close(on_other_inputs, on_training_inputs, rtol=0, atol=0)


def test_dais_refuses_jit_trace_elbo_with_a_message():
    guide = AutoDAIS(three_supports, K=2)
    elbo = JitTrace_ELBO(num_particles=2, vectorize_particles=True, ignore_jit_warnings=True)
    svi = SVI(three_supports, guide, pyro.optim.Adam({"lr": 0.01}), elbo)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        with pytest.raises(RuntimeError, match="use Trace_ELBO instead of JitTrace_ELBO"):
            svi.step()


@pytest.mark.parametrize("name", sorted(GUIDES))
def test_torch_save_keeps_the_live_guide_and_the_copy_working(name):
    """Defect: Pyro's AutoGuide.__getstate__ set the live guide's model to None; the MCMC
    guides need their model at every call, so both the live and the loaded guide crashed."""
    guide = make_guide(name, serialisable_model)
    guide()
    pyro.set_rng_seed(0)
    expected = guide.call()
    buffer = io.BytesIO()
    torch.save(guide, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    for copy in (guide, loaded):
        pyro.set_rng_seed(0)
        for a, e in zip(copy.call(), expected, strict=True):
            torch.testing.assert_close(a, e, rtol=0, atol=0)
    loaded_params = dict(loaded.named_parameters())
    for key, value in guide.named_parameters():
        assert torch.equal(loaded_params[key], value)


@pytest.mark.parametrize("name", MCMC)
def test_guide_of_an_unpicklable_model_saves_and_says_what_to_do(name):
    def local_model():
        pyro.sample("x", dist.Normal(torch.tensor(0.0, dtype=F64), 1.0))

    guide = make_guide(name, local_model)
    guide()
    buffer = io.BytesIO()
    torch.save(guide, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert sorted(guide()) == ["x"]
    with pytest.raises(RuntimeError, match="unpickled without its model.*load_guide"):
        loaded()


@pytest.mark.parametrize("init_scale", [1e-2, 1e-4, 1e-8])
@pytest.mark.parametrize("name", sorted(set(CONTINUOUS) - {"lowrank"}))
def test_initial_draws_have_the_initial_scale(name, init_scale):
    """Defect: AutoDAIS's leapfrog was not scaled to q_0, so on a standard normal target a
    base of scale 1e-4 gave draws of sd 35 (and an initial loss of 1e22 at 1e-8)."""

    def model():
        pyro.sample("x", dist.Normal(torch.zeros(6, dtype=F64), 1.0).to_event(1))

    guide = make_guide(name, model, init_scale=init_scale)
    guide()
    with torch.no_grad(), pyro.plate("draws", 2000, dim=-1):
        draws = guide()["x"]
    assert 0.5 * init_scale < draws.std(0).mean().item() < 2 * init_scale
    _, scale = guide._loc_scale()  # what Pyro's summaries of an AutoContinuous guide read
    assert 0.5 * init_scale < scale.square().mean().sqrt().item() < 2 * init_scale
    loss = Trace_ELBO(num_particles=100, vectorize_particles=True).loss(model, guide)
    assert loss < 6 * (1 - math.log(init_scale))  # KL to the prior of a tight Gaussian


@pytest.mark.parametrize("name", sorted(GUIDES))
def test_predictive_on_new_inputs_draws_the_trained_posterior(name):
    x, y = regression_data()
    guide = fit(make_guide(name, regression), regression, x, y, steps=20, particles=4)
    draws = {}
    for args in ((x, y), (x[:5],)):
        pyro.set_rng_seed(3)
        # One draw: Predictive then runs the model, whose draws differ with the inputs.
        predictive = Predictive(regression, guide=guide, num_samples=1, return_sites=["w", "obs"])
        draws[len(args)] = predictive(*args)
    torch.testing.assert_close(draws[1]["w"], draws[2]["w"], rtol=0, atol=0)
    assert draws[1]["obs"].shape == (1, 5)


@pytest.mark.parametrize("name", MCMC)
def test_new_fully_observed_data_become_the_target(name):
    x, y = regression_data()
    guide = make_guide(name, regression)
    guide(x, y)
    guide(x[:5], y[:5])
    pyro.set_rng_seed(4)
    after_switch = guide.sample_latents(3, x[:5])
    pyro.set_rng_seed(4)
    assert torch.equal(after_switch, guide.sample_latents(3, x[:5], y[:5]))


@pytest.mark.parametrize("name", CONTINUOUS)
def test_latent_site_carries_the_whole_guide_density(name):
    """As in Pyro's continuous guides: the auxiliary ``_latent`` site holds log q, the model's
    sites hold none of it (only AutoContinuous's constraining Jacobians, zero here)."""
    x, y = regression_data()

    def unconstrained(x, y):
        w = pyro.sample("w", dist.Normal(torch.zeros(2, dtype=F64), 1.0).to_event(1))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("obs", dist.Normal(x @ w, 0.3), obs=y)

    guide = make_guide(name, unconstrained)
    trace = poutine.trace(guide).get_trace(x, y)
    trace.compute_log_prob()
    latent = trace.nodes[f"_{guide._pyro_name}_latent"]
    assert latent["log_prob_sum"].item() != 0
    assert trace.nodes["w"]["log_prob_sum"].item() == 0
    samples = [site for site in trace.stochastic_nodes if not site.startswith("_")]
    assert samples == ["w"] and len(trace.stochastic_nodes) == 2


@pytest.mark.parametrize("name", CONTINUOUS)
def test_sample_latent_returns_the_flat_unconstrained_draws(name):
    x, y = regression_data()
    guide = make_guide(name, regression)
    guide(x, y)
    assert guide.sample_latent(x, y).shape == (3,)
    with pyro.plate("particles", 4, dim=-2):
        assert guide.sample_latent(x, y).shape == (4, 1, 3)


@pytest.mark.parametrize("name", MCMC)
def test_get_posterior_says_what_to_call_instead(name):
    guide = make_guide(name, three_supports)
    guide()
    with pytest.raises(NotImplementedError, match="median\\(\\), quantiles\\(\\) or sample"):
        guide.get_posterior()


@pytest.mark.parametrize("name", sorted(GUIDES))
def test_frozen_guide_evaluates_without_warnings(name):
    """Defect: MetFlow's flow was a plain nn.Module, so pyro.module warned at every call once
    the guide was frozen with requires_grad_(False), as Pyro's own tests do after training."""
    guide = make_guide(name, three_supports)
    guide()
    guide.requires_grad_(False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Trace_ELBO(num_particles=4, vectorize_particles=True).loss(three_supports, guide)


@pytest.mark.parametrize("name", sorted(GUIDES))
def test_guide_lists_combine_with_a_point_mass(name):
    def pieces(model):
        guide = AutoGuideList(model)
        guide.append(AutoDelta(poutine.block(model, expose=["x"])))
        guide.append(make_guide(name, poutine.block(model, hide=["x"])))
        return guide

    guide = fit(pieces(three_supports), three_supports)
    median = guide.median()
    assert sorted(median) == ["x", "y", "z"]
    assert median["z"].item() == pytest.approx(0.5, abs=0.1)
