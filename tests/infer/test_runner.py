"""``run_svi`` against Pyro's SVI: the same trajectories, resuming, minibatches, non-finite
losses, crashes, convergence and the refusal of bad options."""

import functools

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import (
    SVI,
    JitTrace_ELBO,
    RenyiELBO,
    Trace_ELBO,
    TraceEnum_ELBO,
    TraceGraph_ELBO,
    TraceMeanField_ELBO,
)
from pyro.infer.autoguide import AutoDelta, AutoMultivariateNormal, AutoNormal
from svi_cases import minibatch_regression, regression_data
from torch.utils.data import DataLoader, TensorDataset

from pyroext.infer import Convergence, NonFiniteLossError, NonFiniteParameterError, run_svi
from pyroext.infer.checkpoint import load_checkpoint
from pyroext.infer.runner import _Loop


def regression(x, y=None):
    w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([x.shape[1]]).to_event(1))
    b = pyro.sample("b", dist.Normal(0.0, 1.0))
    with pyro.plate("data", x.shape[0]):
        # broadcasts over leading particle dims of w and b (vectorize_particles=True)
        mean = (x * w.unsqueeze(-2)).sum(-1) + b.unsqueeze(-1)
        return pyro.sample("obs", dist.Normal(mean, 0.5), obs=y)


@pyro.infer.config_enumerate
def mixture(data):
    locs = pyro.sample("locs", dist.Normal(0.0, 5.0).expand([2]).to_event(1))
    with pyro.plate("data", len(data)):
        z = pyro.sample("z", dist.Categorical(torch.tensor([0.5, 0.5])))
        pyro.sample("obs", dist.Normal(locs[z], 1.0), obs=data)


pytestmark = pytest.mark.usefixtures("float64")


@pytest.fixture
def data():
    return regression_data(intercept=0.3)


def pyro_trajectory(model, guide, args, loss, steps, seed=0):
    pyro.set_rng_seed(seed)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), loss)
    return np.array([svi.step(*args) for _ in range(steps)])


ELBOS = [
    Trace_ELBO,
    TraceMeanField_ELBO,
    TraceGraph_ELBO,
    JitTrace_ELBO,
    functools.partial(RenyiELBO, alpha=0.5, num_particles=3),
    functools.partial(Trace_ELBO, num_particles=4, vectorize_particles=True, max_plate_nesting=1),
]


@pytest.mark.parametrize("Elbo", ELBOS)
@pytest.mark.parametrize("Guide", [AutoNormal, AutoMultivariateNormal, AutoDelta])
def test_same_trajectory_as_pyro_svi(data, Elbo, Guide):
    expected = pyro_trajectory(regression, Guide(regression), data, Elbo(), 30)
    expected_params = {k: v.detach().clone() for k, v in pyro.get_param_store().items()}
    pyro.clear_param_store()
    result = run_svi(
        regression,
        Guide(regression),
        *data,
        num_steps=30,
        loss=Elbo(),
        optim=pyro.optim.Adam({"lr": 0.05}),
        seed=0,
        progress=False,
        display_every=7,
    )
    np.testing.assert_allclose(result.losses, expected, rtol=1e-7)
    for name, value in pyro.get_param_store().items():
        # same estimator; only the summation order of the gradient differs
        torch.testing.assert_close(value, expected_params[name], rtol=1e-7, atol=1e-9)
    assert result.num_steps == 30 and result.stop_reason == "max_steps"


def test_enumerated_model_matches_pyro_svi():
    data = torch.cat([torch.randn(20) - 3, torch.randn(20) + 3]).double()
    guide = AutoDelta(pyro.poutine.block(mixture, expose=["locs"]))
    expected = pyro_trajectory(mixture, guide, (data,), TraceEnum_ELBO(max_plate_nesting=1), 20)
    pyro.clear_param_store()
    guide = AutoDelta(pyro.poutine.block(mixture, expose=["locs"]))
    result = run_svi(
        mixture,
        guide,
        data,
        num_steps=20,
        loss=TraceEnum_ELBO(max_plate_nesting=1),
        optim=pyro.optim.Adam({"lr": 0.05}),
        seed=0,
        progress=False,
    )
    np.testing.assert_allclose(result.losses, expected, rtol=1e-7)


def test_host_syncs_once_per_display_interval(data, monkeypatch):
    calls = []
    original = _Loop._sync
    monkeypatch.setattr(
        _Loop, "_sync", lambda self, bar: calls.append(self.step) or original(self, bar)
    )
    run_svi(
        regression, AutoNormal(regression), *data, num_steps=100, display_every=25, progress=False
    )
    assert calls == [25, 50, 75, 100]


def resume_run(tmp_path, steps, resume, data=None, args=()):
    pyro.clear_param_store()
    result = run_svi(
        minibatch_regression if data is not None else regression,
        AutoMultivariateNormal(minibatch_regression if data is not None else regression),
        *args,
        num_steps=steps,
        data=data,
        seed=0,
        progress=False,
        checkpoint=tmp_path / "run.ckpt",
        checkpoint_every=15,
        resume=resume,
        display_every=4,
    )
    return result, {k: v.detach().clone() for k, v in pyro.get_param_store().items()}


def test_resume_reproduces_uninterrupted_run_bit_for_bit(tmp_path, data):
    full, full_params = resume_run(tmp_path / "full", 45, False, args=data)
    resume_run(tmp_path, 30, False, args=data)
    resumed, resumed_params = resume_run(tmp_path, 45, True, args=data)
    assert np.array_equal(resumed.losses, full.losses)
    assert all(torch.equal(resumed_params[k], full_params[k]) for k in full_params)


def test_resume_mid_epoch_with_shuffled_loader(tmp_path, data):
    x, y = data
    loader = DataLoader(TensorDataset(x, y), batch_size=7, shuffle=True)
    args = (len(x),)
    full, full_params = resume_run(tmp_path / "full", 40, False, loader, args)
    resume_run(tmp_path, 15, False, loader, args)  # 15 batches of 6 per epoch: mid epoch 3
    resumed, resumed_params = resume_run(tmp_path, 40, True, loader, args)
    assert np.array_equal(resumed.losses, full.losses)
    assert all(torch.equal(resumed_params[k], full_params[k]) for k in full_params)


def test_loader_sets_epoch_on_sampler(data):
    epochs = []

    class RecordingSampler(torch.utils.data.SequentialSampler):
        def set_epoch(self, epoch):
            epochs.append(epoch)

    dataset = TensorDataset(*data)
    loader = DataLoader(dataset, batch_size=10, sampler=RecordingSampler(dataset))
    run_svi(
        minibatch_regression,
        AutoNormal(minibatch_regression),
        40,
        data=loader,
        num_steps=12,
        progress=False,
    )
    assert epochs == [0, 1, 2]


def nan_after(calls_before_nan):
    calls = {"n": 0}

    def model(x, y=None):
        calls["n"] += 1
        w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([x.shape[1]]).to_event(1))
        scale = x.new_tensor(float("nan") if calls["n"] > calls_before_nan else 0.5)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("obs", dist.Normal(x @ w, scale, validate_args=False), obs=y)

    return model


def test_nan_stops_with_step_and_keeps_checkpoint(tmp_path, data):
    model = nan_after(23)  # the first call builds the guide's prototype: step k is call k + 1
    with pytest.warns(UserWarning, match="NaN"), pytest.raises(NonFiniteLossError) as error:
        run_svi(
            model,
            AutoNormal(model),
            *data,
            num_steps=100,
            checkpoint=tmp_path / "c.pt",
            checkpoint_every=10,
            display_every=50,
            progress=False,
        )
    assert error.value.step == 23
    assert "at step 23" in str(error.value) and "at step 22" in str(error.value)
    saved = load_checkpoint(tmp_path / "c.pt")
    assert saved["step"] == 20 and np.isfinite(saved["losses"]).all()


def nan_gradient_at(call):
    """A model whose scale gets a NaN gradient at one call while every loss stays finite."""
    calls = {"n": 0}

    def model(x, y=None):
        calls["n"] += 1
        scale = pyro.param("scale", x.new_tensor(0.5), constraint=dist.constraints.positive)
        if calls["n"] == call:
            scale.register_hook(lambda grad: grad * float("nan"))
        return regression_with_scale(x, y, scale)

    return model


def regression_with_scale(x, y, scale):
    w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([x.shape[1]]).to_event(1))
    with pyro.plate("data", x.shape[0]):
        return pyro.sample("obs", dist.Normal(x @ w, scale), obs=y)


def test_nan_gradient_with_finite_loss_never_reaches_the_checkpoint(tmp_path, data):
    model = nan_gradient_at(13)  # step 12: the first call builds the guide
    with pytest.raises(NonFiniteParameterError) as error:
        run_svi(
            model,
            AutoNormal(model),
            *data,
            num_steps=30,
            checkpoint=tmp_path / "c.pt",
            checkpoint_every=4,
            display_every=4,
            progress=False,
        )
    assert isinstance(error.value, NonFiniteLossError) and error.value.step == 12
    message = str(error.value)
    assert message.startswith("parameter 'scale' is nan after step 12 (all finite after step 8)")
    assert message.endswith(f"checkpoint {str(tmp_path / 'c.pt')!r} is intact (step 8)")
    saved = load_checkpoint(tmp_path / "c.pt")
    assert saved["step"] == 8 and np.isfinite(saved["losses"]).all()
    assert all(torch.isfinite(p).all() for p in saved["param_store"]["params"].values())


def test_overflowing_update_stops_before_an_infinite_parameter_is_saved(tmp_path):
    def model():
        pyro.factor("reward", 1e-3 * pyro.param("p", torch.tensor(0.0)))

    with pytest.raises(NonFiniteParameterError, match="parameter 'p' is inf after step 18"):
        run_svi(
            model,
            lambda: None,
            num_steps=100,
            optim=pyro.optim.Adam({"lr": 1e307}),
            checkpoint=tmp_path / "c.pt",
            checkpoint_every=1,
            progress=False,
        )
    saved = load_checkpoint(tmp_path / "c.pt")
    assert saved["step"] == 17 and torch.isfinite(saved["param_store"]["params"]["p"])


def test_resuming_with_fewer_steps_or_another_model_is_refused(tmp_path, data):
    run_svi(
        regression,
        AutoNormal(regression),
        *data,
        num_steps=10,
        checkpoint=tmp_path / "c.pt",
        progress=False,
    )
    pyro.clear_param_store()
    with pytest.raises(ValueError, match="already holds 10 steps and num_steps=5 is fewer"):
        run_svi(
            regression,
            AutoNormal(regression),
            *data,
            num_steps=5,
            checkpoint=tmp_path / "c.pt",
            resume=True,
        )
    x, y = data
    with pytest.raises(ValueError, match=r"'AutoNormal.locs.w' has shape \(3,\) there, \(4,\)"):
        run_svi(
            regression,
            AutoNormal(regression),
            torch.cat([x, x[:, :1]], 1),
            y,
            num_steps=20,
            checkpoint=tmp_path / "c.pt",
            resume=True,
        )
    assert not pyro.get_param_store().keys()  # left as it was


def test_crash_mid_training_names_step_and_keeps_checkpoint(tmp_path, data):
    calls = {"n": 0}

    def model(x, y=None):
        calls["n"] += 1
        if calls["n"] == 13:
            raise RuntimeError("disk on fire")
        return regression(x, y)

    with pytest.raises(RuntimeError, match="disk on fire") as error:
        run_svi(
            model,
            AutoNormal(model),
            *data,
            num_steps=50,
            checkpoint=tmp_path / "c.pt",
            checkpoint_every=5,
            progress=False,
        )
    assert "step 12 failed" in "".join(error.value.__notes__)
    assert load_checkpoint(tmp_path / "c.pt")["step"] == 10
    assert not list(tmp_path.glob(".*.tmp"))


def test_convergence_stop(data):
    result = run_svi(
        regression,
        AutoNormal(regression),
        *data,
        num_steps=20000,
        convergence=Convergence(rtol=1e-3, window=100),
        progress=False,
    )
    assert result.stop_reason == "converged" and result.num_steps < 20000
    assert result.relative_change < 1e-3 and result.num_steps % 100 == 0
    assert len(result.loss_series()) == result.num_steps


@pytest.mark.parametrize(
    "options, message",
    [
        ({"num_steps": 0}, "num_steps=0 must be an integer >= 1"),
        ({"num_steps": 2.5}, "num_steps=2.5"),
        ({"display_every": 0}, "display_every=0"),
        ({"checkpoint_every": -1}, "checkpoint_every=-1"),
        ({"resume": True}, "resume=True needs checkpoint"),
        ({"device": "gpu0"}, "device='gpu0' is not a torch device"),
        ({"convergence": Convergence(rtol=2.0)}, r"rtol=2.0 must be in \(0, 1\)"),
        ({"convergence": Convergence(window=1)}, "window=1 must be an integer >= 2"),
    ],
)
def test_bad_options_fail_before_training(data, options, message):
    calls = []
    options = {"num_steps": 10, **options}
    with pytest.raises(ValueError, match=message):
        run_svi(lambda *a: calls.append(a), AutoNormal(regression), *data, **options)
    assert not calls


def test_cuda_request_matches_availability(data):
    if torch.cuda.is_available():
        result = run_svi(regression, AutoNormal(regression), *data, num_steps=3, device="cuda")
        assert result.num_steps == 3
    else:
        with pytest.raises(ValueError, match="CUDA is not available"):
            run_svi(regression, AutoNormal(regression), *data, num_steps=3, device="cuda")


def test_progress_bar_shows_elbo(data, capsys):
    run_svi(regression, AutoNormal(regression), *data, num_steps=50, display_every=25)
    err = capsys.readouterr().err
    assert "50/50" in err and "elbo=" in err and "step/s" in err
