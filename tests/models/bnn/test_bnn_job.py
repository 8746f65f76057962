"""``pyroext fit bnn``: data splits, short fits and their output files, weight counts by hand,
option checks before training, and the command line."""

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sklearn.datasets
import torch
import xarray as xr
from idx_files import write_split

from pyroext.cli import main
from pyroext.data import BNN_DATASETS, load_bnn_data
from pyroext.infer.checkpoint import load_checkpoint
from pyroext.models.bnn import GaussianPrior, ScaleMixturePrior
from pyroext.models.bnn.export import LAYER_STATISTICS
from pyroext.models.bnn.job import BNN_GUIDES, BNN_PRIORS, fit_bnn

OUTPUT_FILES = {
    "manifest.json",
    "summary.csv",
    "layers.csv",
    "loss.png",
    "losses.csv",
    "checkpoint.pt",
    "posterior.nc",
}


def test_names_of_tasks_guides_and_priors() -> None:
    assert BNN_DATASETS == {"classification": ("digits", "mnist"), "regression": ("diabetes",)}
    assert BNN_GUIDES == ("bbb", "bbb-lrt")
    assert BNN_PRIORS == {"mixture": ScaleMixturePrior(), "gaussian": GaussianPrior()}
    assert BNN_PRIORS["mixture"].sigma2 == pytest.approx(math.exp(-6))


def test_digits_split_keeps_the_order() -> None:
    data = load_bnn_data()  # classification, digits by default
    assert data.x_train.shape == (1500, 64) and data.x_test.shape == (297, 64)
    assert data.likelihood == "categorical" and data.y_train.dtype == torch.int64
    digits = sklearn.datasets.load_digits()
    x = np.concatenate([data.x_train.numpy(), data.x_test.numpy()])
    np.testing.assert_allclose(x, digits.data / 16, rtol=1e-7)
    np.testing.assert_array_equal(torch.cat([data.y_train, data.y_test]).numpy(), digits.target)
    assert x.min() == 0 and x.max() == 1


def test_diabetes_split_is_standardised_over_all_patients() -> None:
    data = load_bnn_data("regression")
    assert data.x_train.shape == (354, 10) and data.x_test.shape == (88, 10)
    assert data.y_train.shape == (354,) and data.likelihood == "gaussian"
    raw = sklearn.datasets.load_diabetes(scaled=False)
    # every column and the target to mean 0, sd 1 over all 442 patients (population sd)
    x = (raw.data - raw.data.mean(0)) / raw.data.std(0)
    y = (raw.target - raw.target.mean()) / raw.target.std()
    order = torch.randperm(442, generator=torch.Generator().manual_seed(0)).numpy()
    test, train = order[:88], order[88:]
    np.testing.assert_allclose(data.x_test.numpy(), x[test], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(data.x_train.numpy(), x[train], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(data.y_test.numpy(), y[test], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(data.y_train.numpy(), y[train], rtol=1e-6, atol=1e-6)


@pytest.fixture
def mnist_root(tmp_path: Path) -> Path:
    """``MNIST/raw`` IDX files of 30 training and 10 test images, pixels 0 to 255."""
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    generator = torch.Generator().manual_seed(0)
    for split, num in (("train", 30), ("t10k", 10)):
        images = torch.randint(0, 256, (num, 28, 28), generator=generator, dtype=torch.uint8)
        images[0, 0, :2] = torch.tensor([0, 255], dtype=torch.uint8)
        write_split(raw, split, images, (torch.arange(num) * 7) % 10)
    return tmp_path


def test_mnist_pixels_are_divided_by_255(mnist_root: Path) -> None:
    data = load_bnn_data(data="mnist", data_dir=mnist_root)
    assert data.x_train.shape == (30, 784) and data.x_test.shape == (10, 784)
    assert data.x_train.dtype == torch.float32 and data.likelihood == "categorical"
    assert data.x_train.min() == 0 and data.x_train.max() == 1
    assert data.x_train[0, :2].tolist() == [0.0, 1.0]
    images = np.fromfile(mnist_root / "MNIST/raw/t10k-images-idx3-ubyte", np.uint8, offset=16)
    np.testing.assert_allclose(data.x_test.numpy(), images.reshape(10, 784) / 255, rtol=1e-6)
    assert data.y_train.tolist() == [(7 * n) % 10 for n in range(30)]
    assert data.y_test.dtype == torch.int64


def test_fit_bnn_on_mnist_files(mnist_root: Path) -> None:
    fit = fit_bnn(
        data="mnist",
        data_dir=mnist_root,
        hidden=(4,),
        steps=2,
        batch_size=10,
        num_samples=3,
        progress=False,
    )
    summary = fit.summary["value"]
    assert summary["num_weights"] == 784 * 4 + 4 + 4 * 10 + 10
    assert summary["epochs"] == pytest.approx(2 / 3)  # 3 batches of 10 per epoch
    assert len(fit.result.losses) == 2


@pytest.mark.parametrize(
    "options, message",
    [
        (
            {"task": "ranking"},
            "task='ranking' is unknown; valid tasks: classification, regression",
        ),
        (
            {"task": "regression", "data": "mnist"},
            "data='mnist' does not suit task='regression'; valid datasets: diabetes",
        ),
        (
            {"data": "cifar"},
            "data='cifar' does not suit task='classification'; valid datasets: digits, mnist",
        ),
        ({"data": "mnist"}, "data='mnist' needs data_dir=<folder holding MNIST/raw>"),
    ],
)
def test_unknown_data_is_refused(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_bnn_data(**options)


# task, data, hidden, guide, prior; per layer (weights, biases, ...): size and entries exported
# (at most 4 evenly spaced indices per axis)
FITS = {
    "digits": (
        "classification",
        (3,),
        "bbb",
        "mixture",
        [64 * 3, 3, 3 * 10, 10],
        [3 * 4, 3, 4 * 3, 4],
    ),
    "diabetes": (
        "regression",
        (4, 2),
        "bbb-lrt",
        "gaussian",
        [10 * 4, 4, 4 * 2, 2, 2 * 1, 1],
        [4 * 4, 4, 2 * 4, 2, 1 * 2, 1],
    ),
}


@pytest.mark.parametrize("data", FITS)
def test_short_fit_writes_every_output(data: str, tmp_path: Path) -> None:
    task, hidden, guide, prior, sizes, exported = FITS[data]
    out = tmp_path / "run"
    fit = fit_bnn(
        guide=guide,
        task=task,
        data=data,
        hidden=hidden,
        prior=prior,
        steps=3,
        num_samples=5,
        out=out,
        progress=False,
    )
    assert {path.name for path in out.iterdir()} == OUTPUT_FILES
    summary = pd.read_csv(out / "summary.csv", index_col="metric")["value"]
    metrics = ["error", "nll", "ece", "entropy"] if task == "classification" else []
    metrics = metrics or ["rmse", "nll", "coverage_90"]
    assert list(summary.index) == [*metrics, "epochs", "seconds_per_epoch", "num_weights"]
    assert summary["num_weights"] == sum(sizes)
    # 1500 digits or 354 patients in batches of 100 (the last partial one dropped)
    assert summary["epochs"] == pytest.approx(3 / (15 if data == "digits" else 3))
    assert list(fit.metrics) == metrics
    assert all(np.isfinite(list(fit.metrics.values())))
    losses = pd.read_csv(out / "losses.csv", index_col="step")["loss"]
    assert list(losses.index) == [1, 2, 3]
    np.testing.assert_allclose(losses.values, fit.result.losses)
    checkpoint = load_checkpoint(out / "checkpoint.pt")
    assert checkpoint["step"] == 3
    np.testing.assert_allclose(checkpoint["losses"], fit.result.losses)
    assert_layer_table(out, hidden, sizes, exported)
    assert_exported_posterior(out, fit, task, data, sizes, exported)


def assert_layer_table(out: Path, hidden: tuple, sizes: list, exported: list) -> None:
    layers = pd.read_csv(out / "layers.csv", index_col="layer")
    assert list(layers.columns) == list(LAYER_STATISTICS)
    assert list(layers.index) == [
        f"net.{2 * layer}.{kind}"
        for layer in range(len(hidden) + 1)
        for kind in ("weight", "bias")
    ]
    assert layers["num_weights"].tolist() == sizes
    assert layers["num_exported"].tolist() == exported


def assert_exported_posterior(
    out: Path, fit, task: str, data: str, sizes: list, exported: list
) -> None:
    tree = xr.open_datatree(out / "posterior.nc", engine="h5netcdf")
    posterior = tree["posterior"]
    assert posterior.attrs["thinned"].startswith(f"{sum(exported)} of {sum(sizes)} weights")
    assert posterior["net.0.weight"].shape[:2] == (1, 5)
    dataset = load_bnn_data(task, data)
    assert tree["log_likelihood"]["obs"].shape == (1, 5, len(dataset.y_train))
    np.testing.assert_array_equal(tree["observed_data"]["obs"].values, dataset.y_train.numpy())
    if task == "regression":
        assert posterior.attrs["noise_scale"] == pytest.approx(fit.model.noise_scale.item())
    else:
        assert "noise_scale" not in posterior.attrs


@pytest.mark.parametrize(
    "epochs, batch_size, steps",
    [(1, 100, 3), (2, 200, 2), (2, 1000, 2)],  # 354 // 100, 354 // 200 and one full batch
)
def test_epochs_set_the_number_of_steps(epochs: int, batch_size: int, steps: int) -> None:
    fit = fit_bnn(
        task="regression",
        hidden=(2,),
        epochs=epochs,
        batch_size=batch_size,
        num_samples=2,
        progress=False,
    )
    assert len(fit.result.losses) == steps and fit.result.num_steps == steps
    assert fit.summary.loc["epochs", "value"] == epochs
    assert fit.summary.loc["num_weights", "value"] == 10 * 2 + 2 + 2 + 1


@pytest.mark.parametrize(
    "options, message",
    [
        ({"guide": "vi"}, "guide='vi' is unknown; valid values: bbb, bbb-lrt"),
        ({"prior": "laplace"}, "prior='laplace' is unknown; valid values: mixture, gaussian"),
        ({"hidden": (3, 0)}, r"hidden\[1\]=0 must be an integer >= 1"),
        ({"hidden": (2.5,)}, r"hidden\[0\]=2.5 must be an integer >= 1"),
        ({"lr_init": 0.0}, "lr_init=0.0 must be a finite number > 0"),
        ({"lr_init": -1e-3}, "lr_init=-0.001 must be a finite number > 0"),
        ({"lr_init": math.nan}, "lr_init=nan must be a finite number > 0"),
        ({"lr_init": math.inf}, "lr_init=inf must be a finite number > 0"),
        ({"steps": 0}, "steps=0 must be an integer >= 1"),
        ({"epochs": 0}, "epochs=0 must be an integer >= 1"),
        ({"batch_size": 0}, "batch_size=0 must be an integer >= 1"),
        ({"num_samples": 0}, "num_samples=0 must be an integer >= 1"),
        ({"task": "ranking"}, "task='ranking' is unknown"),
        ({"task": "regression", "data": "digits"}, "data='digits' does not suit task"),
    ],
)
def test_bad_options_are_refused_before_training(
    options: dict, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("pyroext.minibatch.run_svi", lambda *_, **__: pytest.fail("trained"))
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=message):
        fit_bnn(**options, out=out, progress=False)
    assert not out.exists()


def test_command_line_fits_digits(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bnn"
    argv = ["fit", "bnn", "--task", "classification", "--data", "digits", "--hidden", "3,2"]
    argv += ["--steps", "2", "--prior", "gaussian", "--guide", "bbb-lrt", "--out", str(out)]
    assert main([*argv, "--no-progress"]) == 0
    summary = pd.read_csv(out / "summary.csv", index_col="metric")["value"]
    assert summary["num_weights"] == 64 * 3 + 3 + 3 * 2 + 2 + 2 * 10 + 10
    assert summary["epochs"] == pytest.approx(2 / 15)
    assert len(pd.read_csv(out / "losses.csv")) == 2
    printed = capsys.readouterr().out
    assert "num_weights" in printed and f"outputs in {out}" in printed


@pytest.mark.parametrize(
    "argv, message",
    [
        (["fit", "bnn", "--hidden", "3,x"], "argument --hidden: 3,x is not a list of integers"),
        (["fit", "bnn", "--hidden", "3,0"], "argument --hidden: 3,0 is not a list of integers"),
        (["fit", "bnn", "--task", "ranking"], "argument --task: invalid choice: 'ranking'"),
        (["fit", "vae", "--task", "classification"], "--task does not apply to model 'vae'"),
        (["fit", "gmm", "--hidden", "3"], "--hidden does not apply to model 'gmm'"),
        (
            ["fit", "bnn", "--task", "regression", "--data", "digits"],
            "data='digits' does not suit task='regression'",
        ),
    ],
)
def test_command_line_refuses_bad_options(
    argv: list[str],
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("pyroext.minibatch.run_svi", lambda *_, **__: pytest.fail("trained"))
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--out", str(tmp_path / "run"), "--no-progress"])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
