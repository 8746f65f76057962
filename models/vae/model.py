"""Variational autoencoder for binarised images as a Pyro model/guide pair.

``z_n ~ N(0, I_L)`` and ``x_n | z_n ~ Bernoulli(sigmoid(decoder(z_n)))`` per image (plate
``"data"``); the guide is the amortised ``q(z_n | x_n) = N(mu(x_n), diag sigma(x_n)^2)``. The
plate takes the dataset size, so a minibatch's ELBO is scaled by ``N / B`` and estimates the
full-data ELBO. Networks: the one-stochastic-layer MLP of Burda et al. (784-200-200-50, tanh) and
a small convolutional pair. Objectives by name: :func:`vae_loss`.
"""

__all__ = [
    "OBJECTIVES",
    "VAE",
    "ConvDecoder",
    "ConvEncoder",
    "MLPDecoder",
    "MLPEncoder",
    "check_batch",
    "data_plate",
    "vae_loss",
]

import math

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import ELBO, RenyiELBO, Trace_ELBO, TraceMeanField_ELBO
from torch import Tensor, nn

from pyroext.checks import check_counts

OBJECTIVES = ("trace", "analytic", "iwae")


class MLPEncoder(nn.Module):
    """``x -> (mu, sigma)`` through tanh hidden layers; ``sigma = exp(log sigma)``.

    Arguments:
        data_dim: Input size (784 for MNIST).
        latent_dim: Size of ``z``.
        hidden: Hidden layer sizes.
    """

    def __init__(
        self, data_dim: int, latent_dim: int, hidden: tuple[int, ...] = (200, 200)
    ) -> None:
        super().__init__()
        self.body = _mlp(data_dim, hidden)
        self.head = nn.Linear(hidden[-1] if hidden else data_dim, 2 * latent_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Returns ``(mu, sigma)``, each ``(..., latent_dim)``."""
        loc, log_scale = self.head(self.body(x)).chunk(2, -1)
        return loc, log_scale.exp()


class MLPDecoder(nn.Module):
    """``z -> logits`` of the pixels through tanh hidden layers.

    Arguments:
        latent_dim: Size of ``z``.
        data_dim: Output size.
        hidden: Hidden layer sizes.
    """

    def __init__(
        self, latent_dim: int, data_dim: int, hidden: tuple[int, ...] = (200, 200)
    ) -> None:
        super().__init__()
        self.body = _mlp(latent_dim, hidden)
        self.head = nn.Linear(hidden[-1] if hidden else latent_dim, data_dim)

    def forward(self, z: Tensor) -> Tensor:
        """Returns the Bernoulli logits, ``(..., data_dim)``."""
        return self.head(self.body(z))


def _mlp(size: int, hidden: tuple[int, ...]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(size, width), nn.Tanh()]
        size = width
    return nn.Sequential(*layers)


class ConvEncoder(nn.Module):
    """Two stride-2 convolutions (32 and 64 channels, ReLU) and a linear head.

    Arguments:
        image_shape: ``(H, W)``; inputs are flat ``(..., H * W)`` vectors.
        latent_dim: Size of ``z``.
    """

    def __init__(self, image_shape: tuple[int, int], latent_dim: int) -> None:
        super().__init__()
        self.image_shape = image_shape
        self.conv = nn.Sequential(
            nn.Conv2d(1, 32, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
        )
        height, width = (math.ceil(math.ceil(n / 2) / 2) for n in image_shape)
        self.head = nn.Linear(64 * height * width, 2 * latent_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Returns ``(mu, sigma)``, each ``(..., latent_dim)``."""
        batch = x.shape[:-1]
        images = x.reshape(-1, 1, *self.image_shape)
        loc, log_scale = self.head(self.conv(images)).chunk(2, -1)
        return loc.reshape(*batch, -1), log_scale.exp().reshape(*batch, -1)


class ConvDecoder(nn.Module):
    """A linear layer to 64 feature maps at a quarter of the resolution, then two stride-2
    transposed convolutions; the output is cropped to the image and flattened.

    Arguments:
        latent_dim: Size of ``z``.
        image_shape: ``(H, W)`` of the images.
    """

    def __init__(self, latent_dim: int, image_shape: tuple[int, int]) -> None:
        super().__init__()
        self.image_shape = image_shape
        self.grid = tuple(math.ceil(math.ceil(n / 2) / 2) for n in image_shape)
        self.head = nn.Sequential(
            nn.Linear(latent_dim, 64 * self.grid[0] * self.grid[1]), nn.ReLU()
        )
        self.deconv = nn.Sequential(
            nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(32, 1, 4, stride=2, padding=1),
        )

    def forward(self, z: Tensor) -> Tensor:
        """Returns the Bernoulli logits, ``(..., H * W)``."""
        batch = z.shape[:-1]
        maps = self.head(z.reshape(-1, z.shape[-1])).reshape(-1, 64, *self.grid)
        height, width = self.image_shape
        logits = self.deconv(maps)[..., :height, :width]
        return logits.reshape(*batch, height * width)


class VAE(nn.Module):
    """Model and amortised guide of a VAE with Bernoulli pixels.

    Use ``vae.model`` and ``vae.guide`` with any Pyro ELBO; both take a batch ``x`` of shape
    ``(B, D)`` with values in ``{0, 1}`` and the dataset size ``num_data`` (``B`` if omitted),
    and broadcast over vectorised particles. The networks are registered with
    ``update_module_params=True``, so that a param store restored from a checkpoint becomes
    the networks' weights (without it, the modules keep their fresh weights and the restored
    tensors, which the optimiser steps, never reach the forward pass).

    Arguments:
        encoder: Maps ``x`` to ``(mu, sigma)``.
        decoder: Maps ``z`` to pixel logits.
        latent_dim: Size of ``z``.

    References:
        Kingma, D. P. and Welling, M. (2014). Auto-encoding variational Bayes. ICLR.
        Rezende, D. J., Mohamed, S. and Wierstra, D. (2014). Stochastic backpropagation and
        approximate inference in deep generative models. ICML.
        Burda, Y., Grosse, R. and Salakhutdinov, R. (2016). Importance weighted autoencoders.
        ICLR.
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module, latent_dim: int) -> None:
        super().__init__()
        self.encoder, self.decoder, self.latent_dim = encoder, decoder, latent_dim

    def prior(self, like: Tensor) -> dist.Distribution:
        """``N(0, I_L)`` with the dtype and device of ``like``."""
        zeros = like.new_zeros(self.latent_dim)
        return dist.Normal(zeros, 1.0).to_event(1)

    def log_joint(self, x: Tensor, z: Tensor) -> Tensor:
        """``log p(z) + log p(x | z)`` per image, shape ``z.shape[:-1]`` (unscaled)."""
        likelihood = dist.Bernoulli(logits=self.decoder(z)).to_event(1)
        return self.prior(z).log_prob(z) + likelihood.log_prob(x)

    def model(self, x: Tensor, num_data: int | None = None) -> None:
        """``p(z) p(x | z)`` over the batch, scaled to ``num_data`` images."""
        check_batch(x, num_data)
        pyro.module("decoder", self.decoder, update_module_params=True)
        with data_plate(x, num_data):
            z = pyro.sample("z", self.prior(x))
            logits = self.decoder(z)
            pyro.sample("x", dist.Bernoulli(logits=logits).to_event(1), obs=x)

    def guide(self, x: Tensor, num_data: int | None = None) -> None:
        """``q(z | x)``, the encoder's diagonal Gaussian."""
        check_batch(x, num_data)
        pyro.module("encoder", self.encoder, update_module_params=True)
        with data_plate(x, num_data):
            loc, scale = self.encoder(x)
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))


def data_plate(x: Tensor, num_data: int | None) -> pyro.plate:
    """The ``"data"`` plate of a batch ``x``: the batch is the subsample, so the plate scales
    log-densities by ``num_data / B``."""
    indices = torch.arange(x.shape[0], device=x.device)
    return pyro.plate("data", num_data or x.shape[0], subsample=indices)


def check_batch(x: Tensor, num_data: int | None) -> None:
    """Raises ValueError unless ``x`` is a ``(B, D)`` batch and ``num_data >= B``."""
    if x.ndim != 2:
        raise ValueError(f"x must be a batch of flat images (B, D), got shape {tuple(x.shape)}")
    if num_data is not None and num_data < x.shape[0]:
        raise ValueError(f"num_data={num_data} must be >= the batch size {x.shape[0]}")


def vae_loss(objective: str = "trace", num_particles: int = 1) -> ELBO:
    """The Pyro ELBO behind an objective name, with vectorised particles.

    - ``"trace"``: ``Trace_ELBO``, the Monte Carlo ``log p(x, z) - log q(z | x)``.
    - ``"analytic"``: ``TraceMeanField_ELBO``, analytic ``KL(q(z | x) || p(z))`` plus Monte
      Carlo reconstruction. It is correct here because the guide is a plain Normal (Pyro 1.9's
      TraceMeanField drops ``Delta.log_density``, which matters for other guides).
    - ``"iwae"``: ``RenyiELBO(alpha=0)``, the importance-weighted bound with
      ``num_particles`` samples per image.

    Arguments:
        objective: One of :data:`OBJECTIVES`.
        num_particles: Particles per step (the ``k`` of IWAE), >= 1.

    Returns:
        The ELBO object (``max_plate_nesting=1``).

    Raises:
        ValueError: For an unknown objective or ``num_particles < 1``.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective={objective!r} must be one of {', '.join(OBJECTIVES)}")
    check_counts(num_particles=num_particles)
    options = {"num_particles": num_particles, "vectorize_particles": True, "max_plate_nesting": 1}
    if objective == "iwae":
        return RenyiELBO(alpha=0.0, **options)
    return (TraceMeanField_ELBO if objective == "analytic" else Trace_ELBO)(**options)
