"""The VAE model/guide pair: shapes, minibatch scaling, the objectives' identities and orderings,
and the batched importance-sampled log-likelihood against a per-sample Pyro loop."""

import math

import pyro
import pytest
import torch
from pyro import poutine

from pyroext.data import load_digits
from pyroext.infer import run_svi
from pyroext.models.vae import VAE, ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder, vae_loss
from pyroext.models.vae.eval import importance_log_likelihood, log_importance_weights

LATENT = 4


@pytest.fixture(scope="module")
def digits():
    generator = torch.Generator().manual_seed(0)
    return torch.bernoulli(load_digits(dtype=torch.float64).x, generator=generator)


def mlp_vae(dtype=torch.float64):
    torch.manual_seed(0)
    return VAE(MLPEncoder(64, LATENT, (32,)), MLPDecoder(LATENT, 64, (32,)), LATENT).to(dtype)


def trace_log_weight(vae, x, z):
    """log p(x, z) - log q(z | x) per image, from Pyro's traces of the model and guide."""
    guide = poutine.trace(poutine.condition(vae.guide, {"z": z})).get_trace(x)
    model = poutine.trace(poutine.condition(vae.model, {"z": z})).get_trace(x)
    for trace in (guide, model):
        trace.compute_log_prob()
    log_p = model.nodes["z"]["log_prob"] + model.nodes["x"]["log_prob"]
    return log_p - guide.nodes["z"]["log_prob"]


@pytest.mark.parametrize("network", ["mlp", "conv"])
def test_shapes_under_vectorised_particles(network, digits):
    if network == "mlp":
        vae = mlp_vae()
    else:
        vae = VAE(ConvEncoder((8, 8), LATENT), ConvDecoder(LATENT, (8, 8)), LATENT).double()
    x = digits[:5]
    with pyro.plate("particles", 3, dim=-2):
        guide = poutine.trace(vae.guide).get_trace(x)
        model = poutine.trace(poutine.replay(vae.model, trace=guide)).get_trace(x)
    assert guide.nodes["z"]["value"].shape == (3, 5, LATENT)
    assert model.nodes["x"]["fn"].batch_shape == (3, 5)
    assert model.nodes["x"]["fn"].event_shape == (64,)


def test_minibatch_log_densities_are_scaled_to_the_dataset(digits):
    vae, x = mlp_vae(), digits[:10]
    guide = poutine.trace(vae.guide).get_trace(x, num_data=1797)
    model = poutine.trace(poutine.replay(vae.model, trace=guide)).get_trace(x, num_data=1797)
    per_image = trace_log_weight(vae, x, guide.nodes["z"]["value"])
    scaled = model.log_prob_sum() - guide.log_prob_sum()
    assert scaled.item() == pytest.approx(per_image.sum().item() * 1797 / 10, rel=1e-10)


def test_log_importance_weights_match_pyro_traces(digits):
    vae, x = mlp_vae(), digits[:6]
    z = torch.randn(3, 6, LATENT, dtype=torch.float64)
    batched = log_importance_weights(vae, x, z)
    looped = torch.stack([trace_log_weight(vae, x, z[s]) for s in range(3)])
    assert torch.allclose(batched, looped, rtol=1e-12, atol=1e-10)


def test_chunked_estimate_is_the_log_mean_of_all_weights(digits):
    vae, x = mlp_vae(), digits[:7]
    estimate = importance_log_likelihood(
        vae, x, 12, sample_chunk=5, data_chunk=3, generator=torch.Generator().manual_seed(3)
    )
    # the same draws, by hand: chunks of 5, 5 and 2 samples for each chunk of 3, 3 and 1 images
    generator, parts = torch.Generator().manual_seed(3), []
    for batch in x.split(3):
        loc, scale = vae.encoder(batch)
        noise = [
            torch.randn(n, *loc.shape, generator=generator, dtype=loc.dtype) for n in (5, 5, 2)
        ]
        z = loc + scale * torch.cat(noise)
        parts.append(torch.logsumexp(log_importance_weights(vae, batch, z), 0) - math.log(12))
    assert torch.allclose(estimate, torch.cat(parts).detach(), rtol=1e-12)


@pytest.mark.parametrize("objective", ["trace", "analytic", "iwae"])
def test_objectives_estimate_their_bounds(objective, digits):
    """Monte Carlo means of each objective against the bound computed from explicit draws."""
    vae, x = mlp_vae(), digits[:20]
    torch.manual_seed(1)
    num = 2000 if objective != "iwae" else 400
    k = 5 if objective == "iwae" else 1
    with torch.no_grad():
        losses = torch.tensor(
            [vae_loss(objective, k).loss(vae.model, vae.guide, x) for _ in range(num)]
        )
        loc, scale = vae.encoder(x)
        z = loc + scale * torch.randn(4000, k, *loc.shape, dtype=loc.dtype)
        weights = log_importance_weights(vae, x, z.reshape(-1, *loc.shape)).reshape(4000, k, -1)
        bound = (torch.logsumexp(weights, 1) - math.log(k)).sum(-1)
    mcse = math.hypot(losses.std().item() / math.sqrt(num), bound.std().item() / math.sqrt(4000))
    assert abs(-losses.mean().item() - bound.mean().item()) < 4 * mcse


@pytest.mark.slow
def test_trained_bounds_are_ordered(digits):
    """E[ELBO] < E[IWAE k=5] < IWAE k=1000 < 0 nats per image on a small trained model, each gap
    beyond 4 standard errors over images (independent draws for each bound)."""
    vae = mlp_vae()
    pyro.clear_param_store()
    loader = torch.utils.data.DataLoader(digits, batch_size=100, shuffle=True)
    run_svi(
        vae.model,
        vae.guide,
        data=loader,
        num_steps=1500,
        model_kwargs={"num_data": len(digits)},
        optim=pyro.optim.Adam({"lr": 3e-3}),
        loss=vae_loss("trace"),
        progress=False,
        seed=0,
    )
    x, generator = digits[:300], torch.Generator().manual_seed(0)
    with torch.no_grad():
        loc, scale = vae.encoder(x)

        def log_weights(num):  # independent draws for each bound
            noise = torch.randn(num, *loc.shape, generator=generator, dtype=loc.dtype)
            return log_importance_weights(vae, x, loc + scale * noise)

        estimates = {
            1: log_weights(1000).mean(0),
            5: (torch.logsumexp(log_weights(1000).reshape(200, 5, -1), 1) - math.log(5)).mean(0),
            1000: importance_log_likelihood(vae, x, 1000, generator=generator),
        }
    means = {k: v.mean().item() for k, v in estimates.items()}
    gaps = [estimates[5] - estimates[1], estimates[1000] - estimates[5]]
    for gap in gaps:
        assert gap.mean() > 4 * gap.std() / math.sqrt(len(gap))
    assert means[1] < means[5] < means[1000] < 0, means
