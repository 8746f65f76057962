"""Adam's update inside the compiled step: it follows torch's Adam and moves the optimiser's own
state, schedules and other optimisers step outside the graph, and several steps recorded into
one graph equal single steps."""

import numpy as np
import pyro
import pytest
import torch
from pyro.infer.autoguide import AutoMultivariateNormal, AutoNormal
from svi_cases import regression, regression_data

from pyroext.infer import FusedOptim, TensorSVI, run_svi
from pyroext.infer.compiled import CompiledTrace_ELBO

pytestmark = pytest.mark.usefixtures("float64")


@pytest.fixture
def data():
    return regression_data()


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_adam_update_inside_the_graph_follows_torch_adam(data, weight_decay):
    runs = []
    for compile in (False, True):
        pyro.clear_param_store()
        optim = FusedOptim(torch.optim.Adam, {"lr": 0.05, "weight_decay": weight_decay})
        guide = AutoMultivariateNormal(regression)
        result = run_svi(
            regression, guide, *data, num_steps=30, optim=optim, seed=0, progress=False,
            compile=compile,
        )  # fmt: skip
        params = {k: v.detach().clone() for k, v in pyro.get_param_store().items()}
        runs.append((result, params, optim.get_state()))
    (eager, eager_params, eager_state), (fused, fused_params, fused_state) = runs
    np.testing.assert_allclose(fused.losses, eager.losses, rtol=1e-8)
    for name, value in eager_params.items():
        np.testing.assert_allclose(fused_params[name], value, rtol=1e-8, atol=1e-10)
    for name, state in eager_state.items():  # the optimiser's own state moved with it
        assert fused_state[name]["state"]["step"].item() == 30
        np.testing.assert_allclose(
            fused_state[name]["state"]["exp_avg_sq"], state["state"]["exp_avg_sq"], rtol=1e-7
        )


@pytest.mark.parametrize(
    "make_optim",
    [
        lambda: pyro.optim.ClippedAdam({"lr": 0.05, "lrd": 0.9}),
        lambda: FusedOptim(pyro.optim.clipped_adam.ClippedAdam, {"lr": 0.05, "lrd": 0.9}),
    ],
    ids=["pyro-clipped-adam", "fused-clipped-adam"],
)
def test_schedules_and_other_optimisers_step_outside_the_graph(data, make_optim):
    runs = []
    for compile in (False, True):
        pyro.clear_param_store()
        result = run_svi(
            regression, AutoNormal(regression), *data, num_steps=10, optim=make_optim(),
            seed=0, progress=False, compile=compile,
        )  # fmt: skip
        runs.append(result)
    np.testing.assert_allclose(runs[1].losses, runs[0].losses, rtol=1e-8)
    assert runs[1].compile_time > 0


def test_several_steps_in_one_graph_equal_single_steps(data):
    runs = []
    for repeat in (1, 3):
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        guide, elbo = AutoNormal(regression), CompiledTrace_ELBO(backend="eager")
        optim = FusedOptim(torch.optim.Adam, {"lr": 0.05})
        svi = TensorSVI(regression, guide, optim, elbo)
        losses = [svi.step_tensor(*data) for _ in range(3)]  # eager, checked, in-graph Adam
        for _ in range(2):
            if repeat == 1:
                losses += [svi.step_tensor(*data) for _ in range(3)]
            else:
                result = elbo.step(regression, guide, *data, optimizer=optim.prepare, repeat=3)
                assert result.updated and result.loss.shape == (3,)
                losses += list(result.loss)
        params = {k: v.detach().clone() for k, v in pyro.get_param_store().items()}
        runs.append((torch.stack(losses), params))
    np.testing.assert_allclose(runs[1][0], runs[0][0], rtol=1e-10)
    for name, value in runs[0][1].items():
        np.testing.assert_allclose(runs[1][1][name], value, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="repeat=2 needs the optimiser's update in the graph"):
        elbo.step(regression, guide, *data, repeat=2)
