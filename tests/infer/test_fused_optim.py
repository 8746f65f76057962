"""FusedOptim: the same trajectory as Pyro's per-parameter optimisers, checkpoints that resume,
and parameters left out of a step left alone."""

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO
from pyro.infer.autoguide import AutoNormal
from pyro.optim.clipped_adam import ClippedAdam

from pyroext.infer import FusedOptim, run_svi
from pyroext.models.vae import VAE, MLPDecoder, MLPEncoder


def images():
    return torch.bernoulli(torch.full((30, 16), 0.3), generator=torch.Generator().manual_seed(0))


def train(optim, steps=40, checkpoint=None, resume=False):
    pyro.clear_param_store()
    torch.manual_seed(0)
    vae = VAE(MLPEncoder(16, 2, (8,)), MLPDecoder(2, 16, (8,)), 2)
    result = run_svi(
        vae.model,
        vae.guide,
        images(),
        num_steps=steps,
        optim=optim,
        loss=Trace_ELBO(),
        seed=0,
        progress=False,
        checkpoint=checkpoint,
        checkpoint_every=10,
        resume=resume,
    )
    return result.losses, {k: v.detach().clone() for k, v in pyro.get_param_store().items()}


@pytest.mark.parametrize(
    "fused, per_parameter",
    [
        (FusedOptim(torch.optim.Adam, {"lr": 0.01}), pyro.optim.Adam({"lr": 0.01})),
        (
            FusedOptim(ClippedAdam, {"lr": 0.01, "lrd": 0.97, "clip_norm": 5.0}),
            pyro.optim.ClippedAdam({"lr": 0.01, "lrd": 0.97, "clip_norm": 5.0}),
        ),
    ],
)
def test_same_trajectory_as_pyros_per_parameter_optimisers(fused, per_parameter):
    fused_losses, fused_params = train(fused)
    pyro_losses, pyro_params = train(per_parameter)
    assert np.allclose(fused_losses, pyro_losses, rtol=1e-6, atol=0)
    for name, value in pyro_params.items():
        assert torch.allclose(fused_params[name], value, rtol=1e-5, atol=1e-7), name
    assert fused_params.keys() == pyro_params.keys()


def test_checkpoint_resumes_bit_for_bit(tmp_path):
    def optim():
        return FusedOptim(ClippedAdam, {"lr": 0.01, "lrd": 0.97})

    full_losses, full_params = train(optim(), 30, tmp_path / "full.pt")
    train(optim(), 20, tmp_path / "run.pt")
    losses, params = train(optim(), 30, tmp_path / "run.pt", resume=True)
    assert np.array_equal(losses, full_losses)
    assert all(torch.equal(params[name], full_params[name]) for name in full_params)


def test_parameters_left_out_of_a_step_are_not_updated():
    def model(use_b):
        a = pyro.param("a", torch.tensor(1.0))
        b = pyro.param("b", torch.tensor(1.0)) if use_b else torch.tensor(0.0)
        pyro.factor("f", -((a - 3.0) ** 2) - (b - 3.0) ** 2)

    def guide(use_b):
        pass

    pyro.clear_param_store()
    svi = pyro.infer.SVI(model, guide, FusedOptim(torch.optim.Adam, {"lr": 0.1}), Trace_ELBO())
    svi.step(True)
    b = pyro.param("b").item()
    a = pyro.param("a").item()
    svi.step(False)
    assert pyro.param("b").item() == b and pyro.param("a").item() != a


def test_per_parameter_arguments_are_refused():
    with pytest.raises(TypeError, match="one dict for all parameters"):
        FusedOptim(torch.optim.Adam, lambda name, param: {"lr": 0.1})


def test_guide_with_constrained_parameters():
    def model():
        pyro.sample("s", dist.LogNormal(0.0, 1.0))

    losses = []
    for optim in (FusedOptim(torch.optim.Adam, {"lr": 0.05}), pyro.optim.Adam({"lr": 0.05})):
        pyro.clear_param_store()
        result = run_svi(
            model, AutoNormal(model), num_steps=30, optim=optim, seed=1, progress=False
        )
        losses.append(result.losses)
    assert np.allclose(*losses, rtol=1e-6)
