"""Compiled runs of ``run_svi``: resuming, host syncs, non-finite losses, and the ``compile``
option."""

import functools
import warnings

import numpy as np
import pyro
import pytest
import torch
from pyro.infer.autoguide import AutoMultivariateNormal, AutoNormal
from svi_cases import minibatch_regression, regression, regression_data
from torch.utils.data import DataLoader, TensorDataset

from pyroext.infer import NonFiniteLossError, run_svi
from pyroext.infer.checkpoint import load_checkpoint
from pyroext.infer.compiled import CompiledTrace_ELBO
from pyroext.infer.runner import _Loop

pytestmark = pytest.mark.usefixtures("float64")


@pytest.fixture
def data():
    return regression_data()


def test_resume_is_bit_for_bit(tmp_path, data):
    def run(steps, resume, path):
        pyro.clear_param_store()
        result = run_svi(
            regression, AutoMultivariateNormal(regression), *data, num_steps=steps, seed=0,
            progress=False, checkpoint=path, checkpoint_every=10, resume=resume,
            loss=CompiledTrace_ELBO(backend="eager"),  # resuming is the same for inductor
        )  # fmt: skip
        return result, {k: v.detach().clone() for k, v in pyro.get_param_store().items()}

    full, full_params = run(30, False, tmp_path / "full.ckpt")
    run(20, False, tmp_path / "run.ckpt")
    resumed, resumed_params = run(30, True, tmp_path / "run.ckpt")
    assert np.array_equal(resumed.losses, full.losses)
    assert all(torch.equal(resumed_params[k], full_params[k]) for k in full_params)


def test_compiled_run_syncs_the_host_once_per_display_interval(data, monkeypatch):
    calls = []
    original = _Loop._sync
    monkeypatch.setattr(
        _Loop, "_sync", lambda self, bar: calls.append(self.step) or original(self, bar)
    )
    result = run_svi(
        regression, AutoNormal(regression), *data, num_steps=60, display_every=20,
        progress=False, loss=CompiledTrace_ELBO(backend="eager"),
    )  # fmt: skip
    assert calls == [20, 40, 60] and result.compile_time > 0


def test_nan_in_a_compiled_step_stops_at_its_step(tmp_path, data):
    x, y = data
    y = y.clone()
    y[-1] = float("nan")  # the last batch of the first epoch: step 5
    loader = DataLoader(TensorDataset(x, y), batch_size=8)
    model = functools.partial(minibatch_regression, size=40)
    with pytest.raises(NonFiniteLossError) as error, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with pyro.validation_enabled(False):
            run_svi(
                model, AutoNormal(model), data=loader, num_steps=30, display_every=10,
                checkpoint=tmp_path / "c.pt", checkpoint_every=4, progress=False, compile=True,
            )  # fmt: skip
    assert error.value.step == 5
    saved = load_checkpoint(tmp_path / "c.pt")
    assert saved["step"] == 4 and np.isfinite(saved["losses"]).all()


@pytest.mark.parametrize("compile", ["yes", 1.0, None])
def test_bad_compile_option_fails_before_training(data, compile):
    with pytest.raises(ValueError, match="compile=.* must be True, False or 'auto'"):
        run_svi(regression, AutoNormal(regression), *data, num_steps=5, compile=compile)


def test_auto_compiles_only_long_runs(data, monkeypatch):
    monkeypatch.setattr("pyroext.infer.runner.COMPILE_MIN_STEPS", 10)
    short = run_svi(regression, AutoNormal(regression), *data, num_steps=9, compile="auto")
    pyro.clear_param_store()
    long = run_svi(regression, AutoNormal(regression), *data, num_steps=10, compile="auto")
    assert short.compile_time == 0 and long.compile_time > 0
