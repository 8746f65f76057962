"""VAE on binarised images by SVI, with the test log-likelihood by importance sampling."""

__all__ = ["NETWORKS", "VAE_GUIDES", "VAEFit", "fit_vae"]

import math
import os
from pathlib import Path
from typing import NamedTuple

import pandas as pd
import pyro
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from pyroext.checks import check_counts
from pyroext.data import VAEData, load_vae_data
from pyroext.infer import (
    FusedOptim,
    SVIResult,
    init_distributed,
    is_main_process,
    run_svi,
    shard_loader,
)
from pyroext.infer.device import resolve_device
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
from pyroext.report import write_fit_outputs

VAE_GUIDES = ("normal", "langevin", "annealed", "metflow")
MCMC_STEPS = 5
MCMC_GUIDES = {"langevin": LangevinVAE, "annealed": AnnealedVAE, "metflow": MetVAE}
NETWORKS = ("mlp", "conv")
# Per dataset: latent size, epochs and importance samples of the test log-likelihood.
DEFAULTS = {"digits": (8, 50, 1000), "mnist": (50, 10, 5000)}


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


def fit_vae(
    guide: str = "normal",
    *,
    data: str = "digits",
    data_dir: str | os.PathLike | None = None,
    network: str = "mlp",
    latent_dim: int | None = None,
    objective: str = "trace",
    num_particles: int = 1,
    epochs: int | None = None,
    steps: int | None = None,
    batch_size: int = 100,
    lr_init: float = 1e-3,
    num_samples: int | None = None,
    device: str = "cpu",
    seed: int = 0,
    out: str | Path | None = None,
    progress: bool = True,
    compile: bool | str = "auto",
    distributed: bool = False,
) -> VAEFit:
    """Trains a VAE with minibatch SVI and evaluates it on the test images.

    Arguments:
        guide: A name from :data:`VAE_GUIDES`: ``normal``, the encoder's diagonal Gaussian;
            ``langevin``, L-MCVAE (:class:`~pyroext.models.vae.mcvae.LangevinVAE`, 5 ULA steps);
            ``annealed``, A-MCVAE (:class:`~pyroext.models.vae.mcvae.AnnealedVAE`, 5 MALA steps);
            ``metflow``, MetVAE (:class:`~pyroext.models.vae.metvae.MetVAE`, 5 MetFlow steps).
        data: ``digits`` (embedded) or ``mnist`` (needs ``data_dir``).
        data_dir: Folder holding ``MNIST/raw``.
        network: ``mlp`` (hidden layers 200-200, tanh, as Burda et al.) or ``conv``.
        latent_dim: Size of ``z``; 8 for digits, 50 for MNIST by default.
        objective: A name from :data:`~pyroext.models.vae.OBJECTIVES`.
        num_particles: Particles per step (IWAE's ``k``).
        epochs: Passes over the training images; 50 for digits, 10 for MNIST by default.
        steps: Optimiser steps instead of ``epochs`` (the CLI's ``--steps``).
        batch_size: Images per step.
        lr_init: Adam learning rate (one fused torch Adam, :class:`~pyroext.infer.FusedOptim`).
        num_samples: Importance samples of the test log-likelihood; 1000 for digits, 5000
            (Burda et al.) for MNIST by default.
        device: Torch device.
        seed: Seed of the run (weights, batches, binarisation).
        out: If given, folder for ``losses.csv``, ``summary.csv``, ``loss.png``,
            ``reconstructions.png``, ``vae.pt`` and the training checkpoint.
        progress: Show a progress bar.
        compile: Run each SVI step as one compiled graph: ``True``, ``False`` or ``"auto"``
            (long enough runs; see :func:`~pyroext.infer.run_svi`).
        distributed: Train data-parallel in the process group ``torchrun`` describes
            (:func:`~pyroext.infer.init_distributed`; the CLI's ``--nproc-per-node``):
            ``batch_size`` per process, an epoch shared by all, outputs written by rank 0.

    Returns:
        A :class:`VAEFit`.

    Raises:
        ValueError: For options out of range, before any training.
    """
    _check_options(guide, network, objective, lr_init)
    check_counts(
        batch_size=batch_size,
        num_particles=num_particles,
        latent_dim=latent_dim,
        epochs=epochs,
        steps=steps,
        num_samples=num_samples,
    )
    dataset = load_vae_data(data, data_dir)
    default_latent, default_epochs, default_samples = DEFAULTS[data]
    latent_dim, num_samples = latent_dim or default_latent, num_samples or default_samples
    target = init_distributed(device) if distributed else resolve_device(device)
    pyro.set_rng_seed(seed)
    vae = _build(guide, network, dataset, latent_dim).to(target)
    loader = DataLoader(dataset.train, batch_size=batch_size, shuffle=True, drop_last=True)
    loader = shard_loader(loader, seed) if distributed else loader
    total_steps = steps or len(loader) * (epochs or default_epochs)
    pyro.clear_param_store()
    result = run_svi(
        vae.model,
        vae.guide,
        data=loader,
        batch_args=lambda batch: (batch[0],),
        model_kwargs={"num_data": len(dataset.train)},
        num_steps=total_steps,
        optim=FusedOptim(torch.optim.Adam, {"lr": lr_init}),
        loss=vae_loss(objective, num_particles),
        device=target,
        seed=seed,
        progress=progress,
        compile=compile,
        checkpoint=None if out is None else Path(out) / "checkpoint.pt",
        distributed=distributed,
    )
    test = dataset.test.to(target)
    generator = torch.Generator(target).manual_seed(seed)
    nll = -importance_log_likelihood(vae, test, num_samples, generator=generator).mean().item()
    elbo = _test_elbo(vae, test)
    epochs_run = total_steps / len(loader)
    per_epoch = result.wall_time / epochs_run
    metrics = {
        "test_nll": nll,
        "test_elbo": elbo,
        "num_samples": num_samples,
        "epochs": epochs_run,
        "seconds_per_epoch": per_epoch,
        "latent_dim": latent_dim,
    }
    if isinstance(vae, MetVAE):
        # The MetFlow steps earn their cost only if their proposals are accepted.
        metrics["acceptance_rate"] = vae.acceptance_rate.mean().item()
    summary = pd.DataFrame({"value": metrics}).rename_axis("metric")
    fit = VAEFit(guide, vae, result, summary, nll, elbo, num_samples, per_epoch)
    if out is not None and is_main_process():
        _write(fit, dataset, f"VAE ({data}, {network}, {objective}), guide {guide}", Path(out))
    return fit


def _test_elbo(vae: VAE, test: Tensor, chunk: int = 1000) -> float:
    """Mean one-draw ELBO per test image under the trained guide (its own bound, e.g. the
    L-MCVAE one, not the encoder's alone)."""
    elbo = vae_loss("trace")
    with torch.no_grad():
        total = sum(-elbo.loss(vae.model, vae.guide, batch) for batch in test.split(chunk))
    return total / len(test)


def _check_options(guide: str, network: str, objective: str, lr_init: float) -> None:
    for name, value, valid in (
        ("guide", guide, VAE_GUIDES),
        ("network", network, NETWORKS),
        ("objective", objective, OBJECTIVES),
    ):
        if value not in valid:
            raise ValueError(f"{name}={value!r} is unknown; valid values: {', '.join(valid)}")
    if not (math.isfinite(lr_init) and lr_init > 0):
        raise ValueError(f"lr_init={lr_init} must be a finite number > 0")
    if guide in MCMC_GUIDES and objective == "analytic":
        # TraceMeanField_ELBO drops Delta.log_density (Pyro 1.9): the bound would be wrong.
        raise ValueError("objective='analytic' needs the normal guide; use 'trace' or 'iwae'")


def _build(guide: str, network: str, dataset: VAEData, latent_dim: int) -> VAE:
    if network == "conv":
        encoder = ConvEncoder(dataset.image_shape, latent_dim)
        decoder = ConvDecoder(latent_dim, dataset.image_shape)
    else:
        pixels = math.prod(dataset.image_shape)
        encoder, decoder = MLPEncoder(pixels, latent_dim), MLPDecoder(latent_dim, pixels)
    if guide in MCMC_GUIDES:
        return MCMC_GUIDES[guide](encoder, decoder, latent_dim, num_steps=MCMC_STEPS)
    return VAE(encoder, decoder, latent_dim)


def _write(fit: VAEFit, dataset: VAEData, title: str, out: Path) -> None:
    write_fit_outputs(out, fit.result, fit.summary, title)
    figure = plot_reconstructions(fit.vae, dataset.test[:8], dataset.image_shape, title)
    figure.savefig(out / "reconstructions.png", dpi=120)
    weights = {name: value.cpu() for name, value in fit.vae.state_dict().items()}
    torch.save({"state_dict": weights, "image_shape": dataset.image_shape}, out / "vae.pt")
