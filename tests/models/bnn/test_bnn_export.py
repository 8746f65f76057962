"""ArviZ export of Bayes-by-backprop networks, against hand computations: ``lp`` and ``lq`` of the
exported draws, pointwise log-likelihoods, thinning, the layer summary, the learned noise scale,
bad input and ``pyroext diagnose`` on a network."""

import math
from pathlib import Path
from typing import NamedTuple

import arviz_base as azb
import numpy as np
import pyro
import pytest
import torch
import xarray as xr
from pyro.infer import SVI, Trace_ELBO
from torch import Tensor, nn

from pyroext.cli.diagnose import diagnose_run
from pyroext.models.bnn import BayesianMLP, GaussianPrior, ScaleMixturePrior
from pyroext.models.bnn.export import LAYER_STATISTICS, bnn_to_datatree
from pyroext.models.bnn.guide import AutoBayesByBackprop
from pyroext.runs import POSTERIOR_FILE, save_datatree

F64 = torch.float64
SITES = ("net.0.weight", "net.0.bias", "net.2.weight", "net.2.bias")
MIXTURE = ScaleMixturePrior(pi=0.25, sigma1=1.5, sigma2=0.1)
GAUSSIAN_SCALE = 0.8
NUM_DRAWS, NUM_DATA = 400, 8


def log_normal(value: Tensor, loc: Tensor | float, scale: Tensor | float) -> Tensor:
    """``log N(value; loc, scale^2)`` elementwise, written out."""
    scale = torch.as_tensor(scale, dtype=value.dtype)
    return -0.5 * ((value - loc) / scale) ** 2 - scale.log() - 0.5 * math.log(2 * math.pi)


def log_prior(value: Tensor, likelihood: str) -> Tensor:
    """Elementwise log prior density: the scale mixture (classifier) or N(0, 0.8^2)."""
    if likelihood == "gaussian":
        return log_normal(value, 0.0, GAUSSIAN_SCALE)
    wide = math.log(MIXTURE.pi) + log_normal(value, 0.0, MIXTURE.sigma1)
    narrow = math.log(1 - MIXTURE.pi) + log_normal(value, 0.0, MIXTURE.sigma2)
    return torch.logaddexp(wide, narrow)


def network(draws: dict[str, Tensor], x: Tensor) -> Tensor:
    """The 2-3-K tanh network of every draw by hand: outputs of shape (S, N, K)."""
    hidden = torch.tanh(
        torch.einsum("nd,shd->snh", x, draws["net.0.weight"]) + draws["net.0.bias"][:, None]
    )
    output = torch.einsum("snh,skh->snk", hidden, draws["net.2.weight"])
    return output + draws["net.2.bias"][:, None]


class Export(NamedTuple):
    likelihood: str
    tree: xr.DataTree
    x: Tensor
    y: Tensor
    locs: dict[str, Tensor]
    scales: dict[str, Tensor]
    noise: float | None


def fitted_network(likelihood: str) -> tuple[BayesianMLP, AutoBayesByBackprop, Tensor, Tensor]:
    """A 2-3-K tanh network after 40 SVI steps on 8 points, so that the guide's means and
    scales differ between weights: a 3-class classifier under the scale mixture, or a
    regression (learned noise, N(0, 0.8^2) prior, local reparameterisation in training)."""
    pyro.clear_param_store()  # guides of equally named sites would share their parameters
    pyro.set_rng_seed(0)
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(NUM_DATA, 2, generator=generator, dtype=F64)
    outputs = 3 if likelihood == "categorical" else 1
    net = nn.Sequential(nn.Linear(2, 3, dtype=F64), nn.Tanh(), nn.Linear(3, outputs, dtype=F64))
    if likelihood == "categorical":
        y = torch.tensor([0, 1, 2, 1, 0, 2, 2, 1])
        model = BayesianMLP(net, prior=MIXTURE, likelihood="categorical")
        guide = AutoBayesByBackprop(model, init_scale=0.3)
    else:
        y = torch.sin(x[:, 0]) - x[:, 1] + 0.1 * torch.randn(NUM_DATA, generator=generator)
        model = BayesianMLP(net, prior=GaussianPrior(GAUSSIAN_SCALE))
        guide = AutoBayesByBackprop(model, init_scale=0.3, local_reparameterization=True)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
    for _ in range(40):
        svi.step(x, y)
    return model, guide, x, y


@pytest.fixture(scope="module", params=["categorical", "gaussian"])
def export(request: pytest.FixtureRequest) -> Export:
    likelihood = request.param
    model, guide, x, y = fitted_network(likelihood)
    moments = guide.locs_and_scales()
    noise = pyro.param("noise_scale").item() if likelihood == "gaussian" else None
    # 400 draws in chunks of 150, 150 and 100; max_per_dim 4 keeps every index of a 2-3-K net
    tree = bnn_to_datatree(model, guide, x, y, num_samples=NUM_DRAWS, chunk_size=150)
    return Export(
        likelihood,
        tree,
        x,
        y,
        {name: loc.detach().clone() for name, (loc, _) in moments.items()},
        {name: scale.detach().clone() for name, (_, scale) in moments.items()},
        noise,
    )


def draws_of(tree: xr.DataTree) -> dict[str, Tensor]:
    """The exported draws of every site, shape (S, ...) (the single chain dropped)."""
    return {name: torch.from_numpy(tree["posterior"][name].values[0]) for name in SITES}


def hand_log_likelihood(export: Export, draws: dict[str, Tensor]) -> Tensor:
    """``log p(y_n | x_n, w_s)``, shape (S, N)."""
    outputs = network(draws, export.x)
    if export.likelihood == "categorical":
        chosen = outputs.gather(-1, export.y.expand(len(outputs), -1)[..., None])[..., 0]
        return chosen - outputs.logsumexp(-1)
    return log_normal(export.y, outputs[..., 0], export.noise)


def test_posterior_holds_every_draw_unthinned(export: Export) -> None:
    posterior = export.tree["posterior"]
    # 2x3 + 3 hidden weights and biases, 3xK + K output ones
    total = {"categorical": 6 + 3 + 9 + 3, "gaussian": 6 + 3 + 3 + 1}[export.likelihood]
    assert posterior.attrs["thinned"].startswith(f"{total} of {total} weights and biases")
    assert list(posterior.attrs["sampled_variables"]) == list(SITES)
    assert posterior["net.0.weight"].shape == (1, NUM_DRAWS, 3, 2)
    assert posterior["net.0.weight_dim_1"].values.tolist() == [0, 1]
    assert posterior["net.0.weight"].dtype == np.float64


def test_lq_is_the_guide_log_density_of_the_draws(export: Export) -> None:
    draws = draws_of(export.tree)
    expected = sum(
        log_normal(draws[name], export.locs[name], export.scales[name]).flatten(1).sum(1)
        for name in SITES
    )
    lq = export.tree["sample_stats"]["lq"].values
    assert lq.shape == (1, NUM_DRAWS)
    np.testing.assert_allclose(lq[0], expected.numpy(), rtol=1e-10, atol=1e-8)
    assert lq.std() > 0.5  # the draws differ


def test_lp_is_log_prior_plus_log_likelihood(export: Export) -> None:
    draws = draws_of(export.tree)
    prior = sum(log_prior(draws[name], export.likelihood).flatten(1).sum(1) for name in SITES)
    expected = prior + hand_log_likelihood(export, draws).sum(1)
    lp = export.tree["sample_stats"]["lp"].values
    np.testing.assert_allclose(lp[0], expected.numpy(), rtol=1e-10, atol=1e-8)


def test_log_likelihood_is_pointwise_and_observed_data_is_y(export: Export) -> None:
    pointwise = export.tree["log_likelihood"]["obs"]
    assert pointwise.dims == ("chain", "draw", "data") and pointwise.shape == (1, NUM_DRAWS, 8)
    expected = hand_log_likelihood(export, draws_of(export.tree))
    np.testing.assert_allclose(pointwise.values[0], expected.numpy(), rtol=1e-10, atol=1e-10)
    observed = export.tree["observed_data"]["obs"]
    assert observed.dims == ("data",)
    np.testing.assert_array_equal(observed.values, export.y.numpy())


def test_posterior_predictive_follows_the_likelihood(export: Export) -> None:
    predictive = export.tree["posterior_predictive"]["obs"].values[0]
    assert predictive.shape == (NUM_DRAWS, NUM_DATA)
    outputs = network(draws_of(export.tree), export.x)
    if export.likelihood == "categorical":
        # per point and class: frequency over the draws vs the mean probability, 4 sd apart
        probs = outputs.softmax(-1).mean(0).numpy()
        frequency = (predictive[..., None] == np.arange(3)).mean(0)
        assert np.abs(frequency - probs).max() < 4 * math.sqrt(0.25 / NUM_DRAWS)
    else:
        z = (predictive - outputs[..., 0].numpy()) / export.noise  # 3200 standard normals
        assert abs(z.mean()) < 0.1 and abs(z.std() - 1) < 0.05


def test_layer_summary_from_guide_parameters(export: Export) -> None:
    summary = export.tree["layer_summary"]
    assert list(summary.data_vars) == list(LAYER_STATISTICS)
    assert summary["layer"].values.tolist() == list(SITES)
    for name in SITES:
        loc = export.locs[name].flatten().tolist()
        scale = export.scales[name].flatten().tolist()
        snr = sorted(abs(m) / s for m, s in zip(loc, scale, strict=True))
        count = len(loc)
        mean = sum(loc) / count
        expected = {
            "num_weights": count,
            "num_exported": count,
            "loc_mean": mean,
            "loc_sd": math.sqrt(sum((m - mean) ** 2 for m in loc) / count),
            "scale_mean": sum(scale) / count,
            # torch's median: the lower middle value for an even count
            "snr_median": snr[(count - 1) // 2],
            "snr_below_1": sum(r < 1 for r in snr) / count,
        }
        for statistic, value in expected.items():
            assert summary[statistic].sel(layer=name).item() == pytest.approx(value, rel=1e-12)
    # training spread the scales and the SNRs: the statistics are not all the initial ones
    assert np.ptp(summary["scale_mean"].values) > 0.01
    assert 0 < summary["snr_below_1"].values.mean() < 1


def test_learned_noise_scale_is_exported() -> None:
    model, guide, x, y = fitted_network("gaussian")
    learned = pyro.param("noise_scale").item()
    assert abs(learned - 1.0) > 0.05  # moved from its initial value 1
    tree = bnn_to_datatree(model, guide, x, y, num_samples=3)
    assert tree["posterior"].attrs["noise_scale"] == pytest.approx(learned, rel=1e-12)
    pyro.clear_param_store()
    known = BayesianMLP(nn.Sequential(nn.Linear(2, 1)), noise_scale=0.5)
    known_guide = AutoBayesByBackprop(known)
    known_guide(torch.zeros(1, 2))
    assert "noise_scale" not in bnn_to_datatree(known, known_guide, num_samples=3).posterior.attrs


@pytest.mark.parametrize("likelihood", ["categorical", "gaussian"])
def test_without_data_lp_is_the_log_prior(likelihood: str) -> None:
    model, guide, *_ = fitted_network(likelihood)
    tree = bnn_to_datatree(model, guide, num_samples=7, chunk_size=3)
    assert set(tree.children) == {"posterior", "sample_stats", "layer_summary"}
    draws = draws_of(tree)
    prior = sum(log_prior(draws[name], likelihood).flatten(1).sum(1) for name in SITES)
    np.testing.assert_allclose(tree["sample_stats"]["lp"].values[0], prior.numpy(), rtol=1e-10)
    moments = {name: (m.detach(), s.detach()) for name, (m, s) in guide.locs_and_scales().items()}
    lq = sum(log_normal(draws[name], *moments[name]).flatten(1).sum(1) for name in SITES)
    np.testing.assert_allclose(tree["sample_stats"]["lq"].values[0], lq.numpy(), rtol=1e-10)


def test_thinning_keeps_evenly_spaced_original_indices() -> None:
    net = nn.Sequential(nn.Linear(5, 7, dtype=F64), nn.ReLU(), nn.Linear(7, 1, dtype=F64))
    model = BayesianMLP(net, noise_scale=0.5)
    guide = AutoBayesByBackprop(model, init_scale=0.1)
    guide(torch.zeros(1, 5, dtype=F64))
    trees = {}
    for max_per_dim in (4, 10):  # the same seed: the same draws, thinned or not
        pyro.set_rng_seed(3)
        trees[max_per_dim] = bnn_to_datatree(
            model, guide, num_samples=6, max_per_dim=max_per_dim, chunk_size=4
        )
    thin, full = trees[4]["posterior"], trees[10]["posterior"]
    # round(linspace(0, 6, 4)) = 0, 2, 4, 6; round(linspace(0, 4, 4)) = 0, 1, 3, 4
    kept = {
        "net.0.weight": ([0, 2, 4, 6], [0, 1, 3, 4]),
        "net.0.bias": ([0, 2, 4, 6],),
        "net.2.weight": ([0], [0, 2, 4, 6]),
        "net.2.bias": ([0],),
    }
    for name, indices in kept.items():
        for axis, index in enumerate(indices):
            assert thin[f"{name}_dim_{axis}"].values.tolist() == index
            size = full[name].shape[2 + axis]
            assert full[f"{name}_dim_{axis}"].values.tolist() == list(range(size))
        assert thin[name].shape == (1, 6, *map(len, indices))
        whole = full[name].values[np.ix_([0], range(6), *indices)]
        np.testing.assert_array_equal(thin[name].values, whole)
    assert thin.attrs["thinned"].startswith("25 of 50 weights and biases")
    assert full.attrs["thinned"].startswith("50 of 50 weights and biases")
    summary = trees[4]["layer_summary"]
    assert summary["num_weights"].values.tolist() == [35, 7, 7, 1]
    assert summary["num_exported"].values.tolist() == [16, 4, 4, 1]
    for stat in ("lp", "lq"):  # scored on the whole draws before thinning
        np.testing.assert_array_equal(
            trees[4]["sample_stats"][stat].values, trees[10]["sample_stats"][stat].values
        )
    single = bnn_to_datatree(model, guide, num_samples=2, max_per_dim=1)["posterior"]
    assert single["net.0.weight"].shape == (1, 2, 1, 1)
    assert single.attrs["thinned"].startswith("4 of 50")


def small_classifier() -> tuple[BayesianMLP, AutoBayesByBackprop]:
    model = BayesianMLP(nn.Sequential(nn.Linear(2, 3)), likelihood="categorical")
    return model, AutoBayesByBackprop(model)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"num_samples": 0}, "num_samples=0 must be an integer >= 1"),
        ({"num_samples": 2.5}, "num_samples=2.5 must be an integer >= 1"),
        ({"max_per_dim": 0}, "max_per_dim=0 must be an integer >= 1"),
        ({"chunk_size": 0}, "chunk_size=0 must be an integer >= 1"),
        ({"x": torch.zeros(4, 2)}, r"give both x and y \(the training data\) or neither"),
        ({"y": torch.zeros(4).long()}, r"give both x and y \(the training data\) or neither"),
        (
            {"x": torch.zeros(4, 3), "y": torch.zeros(4).long()},
            r"x must have shape \(B, 2\), got \(4, 3\)",
        ),
        (
            {"x": torch.zeros(4, 2), "y": torch.zeros(3).long()},
            r"y must have shape \(4,\), got \(3,\)",
        ),
    ],
)
def test_bad_input_is_refused(options: dict, message: str) -> None:
    model, guide = small_classifier()
    guide(torch.zeros(1, 2))
    with pytest.raises(ValueError, match=message):
        bnn_to_datatree(model, guide, **options)


def test_untrained_guide_is_refused() -> None:
    model, guide = small_classifier()
    with pytest.raises(RuntimeError, match="call the guide once"):
        bnn_to_datatree(model, guide)


def test_diagnose_lists_the_variables_left_out_of_the_plots(tmp_path: Path) -> None:
    net = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3), nn.ReLU(), nn.Linear(3, 3))
    model = BayesianMLP(net, likelihood="categorical")
    guide = AutoBayesByBackprop(model, init_scale=0.1)
    guide(torch.zeros(1, 8))
    save_datatree(bnn_to_datatree(model, guide, num_samples=100), tmp_path / POSTERIOR_FILE)
    with azb.rc_context({"plot.max_subplots": 38}):
        report = diagnose_run(tmp_path)
    # panels: 4x4 + 4 + 3x4 + 3 = 35 fit; 3x3 more would make 44 > 38; the last bias makes 38
    assert report.unplotted == ("net.4.weight",)
    assert len(report.summary) == 16 + 4 + 12 + 3 + 9 + 3  # the table has every exported entry
    assert report.khat is not None and report.loo is None  # lp and lq, but no data
    written = {path.name for path in report.files}
    assert written == {"summary.csv", "khat.csv", "posterior_dist.png"}
