"""Programs that one compiled graph cannot stand for: an explicit ``compile=True`` stops with the
site and the reason, ``"auto"`` warns once and trains eagerly, and ``compiled_elbo`` keeps the
options of the objectives it has a counterpart for and refuses the others."""

import warnings

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceEnum_ELBO, TraceGraph_ELBO, TraceMeanField_ELBO
from pyro.infer.autoguide import AutoNormal
from svi_cases import regression_data

from pyroext.infer import run_svi
from pyroext.infer.compiled import (
    CompiledTrace_ELBO,
    CompiledTraceMeanField_ELBO,
    CompileFallbackWarning,
    NotCompilable,
    compiled_elbo,
)

pytestmark = pytest.mark.usefixtures("float64")


def branching(x, y):
    w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([x.shape[1]]).to_event(1))
    if w.sum() > 0:  # Python control flow on a sampled value
        w = 2 * w
    with pyro.plate("data", x.shape[0]):
        pyro.sample("obs", dist.Normal(x @ w, 0.5), obs=y)


@pyro.infer.config_enumerate
def mixture(x, y):
    locs = pyro.sample("locs", dist.Normal(0.0, 5.0).expand([2]).to_event(1))
    with pyro.plate("data", len(y)):
        z = pyro.sample("z", dist.Categorical(torch.tensor([0.5, 0.5])))
        pyro.sample("obs", dist.Normal(locs[z], 1.0), obs=y)


def counting_guide():
    calls = {"n": 0}

    def guide(x, y):
        calls["n"] += 1
        loc = pyro.param("loc", torch.zeros(x.shape[1]))
        pyro.sample("w", dist.Normal(loc, 1.0).to_event(1))
        if calls["n"] % 2:  # Python state outside the arguments
            pyro.sample("sigma", dist.LogNormal(0.0, 1.0))

    return guide


def masked_model(x, y):
    w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([x.shape[1]]).to_event(1))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("obs", dist.Normal(x @ w, 0.5), obs=y)
    pyro.sample("total", dist.Normal(0.0, 1.0), obs=y[y > 0].sum())


def sigma_model(x, y):
    pyro.sample("w", dist.Normal(0.0, 1.0).expand([x.shape[1]]).to_event(1))
    pyro.sample("sigma", dist.LogNormal(0.0, 1.0))


FALL_BACKS = {
    "value-branch": (branching, AutoNormal, "reads a tensor's value", "'w'"),
    "data-dependent-shape": (masked_model, AutoNormal, "depends on the values", "'obs'"),
    "enumeration": (
        mixture,
        lambda m: AutoNormal(pyro.poutine.block(m, hide=["z"])),
        "enumerates a discrete site",
        "'z'",
    ),
    "sites-change": (sigma_model, lambda m: counting_guide(), "sites change", "'sigma'"),
}


@pytest.fixture
def data():
    return regression_data()


@pytest.mark.parametrize("case", FALL_BACKS)
def test_explicit_compile_stops_with_the_site_and_reason(data, case):
    model, make_guide, reason, site = FALL_BACKS[case]
    with pytest.raises(NotCompilable, match=reason) as error:
        run_svi(model, make_guide(model), *data, num_steps=5, progress=False, compile=True)
    assert site in str(error.value)
    assert "step" in "".join(getattr(error.value, "__notes__", []))


@pytest.mark.parametrize("case", FALL_BACKS)
def test_auto_compile_warns_once_and_trains_eagerly(data, case, monkeypatch):
    model, make_guide, reason, site = FALL_BACKS[case]
    monkeypatch.setattr("pyroext.infer.runner.COMPILE_MIN_STEPS", 1)
    loss = TraceEnum_ELBO(max_plate_nesting=1) if case == "enumeration" else Trace_ELBO()
    runs = []
    for compile in (False, "auto"):
        pyro.clear_param_store()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = run_svi(
                model, make_guide(model), *data, num_steps=6, seed=0, loss=loss,
                optim=pyro.optim.Adam({"lr": 0.05}), progress=False, compile=compile,
            )  # fmt: skip
        runs.append(result.losses)
        fallbacks = [w for w in caught if issubclass(w.category, CompileFallbackWarning)]
    if case == "enumeration":  # TraceEnum_ELBO has no compiled counterpart: no attempt
        assert fallbacks == [] and result.compile_time == 0
    else:
        assert len(fallbacks) == 1
        assert site in str(fallbacks[0].message) and reason in str(fallbacks[0].message)
    if case != "sites-change":  # recording ran the guide once more, moving its counter
        np.testing.assert_allclose(runs[1], runs[0], rtol=1e-12)


def test_enumerated_guide_site_under_compiled_elbo_is_refused(data):
    def guide(x, y):
        pyro.sample("w", dist.Normal(torch.zeros(3), 1.0).to_event(1))
        pyro.sample("c", dist.Bernoulli(0.5), infer={"enumerate": "parallel"})

    def model(x, y):
        pyro.sample("w", dist.Normal(0.0, 1.0).expand([3]).to_event(1))
        pyro.sample("c", dist.Bernoulli(0.5))

    elbo = CompiledTrace_ELBO(backend="eager")
    with pytest.raises(NotCompilable, match="'c'.*enumerates"), pyro.validation_enabled(False):
        for _ in range(2):
            elbo.step(model, guide, *data)


def test_compiled_elbo_keeps_options_and_refuses_other_objectives():
    original = Trace_ELBO(num_particles=4, vectorize_particles=True, max_plate_nesting=2)
    loss = compiled_elbo(original)
    assert isinstance(loss, CompiledTrace_ELBO)
    for option in ("num_particles", "vectorize_particles", "max_plate_nesting"):
        assert getattr(loss, option) == getattr(original, option)
    assert loss.num_particles == 4
    assert isinstance(compiled_elbo(TraceMeanField_ELBO()), CompiledTraceMeanField_ELBO)
    with pytest.raises(NotCompilable, match="TraceGraph_ELBO has no compiled counterpart"):
        compiled_elbo(TraceGraph_ELBO())
    with pytest.warns(CompileFallbackWarning, match="TraceEnum_ELBO"):
        assert isinstance(compiled_elbo(TraceEnum_ELBO(), strict=False), TraceEnum_ELBO)
