"""VAE on binarised images by SVI, with the test log-likelihood by importance sampling."""

__all__ = ["JOB", "NETWORKS", "VAE_GUIDES", "VAEConfig", "VAEFit", "fit_vae"]

import dataclasses
import math
from typing import Any, NamedTuple

import pandas as pd
import torch
from torch import Tensor

from pyroext.arviz import from_pyro_svi
from pyroext.checks import check_counts, check_one_of, warn_batch_size, warn_ignored
from pyroext.data import VAE_DATASETS, VAEData, load_vae_data
from pyroext.infer import SVIResult, is_main_process
from pyroext.infer.checkpoint import atomic_target
from pyroext.jobs import Job, configure, option
from pyroext.minibatch import MinibatchConfig, MinibatchResult, start_run, train_minibatch
from pyroext.models.vae.eval import importance_log_likelihood
from pyroext.models.vae.figure import plot_reconstructions
from pyroext.models.vae.mcvae import AnnealedVAE, LangevinVAE
from pyroext.models.vae.metvae import MetVAE
from pyroext.models.vae.model import (
    OBJECTIVES,
    VAE,
    ConvDecoder,
    ConvEncoder,
    MLPDecoder,
    MLPEncoder,
    vae_loss,
)
from pyroext.runs import RunDir

VAE_GUIDES = ("normal", "langevin", "annealed", "metflow")
MCMC_STEPS = 5
MCMC_GUIDES = {"langevin": LangevinVAE, "annealed": AnnealedVAE, "metflow": MetVAE}
NETWORKS = ("mlp", "conv")
# Per dataset: latent size, epochs and importance samples of the test log-likelihood.
DEFAULTS = {"digits": (8, 50, 1000), "mnist": (50, 10, 5000)}
# posterior.nc holds the latent posterior of the first test images, with this many draws each.
EXPORT_IMAGES = 4
EXPORT_DRAWS = 1000


@dataclasses.dataclass(frozen=True, kw_only=True)
class VAEConfig(MinibatchConfig):
    """Options of :func:`fit_vae`, beside the run options of
    :class:`~pyroext.minibatch.MinibatchConfig`.

    Fields:
        guide: ``normal``, the encoder's diagonal Gaussian; ``langevin``, L-MCVAE
            (:class:`~pyroext.models.vae.mcvae.LangevinVAE`, 5 ULA steps); ``annealed``,
            A-MCVAE (:class:`~pyroext.models.vae.mcvae.AnnealedVAE`, 5 MALA steps);
            ``metflow``, MetVAE (:class:`~pyroext.models.vae.metvae.MetVAE`, 5 MetFlow steps).
        data: ``digits`` (embedded) or ``mnist`` (needs ``data_dir``).
        data_dir: Folder holding ``MNIST/raw``.
        network: ``mlp`` (hidden layers 200-200, tanh, as Burda et al.) or ``conv``.
        latent_dim: Size of ``z``; 8 for digits, 50 for MNIST by default.
        objective: A name from :data:`~pyroext.models.vae.OBJECTIVES`.
        num_particles: Particles per step (IWAE's ``k``).
        num_samples: Importance samples of the test log-likelihood; 1000 for digits, 5000
            (Burda et al.) for MNIST by default.
    """

    guide: str = option("normal", "variational guide", choices=VAE_GUIDES)
    data: str = option("digits", "dataset", choices=VAE_DATASETS)
    data_dir: str | None = option(None, "folder holding MNIST/raw (mnist)")
    network: str = option("mlp", "encoder and decoder", choices=NETWORKS)
    latent_dim: int | None = option(None, "size of z (default 8 digits, 50 mnist)")
    objective: str = option("trace", "training objective", choices=OBJECTIVES)
    num_particles: int = option(1, "particles per step (the k of iwae)")
    num_samples: int | None = option(
        None, "importance samples of the test NLL (default 1000 digits, 5000 mnist)"
    )

    def __post_init__(self) -> None:
        for name, value, valid in (
            ("guide", self.guide, VAE_GUIDES),
            ("network", self.network, NETWORKS),
            ("objective", self.objective, OBJECTIVES),
        ):
            if value not in valid:
                raise ValueError(f"{name}={value!r} is unknown; valid values: {', '.join(valid)}")
        super().__post_init__()
        if self.guide in MCMC_GUIDES and self.objective == "analytic":
            # TraceMeanField_ELBO drops Delta.log_density (Pyro 1.9): the bound would be wrong.
            raise ValueError("objective='analytic' needs the normal guide; use 'trace' or 'iwae'")
        check_counts(
            num_particles=self.num_particles,
            latent_dim=self.latent_dim,
            num_samples=self.num_samples,
        )
        check_one_of("the training length", epochs=self.epochs, steps=self.steps)


class VAEFit(NamedTuple):
    """Outcome of :func:`fit_vae`.

    Fields:
        guide_name: The guide's name.
        vae: The trained VAE (encoder and decoder).
        result: The runner's result.
        summary: One row per metric: test NLL, test ELBO, epochs, seconds per epoch, ...
        test_nll: ``-mean log p(x)`` over the test images, importance-sampled with
            ``num_samples`` encoder draws (nats per image).
        test_elbo: Mean one-draw ELBO of the test images under the trained guide (nats per
            image).
        num_samples: The ``K`` of ``test_nll``.
        seconds_per_epoch: Training wall time per epoch.
    """

    guide_name: str
    vae: VAE
    result: SVIResult
    summary: pd.DataFrame
    test_nll: float
    test_elbo: float
    num_samples: int
    seconds_per_epoch: float

    def describe(self) -> str:
        """One line with the test metrics."""
        return (
            f"test NLL {self.test_nll:.2f} nats (k={self.num_samples}), test ELBO "
            f"{self.test_elbo:.2f}; {self.seconds_per_epoch:.2f} s/epoch"
        )


def fit_vae(config: VAEConfig | None = None, /, **options: Any) -> VAEFit:
    """Trains a VAE with minibatch SVI and evaluates it on the test images.

    Arguments:
        config: The options (default :class:`VAEConfig`'s).
        options: Fields of :class:`VAEConfig` to replace, e.g. ``guide="langevin"``.

    Returns:
        A :class:`VAEFit`. With ``out``, its folder holds ``losses.csv``, ``summary.csv``,
        ``loss.png``, ``reconstructions.png``, ``vae.pt``, the training checkpoint and
        ``posterior.nc``: the latent posterior of the first 4 test images. With ``resume``,
        training continues from that checkpoint; without it, an existing one is replaced only
        with ``overwrite``.

    Raises:
        ValueError: For options out of range, before any training.
        FileNotFoundError: For missing MNIST files, or ``resume`` without a checkpoint.

    Warns:
        UserWarning: For ``data_dir`` beside embedded data, and a ``batch_size`` above the
            number of training images.
    """
    config = configure(config, VAEConfig, options)
    if config.data != "mnist":
        warn_ignored(
            f"data={config.data!r} is embedded (--data-dir is for mnist)", data_dir=config.data_dir
        )
    dataset = load_vae_data(config.data, config.data_dir)
    warn_batch_size(config.batch_size, len(dataset.train))
    run = config.run_dir(checkpoints=True)
    device = start_run(config)
    vae = _build(config, dataset).to(device)
    trained = train_minibatch(
        vae.model,
        vae.guide,
        dataset.train,
        config,
        device=device,
        loss=vae_loss(config.objective, config.num_particles),
        default_epochs=DEFAULTS[config.data][1],
        batch_args=lambda batch: (batch[0],),
    )
    fit = _evaluate(config, vae, trained, dataset.test.to(device))
    if run is not None and is_main_process():
        _write(fit, dataset, config, run)
    return fit


def _evaluate(config: VAEConfig, vae: VAE, trained: MinibatchResult, test: Tensor) -> VAEFit:
    num_samples = config.num_samples or DEFAULTS[config.data][2]
    generator = torch.Generator(test.device).manual_seed(config.seed)
    nll = -importance_log_likelihood(vae, test, num_samples, generator=generator).mean().item()
    elbo = _test_elbo(vae, test)
    metrics = {
        "test_nll": nll,
        "test_elbo": elbo,
        "num_samples": num_samples,
        "epochs": trained.epochs,
        "seconds_per_epoch": trained.seconds_per_epoch,
        "latent_dim": vae.latent_dim,
    }
    rates = getattr(vae, "sample_stats", {}).get("acceptance_rate")
    if rates is not None:  # Metropolis steps earn their cost only if proposals are accepted
        metrics["acceptance_rate"] = rates.mean().item()
    summary = pd.DataFrame({"value": metrics}).rename_axis("metric")
    return VAEFit(
        config.guide,
        vae,
        trained.result,
        summary,
        nll,
        elbo,
        num_samples,
        trained.seconds_per_epoch,
    )


def _test_elbo(vae: VAE, test: Tensor, chunk: int = 1000) -> float:
    """Mean one-draw ELBO per test image under the trained guide (its own bound, e.g. the
    L-MCVAE one, not the encoder's alone)."""
    elbo = vae_loss("trace")
    with torch.no_grad():
        total = sum(-elbo.loss(vae.model, vae.guide, batch) for batch in test.split(chunk))
    return total / len(test)


def _build(config: VAEConfig, dataset: VAEData) -> VAE:
    latent_dim = config.latent_dim or DEFAULTS[config.data][0]
    if config.network == "conv":
        encoder = ConvEncoder(dataset.image_shape, latent_dim)
        decoder = ConvDecoder(latent_dim, dataset.image_shape)
    else:
        pixels = math.prod(dataset.image_shape)
        encoder, decoder = MLPEncoder(pixels, latent_dim), MLPDecoder(latent_dim, pixels)
    if config.guide in MCMC_GUIDES:
        return MCMC_GUIDES[config.guide](encoder, decoder, latent_dim, num_steps=MCMC_STEPS)
    return VAE(encoder, decoder, latent_dim)


def _write(fit: VAEFit, dataset: VAEData, config: VAEConfig, run: RunDir) -> None:
    title = f"VAE ({config.data}, {config.network}, {config.objective}), guide {config.guide}"
    run.write_training(fit.result, fit.summary, title)
    figure = plot_reconstructions(fit.vae, dataset.test[:8], dataset.image_shape, title)
    run.write_figure(figure, "reconstructions.png")
    weights = {name: value.cpu() for name, value in fit.vae.state_dict().items()}
    with atomic_target(run.path / "vae.pt") as temporary:
        torch.save({"state_dict": weights, "image_shape": dataset.image_shape}, temporary)
    run.write_posterior(_export(fit.vae, dataset.test[:EXPORT_IMAGES], config.seed))
    run.write_manifest(JOB.name, config)


def _export(vae: VAE, images: Tensor, seed: int) -> Any:
    """The latent posterior of ``images`` under the trained guide, as a DataTree."""
    images = images.to(next(vae.parameters()).device)
    return from_pyro_svi(
        vae.model,
        vae.guide,
        images,
        num_samples=EXPORT_DRAWS,
        dims={"z": ["data", "latent"], "x": ["data", "pixel"]},
        unconstrained=False,
        seed=seed,
    )


JOB = Job(
    "vae",
    "VAE on binarised images (digits or MNIST)",
    VAEConfig,
    fit_vae,
    quick=("--steps", "3", "--num-samples", "10"),
    distributed=True,
    checkpoints=True,
)
