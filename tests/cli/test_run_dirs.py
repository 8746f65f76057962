"""The run-folder contract over every registered job: ``fit`` writes what ``diagnose`` reads,
and the manifest names the job, its options and every file."""

import dataclasses
import json
import re

import pandas as pd
import pytest
import xarray as xr

from pyroext.cli import main
from pyroext.cli.registry import JOBS
from pyroext.runs import CHECKPOINT_FILE, MANIFEST_FILE, POSTERIOR_FILE, RunDir


@pytest.mark.parametrize("name", sorted(JOBS))
def test_fit_writes_a_run_folder_that_diagnose_reads(name, tmp_path, capsys):
    out = tmp_path / name
    assert main(["fit", name, *JOBS[name].quick, "--out", str(out), "--no-progress"]) == 0
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    written = {path.name for path in out.iterdir() if path.is_file()} - {MANIFEST_FILE}
    assert manifest["job"] == name and set(manifest["files"]) == written
    assert {"losses.csv", "summary.csv", "loss.png", POSTERIOR_FILE} <= written
    assert (CHECKPOINT_FILE in written) == JOBS[name].checkpoints
    assert manifest["config"]["out"] == str(out) and manifest["config"]["seed"] == 0
    assert RunDir.open(out).manifest == manifest
    tree = xr.open_datatree(out / POSTERIOR_FILE, engine="h5netcdf")
    losses = pd.read_csv(out / "losses.csv", index_col="step")
    assert len(losses) == manifest["config"]["steps"]
    capsys.readouterr()
    assert main(["diagnose", str(out)]) == 0
    summary = pd.read_csv(out / "diagnostics" / "summary.csv", index_col=0)
    first = next(iter(tree["posterior"].data_vars))
    assert summary.index.str.startswith(first).any()
    assert "wrote summary.csv" in capsys.readouterr().out


def test_the_vae_exports_the_latent_posterior_of_test_images(tmp_path):
    out = tmp_path / "vae"
    assert main(["fit", "vae", *JOBS["vae"].quick, "--out", str(out), "--no-progress"]) == 0
    tree = xr.open_datatree(out / POSTERIOR_FILE, engine="h5netcdf")
    assert tree["posterior"]["z"].dims == ("chain", "draw", "data", "latent")
    assert tree["posterior"]["z"].shape == (1, 1000, 4, 8)
    assert tree["log_likelihood"]["x"].shape == (1, 1000, 4)
    assert set(tree["observed_data"]["x"].values.ravel().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("name", sorted(JOBS))
def test_help_lists_only_the_models_options(name, capsys):
    with pytest.raises(SystemExit):
        main(["fit", name, "--help"])
    shown = capsys.readouterr().out
    for other in JOBS.values():
        own = {field.name for field in dataclasses.fields(JOBS[name].config)}
        for field in dataclasses.fields(other.config):
            flag = "--" + field.name.replace("_", "-")
            listed = re.search(rf"{flag}(?![-\w])", shown) is not None
            # --resume and --overwrite are offered by the jobs that keep a checkpoint
            offered = field.metadata["cli"] or (
                field.name in ("resume", "overwrite") and JOBS[name].checkpoints
            )
            assert listed == (field.name in own and offered), flag


@pytest.mark.parametrize(
    "out, message",
    [("", "out='' names no folder"), ("file.txt", "is a file; give a folder")],
)
def test_an_unusable_output_folder_is_refused_before_training(out, message, tmp_path, capsys):
    (tmp_path / "file.txt").write_text("")
    target = str(tmp_path / out) if out else out
    with pytest.raises(SystemExit) as status:
        main(["fit", "linear-regression", "--steps", "5", "--out", target, "--no-progress"])
    assert status.value.code == 2 and message in capsys.readouterr().err
