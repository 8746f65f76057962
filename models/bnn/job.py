"""Bayes-by-backprop networks by minibatch SVI: classification of digits or MNIST, regression
of diabetes progression, with test error, NLL and calibration of the posterior predictive."""

__all__ = [
    "BNN_GUIDES",
    "BNN_PRIORS",
    "BNNFit",
    "fit_bnn",
]

import math
import os
from pathlib import Path
from typing import NamedTuple

import pandas as pd
import pyro
import torch
from pyro.infer import ELBO, Trace_ELBO, TraceMeanField_ELBO
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from pyroext.checks import check_counts
from pyroext.data import BNN_DATASETS, BNNData, load_bnn_data
from pyroext.diagnose import POSTERIOR_FILE, save_datatree
from pyroext.infer import (
    FusedOptim,
    SVIResult,
    init_distributed,
    is_main_process,
    run_svi,
    shard_loader,
)
from pyroext.infer.device import resolve_device
from pyroext.models.bnn.export import bnn_to_datatree
from pyroext.models.bnn.guide import AutoBayesByBackprop
from pyroext.models.bnn.model import BayesianMLP, GaussianPrior, ScaleMixturePrior, relu_mlp
from pyroext.models.bnn.predict import predictive_metrics, sample_outputs
from pyroext.report import write_fit_outputs

BNN_GUIDES = ("bbb", "bbb-lrt")
"""``bbb``: Bayes by backprop, one weight draw per step; ``bbb-lrt``: with the local
reparameterisation trick (pre-activations drawn per data point)."""
BNN_PRIORS = {"mixture": ScaleMixturePrior(), "gaussian": GaussianPrior()}
# Per dataset: hidden widths and epochs.
DEFAULTS = {"digits": ((400, 400), 100), "mnist": ((400, 400), 10), "diabetes": ((50,), 1000)}
# Training sets up to this size get pointwise log-likelihoods in posterior.nc (LOO, k-hat).
EXPORT_DATA_LIMIT = 5000
TEST_CHUNK = 1000


class BNNFit(NamedTuple):
    """Outcome of :func:`fit_bnn`.

    Fields:
        guide_name: The guide's name.
        model: The trained network (its learned noise scale, for regression, included).
        guide: The trained guide.
        result: The runner's result.
        summary: One row per metric (see :func:`~pyroext.models.bnn.predict.predictive_metrics`)
            plus epochs, seconds per epoch and the number of weights.
        metrics: The test metrics of the posterior predictive.
        seconds_per_epoch: Training wall time per epoch.
    """

    guide_name: str
    model: BayesianMLP
    guide: AutoBayesByBackprop
    result: SVIResult
    summary: pd.DataFrame
    metrics: dict[str, float]
    seconds_per_epoch: float

    def describe(self) -> str:
        """One line with the test metrics."""
        shown = ", ".join(f"{name} {value:.4f}" for name, value in self.metrics.items())
        return f"test {shown}; {self.seconds_per_epoch:.2f} s/epoch"


def fit_bnn(
    guide: str = "bbb",
    *,
    task: str = "classification",
    data: str | None = None,
    data_dir: str | os.PathLike | None = None,
    hidden: tuple[int, ...] | None = None,
    prior: str = "mixture",
    epochs: int | None = None,
    steps: int | None = None,
    batch_size: int = 100,
    lr_init: float = 1e-3,
    num_samples: int = 100,
    device: str = "cpu",
    seed: int = 0,
    out: str | Path | None = None,
    progress: bool = True,
    compile: bool | str = "auto",
    distributed: bool = False,
) -> BNNFit:
    """Trains a Bayes-by-backprop ReLU network with minibatch SVI and evaluates it on test data.

    The likelihood is categorical for classification and Gaussian with a learned noise scale
    for regression. The minibatch ELBO is scaled to the whole training set; its KL term is
    analytic under the Gaussian prior (``TraceMeanField_ELBO``) and Monte Carlo under the scale
    mixture (``Trace_ELBO``).

    Arguments:
        guide: A name from :data:`BNN_GUIDES`.
        task: ``classification`` or ``regression``.
        data: A dataset of the task (:func:`~pyroext.data.load_bnn_data`).
        data_dir: Folder holding ``MNIST/raw``.
        hidden: Hidden layer widths; 400-400 for digits and MNIST, 50 for diabetes by default.
        prior: ``mixture`` (Blundell et al.'s scale mixture, pi 1/2, sigma1 1, sigma2 e^-6) or
            ``gaussian`` (N(0, 1)).
        epochs: Passes over the training set; 100 digits, 10 MNIST, 1000 diabetes by default.
        steps: Optimiser steps instead of ``epochs`` (the CLI's ``--steps``).
        batch_size: Training points per step.
        lr_init: Adam learning rate.
        num_samples: Weight draws of the posterior predictive (and of ``posterior.nc``).
        device: Torch device.
        seed: Seed of the run (weights, batches, draws).
        out: If given, folder for ``losses.csv``, ``summary.csv``, ``layers.csv``, ``loss.png``,
            the training checkpoint and ``posterior.nc``: the thinned weight posterior of
            :func:`~pyroext.models.bnn.export.bnn_to_datatree`, with the training data's
            pointwise log-likelihood when it has at most 5000 points.
        progress: Show a progress bar.
        compile: Run each SVI step as one compiled graph: ``True``, ``False`` or ``"auto"``
            (long enough runs; see :func:`~pyroext.infer.run_svi`).
        distributed: Train data-parallel in the process group ``torchrun`` describes
            (:func:`~pyroext.infer.init_distributed`; the CLI's ``--nproc-per-node``):
            ``batch_size`` per process, an epoch shared by all, outputs written by rank 0.

    Returns:
        A :class:`BNNFit`.

    Raises:
        ValueError: For options out of range, before any training.
    """
    _check_options(guide, prior, hidden, lr_init)
    check_counts(batch_size=batch_size, epochs=epochs, steps=steps, num_samples=num_samples)
    dataset = load_bnn_data(task, data, data_dir)
    data = data or BNN_DATASETS[task][0]
    default_hidden, default_epochs = DEFAULTS[data]
    target = init_distributed(device) if distributed else resolve_device(device)
    pyro.set_rng_seed(seed)
    model = BayesianMLP(
        _network(dataset, default_hidden if hidden is None else hidden),
        prior=BNN_PRIORS[prior],
        likelihood=dataset.likelihood,
    ).to(target)
    pyro.clear_param_store()
    approx = AutoBayesByBackprop(model, local_reparameterization=guide == "bbb-lrt")
    loader = DataLoader(
        TensorDataset(dataset.x_train, dataset.y_train),
        batch_size=min(batch_size, len(dataset.y_train)),
        shuffle=True,
        drop_last=True,
    )
    loader = shard_loader(loader, seed) if distributed else loader
    total_steps = steps or len(loader) * (epochs or default_epochs)
    result = run_svi(
        model,
        approx,
        data=loader,
        model_kwargs={"num_data": len(dataset.y_train)},
        num_steps=total_steps,
        optim=FusedOptim(torch.optim.Adam, {"lr": lr_init}),
        loss=_loss(prior),
        device=target,
        seed=seed,
        progress=progress,
        compile=compile,
        checkpoint=None if out is None else Path(out) / "checkpoint.pt",
        distributed=distributed,
    )
    metrics = _test_metrics(model, approx, dataset, target, num_samples)
    per_epoch = result.wall_time * len(loader) / total_steps
    extra = {
        "epochs": total_steps / len(loader),
        "seconds_per_epoch": per_epoch,
        "num_weights": sum(loc.numel() for loc, _ in approx.locs_and_scales().values()),
    }
    summary = pd.DataFrame({"value": {**metrics, **extra}}).rename_axis("metric")
    fit = BNNFit(guide, model, approx, result, summary, metrics, per_epoch)
    if out is not None and is_main_process():
        title = f"BNN ({data}, {prior} prior), guide {guide}"
        _write(fit, dataset, target, num_samples, title, Path(out))
    return fit


def _check_options(guide: str, prior: str, hidden: tuple[int, ...] | None, lr_init: float) -> None:
    for name, value, valid in (("guide", guide, BNN_GUIDES), ("prior", prior, tuple(BNN_PRIORS))):
        if value not in valid:
            raise ValueError(f"{name}={value!r} is unknown; valid values: {', '.join(valid)}")
    if hidden is not None:
        check_counts(**{f"hidden[{index}]": width for index, width in enumerate(hidden)})
    if not (math.isfinite(lr_init) and lr_init > 0):
        raise ValueError(f"lr_init={lr_init} must be a finite number > 0")


def _network(dataset: BNNData, hidden: tuple[int, ...]) -> nn.Sequential:
    outputs = 1 if dataset.likelihood == "gaussian" else int(dataset.y_train.max()) + 1
    return relu_mlp([dataset.x_train.shape[1], *hidden, outputs])


def _loss(prior: str) -> ELBO:
    # The scale mixture has no closed-form KL divergence from a Gaussian.
    return TraceMeanField_ELBO() if prior == "gaussian" else Trace_ELBO()


def _test_metrics(
    model: BayesianMLP,
    guide: AutoBayesByBackprop,
    dataset: BNNData,
    device: torch.device,
    num_samples: int,
) -> dict[str, float]:
    # Chunks bound the (draws, points, width) activations; each point's predictive is the same.
    outputs = torch.cat(
        [
            sample_outputs(model, guide, chunk.to(device), num_samples=num_samples).cpu()
            for chunk in dataset.x_test.split(TEST_CHUNK)
        ],
        dim=1,
    )
    noise = None if dataset.likelihood == "categorical" else model.noise_scale.detach().cpu()
    return predictive_metrics(outputs, dataset.y_test, noise_scale=noise)


def _write(
    fit: BNNFit, dataset: BNNData, device: torch.device, num_samples: int, title: str, out: Path
) -> None:
    write_fit_outputs(out, fit.result, fit.summary, title)
    with_data = len(dataset.y_train) <= EXPORT_DATA_LIMIT
    x, y = (dataset.x_train.to(device), dataset.y_train.to(device)) if with_data else (None, None)
    tree = bnn_to_datatree(fit.model, fit.guide, x, y, num_samples=num_samples)
    tree["layer_summary"].to_dataset().to_pandas().to_csv(out / "layers.csv")
    save_datatree(tree, out / POSTERIOR_FILE)
