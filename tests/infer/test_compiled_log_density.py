"""The compiled log density against Pyro's own potential energy, and guides that use it."""

import copy
import functools
import io

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoDiagonalNormal
from pyro.infer.mcmc.util import initialize_model

from pyroext.guides import AutoDAIS, AutoMetFlow
from pyroext.guides import compiled_target as compiled_target_module
from pyroext.infer import compile_log_density
from pyroext.infer.compiled import CompiledLogDensity, CompileFallbackWarning, NotCompilable
from pyroext.models.bnn import BayesianMLP, relu_mlp
from pyroext.models.gmm import gmm_marginal_model
from pyroext.models.linear_regression import model_unknown_noise
from pyroext.models.vae import VAE, MLPDecoder, MLPEncoder


@pytest.fixture(autouse=True)
def float64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def eight_schools(sigma, y=None):
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("schools", len(sigma)):
        theta = pyro.sample("theta", dist.Normal(mu, tau))
        pyro.sample("obs", dist.Normal(theta, sigma), obs=y)


def nested(x):
    mu = pyro.sample("mu", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
    with pyro.plate("groups", x.shape[0], dim=-2):
        theta = pyro.sample("theta", dist.Normal(mu, 1.0).to_event(1))
        with pyro.plate("members", x.shape[1], dim=-1):
            u = pyro.sample("u", dist.Gamma(2.0, 2.0))
            pyro.sample("x", dist.Normal(theta.sum(-1) * u, 1.0), obs=x)


def generator(seed=0):
    return torch.Generator().manual_seed(seed)


def regression_case():
    x = torch.randn(30, 3, generator=generator())
    return model_unknown_noise, (x, x @ torch.tensor([1.0, -1.0, 0.5]) + 0.3), 4


def gmm_case():
    x = torch.randn(20, 2, generator=generator(1)) + 2 * (torch.arange(20) % 2).unsqueeze(-1)
    return functools.partial(gmm_marginal_model, k=2), (x,), 4


def schools_case():
    y = torch.tensor([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
    sigma = torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])
    return eight_schools, (sigma, y), 4


def nested_case():
    return nested, (torch.randn(3, 4, generator=generator(2)),), 4


def vae_case():
    torch.manual_seed(0)
    vae = VAE(MLPEncoder(6, 2, hidden=(5,)), MLPDecoder(2, 6, hidden=(5,)), latent_dim=2)
    x = torch.bernoulli(torch.full((4, 6), 0.5), generator=generator(3))
    return vae.model, (x,), 1  # local latents: one chain at a time


def bnn_case():
    torch.manual_seed(0)
    model = BayesianMLP(relu_mlp([2, 4, 1]), noise_scale=0.5)
    x = torch.randn(10, 2, generator=generator(4))
    return model, (x, x.sum(-1, keepdim=True).squeeze(-1)), 3


CASES = {
    "linear-regression": regression_case,
    "gmm-marginal": gmm_case,
    "eight-schools": schools_case,
    "nested-plates": nested_case,
    "vae": vae_case,
    "bnn": bnn_case,
}


def pyro_reference(model, args, z):
    """Log joint and gradient from Pyro's own HMC potential (``-potential_fn``), one chain at
    a time, with the flat layout of Pyro's AutoContinuous guides."""
    _, potential_fn, _, _ = initialize_model(model, args)
    layout = AutoDiagonalNormal(model)
    layout._setup_prototype(*args)
    values, grads = [], []
    for row in z:
        point = row.detach().clone().requires_grad_()
        unpacked = {site["name"]: value for site, value in layout._unpack_latent(point)}
        value = -potential_fn(unpacked)
        values.append(value.detach())
        grads.append(torch.autograd.grad(value, point)[0])
    return torch.stack(values), torch.stack(grads)


INDUCTOR_CASES = ("linear-regression", "eight-schools", "nested-plates")
"""Cases whose graphs inductor compiles here; the larger models' recordings run eagerly (the
recording is what these cases check: compiling their graphs takes 20-60 s each, and inductor's
kernels are covered by the others and by the compiled-ELBO runs)."""


@pytest.mark.parametrize("case", CASES)
def test_compiled_log_density_equals_pyro(case):
    model, args, chains = CASES[case]()
    backend = "inductor" if case in INDUCTOR_CASES else "eager"
    density = compile_log_density(model, *args, backend=backend)
    for draw in range(2):  # the first call is eager, the second compiled
        z = torch.randn(chains, density.latent_dim, generator=generator(10 + draw))
        expected_value, expected_grad = pyro_reference(model, args, z)
        value, grad = density.value_and_grad(z.requires_grad_())
        np.testing.assert_allclose(value.detach(), expected_value, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(grad.detach(), expected_grad, rtol=1e-10, atol=1e-10)
    assert density.compile_stats.graphs >= 2  # the value graph and its gradient


def test_second_derivatives_match_eager_autograd():
    model, args, chains = regression_case()
    density = compile_log_density(model, *args)
    eager = compile_log_density(model, *args)  # its first call at each shape is eager

    def hamiltonian_loss(log_density, z):
        value, grad = log_density.value_and_grad(z)  # grad keeps its graph
        return (value + (grad**2).sum(-1) * 0.01).sum()

    z = torch.randn(chains, density.latent_dim, generator=generator(5))
    scale = torch.tensor(0.7, requires_grad=True)
    hamiltonian_loss(density, z * scale)  # eager first call, records the value graph
    (got,) = torch.autograd.grad(hamiltonian_loss(density, z * scale), scale)
    (expected,) = torch.autograd.grad(hamiltonian_loss(eager, z * scale), scale)
    assert got.item() == pytest.approx(expected.item(), rel=1e-10)


def test_new_shapes_record_new_graphs_and_model_parameters_are_inputs():
    def model(x, y):
        w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
        bias = pyro.param("bias", torch.tensor(0.5))
        with pyro.plate("data", len(y)):
            pyro.sample("obs", dist.Normal((x * w).sum(-1) + bias, 1.0), obs=y)

    x, y = torch.randn(9, 2, generator=generator(6)), torch.randn(9, generator=generator(7))
    density = compile_log_density(model, x, y, backend="eager")
    for chains in (3, 3, 5, 5):
        density(torch.zeros(chains, 2))
    assert density.compile_stats.graphs == 2  # one value graph per shape
    with torch.no_grad():
        pyro.param("bias").unconstrained().add_(1.0)  # the graph reads the current value
    z = torch.zeros(5, 2, requires_grad=True)
    bias = pyro.param("bias").unconstrained()
    (grad,) = torch.autograd.grad(density(z).sum(), bias)
    assert grad.item() == pytest.approx((5 * (y - 1.5)).sum().item(), rel=1e-10)


def test_a_density_with_a_value_branch_is_refused_or_falls_back():
    def branching(z, data):
        return -(z**2).sum(-1) if z.sum() > 0 else -z.abs().sum(-1)

    strict = CompiledLogDensity(branching, data=(), backend="eager")
    with pytest.raises(NotCompilable, match="reads a tensor's value"):
        strict(torch.ones(2, 3))  # the first call of a shape records it
    lenient = CompiledLogDensity(branching, data=(), backend="eager", strict=False)
    with pytest.warns(CompileFallbackWarning, match="evaluated eagerly"):
        lenient(torch.ones(2, 3))
    value = lenient(torch.ones(2, 3))
    assert torch.equal(value, branching(torch.ones(2, 3), ()))


def regression(x, y):
    w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([x.shape[1]]).to_event(1))
    sigma = pyro.sample("sigma", dist.LogNormal(0.0, 1.0))
    with pyro.plate("data", x.shape[0]):
        mean = (x * w.unsqueeze(-2)).sum(-1)
        pyro.sample("obs", dist.Normal(mean, sigma.unsqueeze(-1)), obs=y)


def guide_run(make_guide, compile_target, steps=6):
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    x = torch.randn(30, 3, generator=generator(8))
    data = (x, x @ torch.tensor([1.0, -1.0, 0.5]) + 0.3 * torch.randn(30, generator=generator(9)))
    guide = make_guide(regression, compile_target=compile_target)
    svi = SVI(regression, guide, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO(num_particles=1))
    losses = [svi.step(*data) for _ in range(steps)]
    return losses, {k: v.detach().clone() for k, v in pyro.get_param_store().items()}, guide


@pytest.mark.parametrize(
    "make_guide", [functools.partial(AutoDAIS, K=3), functools.partial(AutoMetFlow, K=2)]
)
def test_guides_on_a_compiled_target_follow_the_eager_trajectory(make_guide):
    eager_losses, eager_params, _ = guide_run(make_guide, False)
    losses, params, guide = guide_run(make_guide, True)
    np.testing.assert_allclose(losses, eager_losses, rtol=1e-8)
    for name, value in eager_params.items():
        np.testing.assert_allclose(params[name], value, rtol=1e-8, atol=1e-10)
    assert guide._target.density.compile_stats.graphs >= 2
    restored = torch.load(io.BytesIO(_saved(guide)), weights_only=False)
    assert restored._target.density is None and copy.deepcopy(guide)._target.mode is True


def _saved(guide):
    buffer = io.BytesIO()
    torch.save(guide, buffer)
    return buffer.getvalue()


def test_auto_compiles_the_target_after_enough_training_calls(monkeypatch):
    monkeypatch.setattr(compiled_target_module, "TARGET_COMPILE_AFTER", 3)
    _, _, guide = guide_run(functools.partial(AutoDAIS, K=2), "auto", steps=2)
    assert guide._target.density is None
    _, _, guide = guide_run(functools.partial(AutoDAIS, K=2), "auto", steps=6)
    assert guide._target.density is not None and guide._target.density.compile_stats.graphs


@pytest.mark.parametrize("mode", ["yes", 1, None])
def test_bad_compile_target_is_refused(mode):
    with pytest.raises(ValueError, match="compile_target=.* must be True, False or 'auto'"):
        AutoDAIS(regression, K=2, compile_target=mode)
