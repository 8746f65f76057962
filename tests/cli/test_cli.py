import subprocess
import sys

import pandas as pd
import pytest
import xarray as xr

from pyroext.cli import main


def test_fit_writes_outputs_and_prints_summary(tmp_path, capsys):
    out = tmp_path / "fit"
    status = main(
        [
            "fit",
            "linear-regression",
            "--guide",
            "mvn",
            "--steps",
            "300",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert status == 0
    losses = pd.read_csv(out / "losses.csv", index_col="step")
    assert len(losses) == 300 and losses["loss"].notna().all()
    summary = pd.read_csv(out / "summary.csv", index_col="parameter")
    assert list(summary.index[:2]) == ["w[age]", "w[sex]"] and summary.index[-1] == "b"
    assert {"mean", "sd", "5%", "95%", "exact_mean", "exact_sd"} <= set(summary.columns)
    assert (out / "loss.png").read_bytes()[:4] == b"\x89PNG"
    printed = capsys.readouterr().out
    assert "w[bmi]" in printed and "KL(q || exact posterior)" in printed


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["fit", "ridge"],
            "invalid choice: 'ridge' (choose from 'bnn', 'gmm', 'linear-regression', 'vae')",
        ),
        (["fit", "linear-regression", "--guide", "flow"], "invalid choice: 'flow' (choose from"),
        (["fit", "linear-regression", "--steps", "0"], "--steps: '0' is not an integer >= 1"),
    ],
)
def test_bad_arguments_list_valid_values(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_help_names_the_debug_flag_and_ranges(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "--debug" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["fit", "vae", "--help"])
    shown = capsys.readouterr().out
    assert "--resume" in shown and "--overwrite" in shown and "--debug" in shown


def test_demo_prints_gap_table(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--steps", "150", "--no-progress"]) == 0
    table = pd.read_csv(tmp_path / "linear_regression.csv", index_col="guide")
    assert list(table.index) == ["normal", "mvn", "dais", "metflow"]
    assert list(table["steps"]) == [150, 150, 50, 50]
    assert (table["elbo_gap"] > 0).all()
    # For a Gaussian guide the gap is the KL, up to the 2000-particle estimate's error.
    gaussian = table.loc[["normal", "mvn"]]
    assert (gaussian["elbo_gap"] - gaussian["kl_to_exact"]).abs().lt(0.3).all()
    assert table.loc[["normal", "mvn"], "kl_to_exact"].gt(0).all()
    assert table.loc[["dais", "metflow"], "kl_to_exact"].isna().all()
    gmm = pd.read_csv(tmp_path / "gmm.csv", index_col="guide")
    assert list(gmm.index) == ["delta", "mean-field", "mvn"]
    assert gmm["em_log_likelihood"].sub(-385.4607).abs().lt(1e-4).all()
    assert (gmm["elbo"] < gmm["em_log_likelihood"]).all()
    assert (tmp_path / "gmm-delta" / "clusters.png").exists()
    vae = pd.read_csv(tmp_path / "vae.csv", index_col="objective")
    assert list(vae.index) == ["trace (k=1)", "iwae (k=5)"]
    assert (vae["test_nll"] < -vae["test_elbo"]).all()  # log p(x) is above the ELBO
    bnn = pd.read_csv(tmp_path / "bnn.csv", index_col="data")
    assert list(bnn.index) == ["digits", "diabetes"] and list(bnn["steps"]) == [37, 37]
    assert bnn.loc["digits", "test_error"] < 0.5  # chance is 0.9; measured 0.30
    # The mean predictor's RMSE is ~1 on the standardised target; measured 0.77.
    assert bnn.loc["diabetes", "test_rmse"] < 0.9
    assert bnn.loc["diabetes", ["test_error", "test_ece"]].isna().all()
    printed = capsys.readouterr().out
    assert "elbo_gap" in printed and "Old Faithful" in printed and "VAE" in printed
    assert "Bayes-by-backprop" in printed


@pytest.mark.parametrize("guide", ["dais", "metflow"])
def test_fit_with_an_mcmc_in_guide_guide(tmp_path, guide):
    out = tmp_path / guide
    argv = ["fit", "linear-regression", "--guide", guide, "--steps", "30", "--out", str(out)]
    assert main([*argv, "--no-progress"]) == 0
    tree = xr.open_datatree(out / "posterior.nc")
    assert tree.posterior["w"].shape == (1, 1000, 10)
    assert "log_weight" in tree.sample_stats


def test_console_script_and_module_entry_points():
    for command in (["pyroext", "--help"], [sys.executable, "-m", "pyroext", "--help"]):
        if command[0] == "pyroext":
            command[0] = str(__import__("pathlib").Path(sys.executable).with_name("pyroext"))
        result = subprocess.run(command, capture_output=True, text=True, check=True)
        assert "fit" in result.stdout and "demo" in result.stdout


def test_invalid_device_is_reported_without_traceback(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "linear-regression", "--device", "tpu9", "--steps", "5"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == (
        "pyroext: error: device='tpu9' is not a torch device ('cpu', 'cuda', 'cuda:1', ...)\n"
    )


def test_compile_flag_compiles_the_step_and_reports_its_time(tmp_path, capsys):
    argv = ["fit", "linear-regression", "--steps", "40", "--out", str(tmp_path), "--compile"]
    assert main([*argv, "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "compiled SVI step:" in printed and "recording and compiling" in printed
    assert len(pd.read_csv(tmp_path / "losses.csv")) == 40


def test_compile_flag_on_an_enumerated_model_stops_with_the_reason(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_status:
        main(["fit", "gmm", "--steps", "5", "--out", str(tmp_path), "--compile", "--no-progress"])
    assert exit_status.value.code == 2
    assert "TraceEnum_ELBO has no compiled counterpart" in capsys.readouterr().err


def test_default_compiles_only_long_runs(tmp_path, capsys):
    assert main(["fit", "linear-regression", "--steps", "30", "--out", str(tmp_path)]) == 0
    assert "compiled SVI step" not in capsys.readouterr().out
