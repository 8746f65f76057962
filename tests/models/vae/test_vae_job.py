"""``pyroext fit vae``: embedded digits and MNIST read from tiny IDX files written here."""

import pandas as pd
import pytest
import torch
from idx_files import write_split

from pyroext.cli import main
from pyroext.data import load_vae_data
from pyroext.models.vae.job import fit_vae


def test_fit_vae_on_digits_writes_outputs(tmp_path, capsys):
    out = tmp_path / "vae"
    assert main(["fit", "vae", "--epochs", "3", "--out", str(out), "--no-progress"]) == 0
    summary = pd.read_csv(out / "summary.csv", index_col="metric")["value"]
    # an importance-sampled log-likelihood is above the ELBO, by less than a nat for 8 latents
    assert 0 < -summary["test_elbo"] - summary["test_nll"] < 2.0
    assert summary["epochs"] == 3 and summary["num_samples"] == 1000
    assert (out / "reconstructions.png").read_bytes()[:4] == b"\x89PNG"
    saved = torch.load(out / "vae.pt", weights_only=True)
    assert saved["image_shape"] == (8, 8) and "encoder.head.weight" in saved["state_dict"]
    assert "test NLL" in capsys.readouterr().out


@pytest.fixture
def mnist_root(tmp_path):
    """``MNIST/raw`` IDX files of uniform random pixels: 200 training and 40 test images."""
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    generator = torch.Generator().manual_seed(0)
    for split, num in (("train", 200), ("t10k", 40)):
        images = torch.randint(0, 256, (num, 28, 28), generator=generator, dtype=torch.uint8)
        write_split(raw, split, images, torch.arange(num) % 10)
    return tmp_path


# Uniform random pixels: nothing to learn, every model is near 784 log 2 = 543 nats.
RANDOM_PIXELS_NLL = 784 * torch.log(torch.tensor(2.0)).item()


def test_fit_vae_reads_mnist_files(mnist_root):
    data = load_vae_data("mnist", mnist_root)
    assert data.image_shape == (28, 28) and data.test.shape == (40, 784)
    assert set(data.test.unique().tolist()) == {0.0, 1.0}
    fit = fit_vae(data="mnist", data_dir=mnist_root, network="conv", steps=4, num_samples=20)
    assert fit.summary.loc["latent_dim", "value"] == 50
    assert fit.test_nll == pytest.approx(RANDOM_PIXELS_NLL, rel=0.1)


def test_fit_metvae_on_mnist_files(mnist_root):
    out = mnist_root / "run"
    argv = ["fit", "vae", "--data", "mnist", "--data-dir", str(mnist_root), "--guide", "metflow"]
    assert main([*argv, "--steps", "4", "--out", str(out), "--no-progress"]) == 0
    summary = pd.read_csv(out / "summary.csv", index_col="metric")["value"]
    assert summary["test_nll"] == pytest.approx(RANDOM_PIXELS_NLL, rel=0.1)
    assert 0 < summary["acceptance_rate"] < 1
    assert (out / "reconstructions.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    "options, message",
    [
        ({"data": "mnist"}, "data='mnist' needs data_dir=<folder holding MNIST/raw>"),
        ({"data": "cifar"}, "data='cifar' is unknown; valid datasets: digits, mnist"),
        ({"network": "resnet"}, "network='resnet' is unknown; valid values: mlp, conv"),
        ({"objective": "elbo"}, "objective='elbo' is unknown; valid values: trace, analytic"),
        ({"latent_dim": 0}, "latent_dim=0 must be an integer >= 1"),
        ({"num_particles": 0}, "num_particles=0 must be an integer >= 1"),
        ({"lr_init": -1.0}, "lr_init=-1.0 must be a finite number > 0"),
        (
            {"guide": "dais"},
            "guide='dais' is unknown; valid values: normal, langevin, annealed, metflow",
        ),
        (
            {"guide": "langevin", "objective": "analytic"},
            "objective='analytic' needs the normal guide",
        ),
    ],
)
def test_bad_options_are_refused_before_training(options, message, monkeypatch):
    monkeypatch.setattr("pyroext.minibatch.run_svi", lambda *_, **__: pytest.fail("trained"))
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        fit_vae(**options)


@pytest.mark.parametrize("guide", ["langevin", "annealed", "metflow"])
def test_fit_vae_with_an_mcmc_guide(guide, tmp_path):
    argv = ["fit", "vae", "--guide", guide, "--steps", "30", "--out", str(tmp_path)]
    assert main([*argv, "--no-progress"]) == 0
    summary = pd.read_csv(tmp_path / "summary.csv", index_col="metric")["value"]
    assert summary["test_nll"] < -summary["test_elbo"]
