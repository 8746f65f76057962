"""The Gaussian mixture's product side: canonical component order in the ArviZ export, the
``pyroext fit gmm`` job and its files, and input errors before training."""

import functools

import numpy as np
import pandas as pd
import pyro
import pytest
import torch
import xarray as xr
from pyro.infer.autoguide import AutoNormal
from torch.distributions import biject_to, constraints

from pyroext.arviz import from_pyro_svi
from pyroext.cli import main
from pyroext.data import load_faithful
from pyroext.models.gmm import gmm_marginal_model, init_from_data
from pyroext.models.gmm.job import fit_gmm
from pyroext.models.gmm.labels import ORDER_NOTE, canonical_order

PER_COMPONENT = ("weights", "locs", "scales", "corr_chol", "responsibilities")


@pytest.fixture(scope="module")
def switching_tree():
    """Draws of a wide guide over two overlapping components: labels switch between draws."""
    pyro.clear_param_store()
    x = load_faithful(standardize=True, dtype=torch.float64).x
    model = functools.partial(gmm_marginal_model, k=2, covariance="full")
    guide = AutoNormal(model, init_loc_fn=init_from_data(x, 2), init_scale=1.0)
    guide(x)
    with torch.no_grad():
        guide.locs.locs.zero_()  # both means at the origin, sd 1: either may come first
    coords = {"dim": ["eruptions", "waiting"]}
    return from_pyro_svi(model, guide, x, num_samples=200, prior=100, coords=coords, seed=1)


def test_canonical_order_sorts_each_draw_by_the_first_mean_coordinate(switching_tree):
    tree = switching_tree
    first = tree["posterior"]["locs"].isel(dim=0).values
    assert 0.2 < (first[..., 0] > first[..., 1]).mean() < 0.8  # the raw draws switch labels
    ordered = canonical_order(tree)
    for group in ("posterior", "prior"):
        raw, new = tree[group], ordered[group]
        order = np.argsort(raw["locs"].isel(dim=0).values, axis=-1)
        assert (np.diff(new["locs"].isel(dim=0).values, axis=-1) > 0).all()
        for name in PER_COMPONENT:
            axis = raw[name].dims.index("component")
            index = np.expand_dims(order, tuple(range(2, raw[name].ndim - 1)))
            expected = np.take_along_axis(np.moveaxis(raw[name].values, axis, -1), index, -1)
            assert np.array_equal(np.moveaxis(new[name].values, axis, -1), expected), name
            assert new[name].dims == raw[name].dims
    assert ordered.attrs["component_order"] == ORDER_NOTE


def test_canonical_order_keeps_the_unconstrained_group_consistent(switching_tree):
    ordered = canonical_order(switching_tree)
    weights = torch.as_tensor(ordered["posterior"]["weights"].values)
    free = torch.as_tensor(ordered["unconstrained_posterior"]["weights"].values)
    assert torch.allclose(biject_to(constraints.simplex)(free), weights, atol=1e-12)
    scales = torch.as_tensor(ordered["unconstrained_posterior"]["scales"].values)
    assert torch.allclose(scales.exp(), torch.as_tensor(ordered["posterior"]["scales"].values))
    for group in ("log_likelihood", "posterior_predictive", "observed_data"):
        xr.testing.assert_identical(
            ordered[group].to_dataset(), switching_tree[group].to_dataset()
        )
    assert "component_order" not in switching_tree.attrs  # the input is left as it was


def test_export_dims_are_component_obs_and_dim(switching_tree):
    posterior = switching_tree["posterior"]
    assert posterior["weights"].dims == ("chain", "draw", "component")
    assert posterior["locs"].dims == ("chain", "draw", "component", "dim")
    assert posterior["responsibilities"].dims == ("chain", "draw", "obs", "component")
    assert switching_tree["log_likelihood"]["x"].dims == ("chain", "draw", "obs")


def test_canonical_order_needs_the_ordering_variable(switching_tree):
    with pytest.raises(ValueError, match="by='means' must name a posterior variable"):
        canonical_order(switching_tree, by="means")


def test_fit_gmm_command_writes_outputs(tmp_path, capsys):
    out = tmp_path / "gmm"
    argv = ["fit", "gmm", "--k", "2", "--data", "faithful", "--guide", "delta", "--steps", "300"]
    assert main([*argv, "--out", str(out), "--no-progress"]) == 0
    for name in ("clusters.png", "loss.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    summary = pd.read_csv(out / "summary.csv", index_col="parameter")
    assert list(summary.index[:3]) == ["weights[0]", "weights[1]", "locs[0,eruptions]"]
    # MAP and EM (ML) nearly coincide on Old Faithful's 272 points
    assert np.allclose(summary["mean"], summary["em"], atol=0.05)
    tree = xr.open_datatree(out / "posterior.nc")
    assert tree.attrs["component_order"] == ORDER_NOTE
    assert tree["posterior"]["responsibilities"].shape == (1, 1000, 272, 2)
    printed = capsys.readouterr().out
    assert "vs EM optimum -385.461" in printed
    assert main(["diagnose", str(out)]) == 0
    assert "the guide is a point mass" in capsys.readouterr().out  # MAP: no k-hat, no LOO
    assert not (out / "diagnostics" / "khat.csv").exists()


def test_diagnose_a_gmm_posterior(tmp_path):
    out = tmp_path / "gmm"
    argv = ["fit", "gmm", "--guide", "mvn", "--steps", "300", "--out", str(out)]
    assert main([*argv, "--no-progress"]) == 0
    assert main(["diagnose", str(out)]) == 0
    diagnostics = out / "diagnostics"
    summary = pd.read_csv(diagnostics / "summary.csv", index_col=0)
    assert summary.index[0] == "weights[0]"
    assert not summary.index.str.startswith("responsibilities").any()  # 544 rows left out
    assert float(pd.read_csv(diagnostics / "khat.csv")["khat"].iloc[0]) < 0.7
    # LOO-PIT needs one log-likelihood term per observed value; a 2-D point has one for two
    assert (diagnostics / "ppc.png").exists() and not (diagnostics / "loo_pit.png").exists()


def test_fit_gmm_with_the_mean_field_guide():
    fit = fit_gmm(guide="mean-field", k=2, steps=200, progress=False)
    assert fit.lppd <= fit.em.log_likelihood + 1.0
    assert fit.elbo < fit.lppd
    assert fit.tree["posterior"]["weights"].shape == (1, 1000, 2)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"k": 0}, r"k=0 must be an integer in \[1, N\] = \[1, 272\]"),
        ({"k": 300}, r"k=300 must be an integer in \[1, N\] = \[1, 272\]"),
        ({"data": "iris"}, "data='iris' is unknown; valid datasets: faithful, synthetic"),
        ({"guide": "flow"}, "guide='flow' is unknown; valid guides: normal,"),
        ({"covariance": "tied"}, "covariance='tied' must be one of diagonal, full"),
    ],
)
def test_bad_input_is_refused_before_training(options, message, monkeypatch):
    monkeypatch.setattr("pyroext.models.gmm.job.run_svi", lambda *_, **__: pytest.fail("trained"))
    with pytest.raises(ValueError, match=message):
        fit_gmm(**{"guide": "delta", **options})


def test_cli_refuses_options_of_another_model(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "linear-regression", "--k", "3"])
    assert exit_info.value.code == 2
    assert "--k does not apply to model 'linear-regression'" in capsys.readouterr().err
