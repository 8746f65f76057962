"""The compiled ELBO step against eager Pyro: same draws, same trajectory, clear refusals."""

import functools
import warnings

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO, TraceEnum_ELBO, TraceGraph_ELBO, TraceMeanField_ELBO
from pyro.infer.autoguide import (
    AutoDelta,
    AutoDiagonalNormal,
    AutoGuideList,
    AutoLowRankMultivariateNormal,
    AutoMultivariateNormal,
    AutoNormal,
)
from tiny_vaes import tiny
from torch.utils.data import DataLoader, TensorDataset

from pyroext.guides import AutoDAIS, AutoMetFlow
from pyroext.infer import FusedOptim, NonFiniteLossError, TensorSVI, run_svi
from pyroext.infer.compiled import (
    CompiledTrace_ELBO,
    CompiledTraceMeanField_ELBO,
    CompileFallbackWarning,
    NotCompilable,
    compiled_elbo,
)
from pyroext.infer.runner import _Loop
from pyroext.models import vae
from pyroext.models.vae import mcvae, metvae


def regression(x, y=None):
    w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([x.shape[1]]).to_event(1))
    sigma = pyro.sample("sigma", dist.LogNormal(0.0, 1.0))
    with pyro.plate("data", x.shape[0]):
        mean = (x * w.unsqueeze(-2)).sum(-1)
        pyro.sample("obs", dist.Normal(mean, sigma.unsqueeze(-1)), obs=y)


def minibatch_regression(x, y, size):
    w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([x.shape[1]]).to_event(1))
    with pyro.plate("data", size, subsample_size=x.shape[0]):
        pyro.sample("obs", dist.Normal(x @ w, 0.5), obs=y)


def subsampled_regression(x, y):
    w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([x.shape[1]]).to_event(1))
    with pyro.plate("data", x.shape[0], subsample_size=10) as index:
        pyro.sample("obs", dist.Normal(x[index] @ w, 0.5), obs=y[index])


def nested(x):
    """Groups x members, a latent per group with an event dim, a per-member latent."""
    mu = pyro.sample("mu", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
    with pyro.plate("groups", x.shape[0], dim=-2):
        theta = pyro.sample("theta", dist.Normal(mu, 1.0).to_event(1))
        with pyro.plate("members", x.shape[1], dim=-1):
            u = pyro.sample("u", dist.Normal(0.0, 0.5))
            pyro.sample("x", dist.Normal(theta.sum(-1) + u, 1.0), obs=x)


@pytest.fixture(autouse=True)
def float64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


@pytest.fixture
def data():
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(40, 3, generator=generator, dtype=torch.float64)
    y = x @ torch.tensor([1.0, -1.0, 0.5], dtype=torch.float64)
    return x, y + 0.5 * torch.randn(40, generator=generator, dtype=torch.float64)


def trajectory(model, make_guide, args, loss, steps=12, compile=False):
    pyro.clear_param_store()
    result = run_svi(
        model,
        make_guide(model),
        *args,
        num_steps=steps,
        loss=loss,
        optim=pyro.optim.Adam({"lr": 0.05}),
        seed=0,
        progress=False,
        compile=compile,
    )
    return result, {k: v.detach().clone() for k, v in pyro.get_param_store().items()}


def assert_same_run(model, make_guide, args, make_loss, steps=12):
    eager, eager_params = trajectory(model, make_guide, args, make_loss(), steps)
    compiled, compiled_params = trajectory(model, make_guide, args, make_loss(), steps, True)
    np.testing.assert_allclose(compiled.losses, eager.losses, rtol=1e-8)
    assert compiled_params.keys() == eager_params.keys()
    for name, value in eager_params.items():
        np.testing.assert_allclose(compiled_params[name], value, rtol=1e-8, atol=1e-10)
    assert compiled.compile_time > 0
    return compiled


def low_rank(model):
    return AutoLowRankMultivariateNormal(model, rank=2)


def guide_list(model):
    guide = AutoGuideList(model)
    guide.append(AutoNormal(pyro.poutine.block(model, expose=["w"])))
    guide.append(AutoDelta(pyro.poutine.block(model, hide=["w"])))
    return guide


GUIDES = [
    AutoNormal,
    AutoMultivariateNormal,
    AutoDiagonalNormal,
    AutoDelta,
    low_rank,
    guide_list,
    functools.partial(AutoDAIS, K=2),
    functools.partial(AutoMetFlow, K=2),
]
ELBOS = [
    Trace_ELBO,
    functools.partial(Trace_ELBO, num_particles=3, vectorize_particles=True, max_plate_nesting=1),
    TraceMeanField_ELBO,
]


@pytest.mark.parametrize("make_guide", GUIDES, ids=lambda g: getattr(g, "__name__", repr(g)))
def test_compiled_run_follows_eager_trace_elbo(data, make_guide):
    assert_same_run(regression, make_guide, data, Trace_ELBO)


@pytest.mark.parametrize("make_loss", ELBOS[1:], ids=["vectorised-particles", "mean-field"])
@pytest.mark.parametrize("make_guide", [AutoNormal, AutoMultivariateNormal])
def test_compiled_run_follows_other_elbos(data, make_guide, make_loss):
    assert_same_run(regression, make_guide, data, make_loss)


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


def test_nested_plates_and_event_dims():
    x = torch.randn(4, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    assert_same_run(nested, AutoNormal, (x,), Trace_ELBO)


def test_subsampling_draws_indices_inside_the_graph(data):
    compiled = assert_same_run(subsampled_regression, AutoNormal, data, Trace_ELBO, steps=20)
    assert compiled.losses.std() > 0  # fresh indices (and noise) at every step


def test_minibatches_from_a_loader_reuse_one_graph(data):
    loader = DataLoader(TensorDataset(*data), batch_size=8, shuffle=True)
    runs = []
    for compile in (False, True):
        pyro.clear_param_store()
        guide = AutoNormal(minibatch_regression)
        result = run_svi(
            minibatch_regression, guide, 40, data=loader, num_steps=15, seed=3,
            progress=False, compile=compile,
        )  # fmt: skip
        runs.append(result.losses)
    np.testing.assert_allclose(runs[1], runs[0], rtol=1e-8)


def test_drop_in_for_pyro_svi(data):
    losses = []
    for loss in (Trace_ELBO(), CompiledTrace_ELBO()):
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        guide = AutoMultivariateNormal(regression)
        svi = SVI(regression, guide, pyro.optim.Adam({"lr": 0.05}), loss)
        losses.append([svi.step(*data) for _ in range(8)])
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-8)
    assert loss.compile_stats.graphs == 1 and loss.compile_stats.fallbacks == []


def test_new_shapes_record_a_new_graph(data):
    elbo = CompiledTrace_ELBO(backend="eager")
    guide = AutoNormal(regression)
    x, y = data
    for rows in (40, 40, 40, 20, 20, 40):
        elbo.step(regression, guide, x[:rows], y[:rows])
    assert elbo.compile_stats.graphs == 2
    pyro.set_rng_seed(5)
    eager = Trace_ELBO().differentiable_loss(regression, guide, x, y)
    pyro.set_rng_seed(5)
    assert elbo.step(regression, guide, x, y)[0].item() == pytest.approx(eager.item(), rel=1e-10)


def test_resume_is_bit_for_bit(tmp_path, data):
    def run(steps, resume, path):
        pyro.clear_param_store()
        result = run_svi(
            regression, AutoMultivariateNormal(regression), *data, num_steps=steps, seed=0,
            progress=False, checkpoint=path, checkpoint_every=10, resume=resume, compile=True,
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
        progress=False, compile=True,
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
    saved = torch.load(tmp_path / "c.pt", weights_only=False)
    assert saved["step"] == 4 and np.isfinite(saved["losses"]).all()


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


@pytest.mark.slow
@pytest.mark.parametrize("cls", ["VAE", "LangevinVAE", "AnnealedVAE", "MetVAE"])
def test_vae_family_compiled_follows_eager(cls):
    classes = {
        "VAE": vae.VAE, "LangevinVAE": mcvae.LangevinVAE,
        "AnnealedVAE": mcvae.AnnealedVAE, "MetVAE": metvae.MetVAE,
    }  # fmt: skip
    x = torch.bernoulli(torch.full((6, 4), 0.4, dtype=torch.float64), generator=generator(3))
    runs = []
    for compile in (False, True):
        pyro.clear_param_store()
        model = tiny(classes[cls]) if cls != "VAE" else _tiny_plain_vae()
        result = run_svi(
            model.model, model.guide, x, num_steps=8, seed=0, progress=False,
            optim=pyro.optim.Adam({"lr": 0.01}), compile=compile,
        )  # fmt: skip
        runs.append(result)
    np.testing.assert_allclose(runs[1].losses, runs[0].losses, rtol=1e-8)
    assert runs[1].compile_time > 0


def _tiny_plain_vae():
    torch.manual_seed(0)
    return vae.VAE(vae.MLPEncoder(4, 1, (5,)), vae.MLPDecoder(1, 4, (5,)), 1).double()


def generator(seed):
    return torch.Generator().manual_seed(seed)


def test_several_steps_in_one_graph_equal_single_steps(data):
    runs = []
    for repeat in (1, 3):
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        guide, elbo = AutoNormal(regression), CompiledTrace_ELBO()
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
