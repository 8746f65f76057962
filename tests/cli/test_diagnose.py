import functools

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr
from exact_guides import exact_family_guide

from pyroext.arviz import from_pyro_svi
from pyroext.cli import main
from pyroext.cli.diagnose import diagnose_run
from pyroext.data import synthetic_regression
from pyroext.diagnostics import vi_khat
from pyroext.models import linear_regression as lr
from pyroext.runs import POSTERIOR_FILE


@pytest.fixture(scope="module")
def fitted_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("fit")
    main(
        [
            "fit",
            "linear-regression",
            "--guide",
            "mvn",
            "--steps",
            "2000",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    return out


def test_fit_saves_datatree_that_round_trips(fitted_run):
    tree = xr.open_datatree(fitted_run / POSTERIOR_FILE, engine="h5netcdf")
    assert {"posterior", "log_likelihood", "sample_stats", "observed_data"} <= set(tree.children)
    assert tree["posterior"]["w"].dims == ("chain", "draw", "feature")
    assert list(tree["posterior"]["feature"].values[:3]) == ["age", "sex", "bmi"]
    assert tree.attrs["inference_library"] == "pyro"
    summary = pd.read_csv(fitted_run / "summary.csv", index_col="parameter")
    exported = tree["posterior"]["w"].mean(("chain", "draw")).values
    np.testing.assert_allclose(exported, summary["mean"].values[:-1], atol=0.02)


def test_diagnose_writes_summary_khat_loo_and_plots(fitted_run, capsys):
    assert main(["diagnose", str(fitted_run)]) == 0
    folder = fitted_run / "diagnostics"
    names = {
        "summary.csv",
        "khat.csv",
        "loo.csv",
        "posterior_dist.png",
        "ppc.png",
        "loo_pit.png",
        "khat.png",
    }
    assert names <= {path.name for path in folder.iterdir()}
    khat = pd.read_csv(folder / "khat.csv")["khat"].item()
    assert khat < 0.5  # a converged full-rank guide on a Gaussian posterior
    loo = pd.read_csv(folder / "loo.csv")
    assert loo["n_data_points"].item() == 442 and np.isfinite(loo["elpd_loo"].item())
    assert "Pareto k-hat of p/q" in capsys.readouterr().out


def test_diagnose_without_posterior_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="has no posterior.nc"):
        diagnose_run(tmp_path)


@pytest.mark.parametrize("scale, good", [(1.0, True), (0.3, False)])
def test_khat_separates_exact_from_too_narrow_guide(scale, good):
    data = synthetic_regression(dtype=torch.float64)
    options = {"noise_scale": 0.7, "prior_precision": 1.0}
    posterior = lr.conjugate_posterior(data.x, data.y, **options)
    model = functools.partial(lr.model_known_noise, **options)
    guide = exact_family_guide(posterior, scale)
    tree = from_pyro_svi(model, guide, data.x, data.y, num_samples=2000, seed=0)
    khat = vi_khat(tree).khat
    # q = exact posterior: p/q is constant; a 0.3x too narrow q has k = 1 - 0.3^2 = 0.91
    assert khat < 0.5 if good else khat > 0.7
