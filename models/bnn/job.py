"""Bayes-by-backprop networks by minibatch SVI: classification of digits or MNIST, regression
of diabetes progression, with test error, NLL and calibration of the posterior predictive."""

__all__ = ["BNN_GUIDES", "BNN_PRIORS", "JOB", "BNNConfig", "BNNFit", "fit_bnn"]

import argparse
import dataclasses
from typing import Any, NamedTuple

import pandas as pd
import torch
from pyro.infer import ELBO, Trace_ELBO, TraceMeanField_ELBO
from torch import nn
from torch.utils.data import TensorDataset

from pyroext.checks import check_counts, check_one_of, warn_batch_size, warn_ignored
from pyroext.data import BNN_DATASETS, BNNData, load_bnn_data
from pyroext.infer import SVIResult, is_main_process
from pyroext.jobs import Job, configure, option
from pyroext.minibatch import MinibatchConfig, MinibatchResult, start_run, train_minibatch
from pyroext.models.bnn.export import bnn_to_datatree
from pyroext.models.bnn.guide import AutoBayesByBackprop
from pyroext.models.bnn.model import BayesianMLP, GaussianPrior, ScaleMixturePrior, relu_mlp
from pyroext.models.bnn.predict import predictive_metrics, sample_outputs
from pyroext.runs import RunDir

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


def _widths(text: str) -> tuple[int, ...]:
    """Hidden widths as the command line gives them, e.g. ``400,400``."""
    try:
        widths = tuple(int(width) for width in text.split(","))
    except ValueError:
        widths = ()
    if not widths or min(widths) < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a list of integers >= 1")
    return widths


@dataclasses.dataclass(frozen=True, kw_only=True)
class BNNConfig(MinibatchConfig):
    """Options of :func:`fit_bnn`, beside the run options of
    :class:`~pyroext.minibatch.MinibatchConfig`.

    Fields:
        guide: A name from :data:`BNN_GUIDES`.
        task: ``classification`` or ``regression``.
        data: A dataset of the task (:func:`~pyroext.data.load_bnn_data`); the task's first by
            default.
        data_dir: Folder holding ``MNIST/raw``.
        hidden: Hidden layer widths; 400-400 for digits and MNIST, 50 for diabetes by default.
        prior: ``mixture`` (Blundell et al.'s scale mixture, pi 1/2, sigma1 1, sigma2 e^-6) or
            ``gaussian`` (N(0, 1)).
        num_samples: Weight draws of the posterior predictive (and of ``posterior.nc``).
    """

    guide: str = option("bbb", "variational guide", choices=BNN_GUIDES)
    task: str = option("classification", "bnn task", choices=tuple(BNN_DATASETS))
    data: str | None = option(None, "dataset (default: the task's first)")
    data_dir: str | None = option(None, "folder holding MNIST/raw (mnist)")
    hidden: tuple[int, ...] | None = option(
        None, "hidden widths, e.g. 400,400 (default 400,400 images, 50 diabetes)", type=_widths
    )
    prior: str = option("mixture", "prior of the weights", choices=("mixture", "gaussian"))
    num_samples: int = option(100, "weight draws of the posterior predictive")

    def __post_init__(self) -> None:
        for name, value, valid in (
            ("guide", self.guide, BNN_GUIDES),
            ("prior", self.prior, tuple(BNN_PRIORS)),
        ):
            if value not in valid:
                raise ValueError(f"{name}={value!r} is unknown; valid values: {', '.join(valid)}")
        if self.hidden is not None:
            check_counts(**{f"hidden[{index}]": width for index, width in enumerate(self.hidden)})
        super().__post_init__()
        check_counts(num_samples=self.num_samples)
        check_one_of("the training length", epochs=self.epochs, steps=self.steps)


def fit_bnn(config: BNNConfig | None = None, /, **options: Any) -> BNNFit:
    """Trains a Bayes-by-backprop ReLU network with minibatch SVI and evaluates it on test data.

    The likelihood is categorical for classification and Gaussian with a learned noise scale
    for regression. The minibatch ELBO is scaled to the whole training set; its KL term is
    analytic under the Gaussian prior (``TraceMeanField_ELBO``) and Monte Carlo under the scale
    mixture (``Trace_ELBO``).

    Arguments:
        config: The options (default :class:`BNNConfig`'s).
        options: Fields of :class:`BNNConfig` to replace, e.g. ``task="regression"``.

    Returns:
        A :class:`BNNFit`. With ``out``, its folder holds ``losses.csv``, ``summary.csv``,
        ``layers.csv``, ``loss.png``, the training checkpoint and ``posterior.nc``: the thinned
        weight posterior of :func:`~pyroext.models.bnn.export.bnn_to_datatree`, with the
        training data's pointwise log-likelihood when it has at most 5000 points. With
        ``resume``, training continues from that checkpoint; without it, an existing one is
        replaced only with ``overwrite``.

    Raises:
        ValueError: For options out of range, before any training.
        FileNotFoundError: For missing MNIST files, or ``resume`` without a checkpoint.

    Warns:
        UserWarning: For ``data_dir`` beside embedded data, and a ``batch_size`` above the
            number of training points.
    """
    config = configure(config, BNNConfig, options)
    dataset = load_bnn_data(config.task, config.data, config.data_dir)
    data = config.data or BNN_DATASETS[config.task][0]
    if data != "mnist":
        warn_ignored(
            f"data={data!r} is embedded (--data-dir is for mnist)", data_dir=config.data_dir
        )
    warn_batch_size(config.batch_size, len(dataset.y_train))
    run = config.run_dir(checkpoints=True)
    device = start_run(config)
    default_hidden, default_epochs = DEFAULTS[data]
    network = _network(dataset, default_hidden if config.hidden is None else config.hidden)
    model = BayesianMLP(network, prior=BNN_PRIORS[config.prior], likelihood=dataset.likelihood)
    model = model.to(device)
    guide = AutoBayesByBackprop(model, local_reparameterization=config.guide == "bbb-lrt")
    trained = train_minibatch(
        model,
        guide,
        TensorDataset(dataset.x_train, dataset.y_train),
        config,
        device=device,
        loss=_loss(config.prior),
        default_epochs=default_epochs,
    )
    fit = _evaluate(config, model, guide, trained, dataset, device)
    if run is not None and is_main_process():
        _write(fit, dataset, config, run, device)
    return fit


def _evaluate(
    config: BNNConfig,
    model: BayesianMLP,
    guide: AutoBayesByBackprop,
    trained: MinibatchResult,
    dataset: BNNData,
    device: torch.device,
) -> BNNFit:
    metrics = _test_metrics(model, guide, dataset, device, config.num_samples)
    extra = {
        "epochs": trained.epochs,
        "seconds_per_epoch": trained.seconds_per_epoch,
        "num_weights": sum(loc.numel() for loc, _ in guide.locs_and_scales().values()),
    }
    summary = pd.DataFrame({"value": {**metrics, **extra}}).rename_axis("metric")
    return BNNFit(
        config.guide, model, guide, trained.result, summary, metrics, trained.seconds_per_epoch
    )


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
    fit: BNNFit, dataset: BNNData, config: BNNConfig, run: RunDir, device: torch.device
) -> None:
    data = config.data or BNN_DATASETS[config.task][0]
    title = f"BNN ({data}, {config.prior} prior), guide {config.guide}"
    run.write_training(fit.result, fit.summary, title)
    with_data = len(dataset.y_train) <= EXPORT_DATA_LIMIT
    x, y = (dataset.x_train.to(device), dataset.y_train.to(device)) if with_data else (None, None)
    tree = bnn_to_datatree(fit.model, fit.guide, x, y, num_samples=config.num_samples)
    run.write_table(tree["layer_summary"].to_dataset().to_pandas(), "layers.csv")
    run.write_posterior(tree)
    run.write_manifest(JOB.name, config)


JOB = Job(
    "bnn",
    "Bayes-by-backprop networks (digits, MNIST, diabetes)",
    BNNConfig,
    fit_bnn,
    quick=("--steps", "2", "--hidden", "3", "--num-samples", "5"),
    distributed=True,
    checkpoints=True,
)
