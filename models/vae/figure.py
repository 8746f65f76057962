"""The figure of a trained VAE: test images, their reconstructions and samples from the prior."""

__all__ = ["plot_reconstructions"]

import matplotlib.pyplot as plt
import torch
from torch import Tensor

from pyroext.models.vae.model import VAE


@torch.no_grad()
def plot_reconstructions(
    vae: VAE, images: Tensor, image_shape: tuple[int, int], title: str, seed: int = 0
) -> plt.Figure:
    """Three rows: ``images``, the decoder's pixel probabilities at the encoder's mean of each,
    and pixel probabilities of as many draws ``z ~ p(z)``.

    Arguments:
        vae: The trained VAE.
        images: Flat images ``(M, H * W)``.
        image_shape: ``(H, W)``.
        title: Title of the figure.
        seed: Seed of the prior draws.

    Returns:
        The figure.
    """
    device = next(vae.parameters()).device
    images = images.to(device)
    loc, _ = vae.encoder(images)
    reconstructions = torch.sigmoid(vae.decoder(loc))
    generator = torch.Generator(device).manual_seed(seed)
    prior = torch.randn(len(images), vae.latent_dim, generator=generator, device=device)
    samples = torch.sigmoid(vae.decoder(prior.to(loc.dtype)))
    rows = {"test images": images, "reconstructions": reconstructions, "prior samples": samples}
    figure, axes = plt.subplots(3, len(images), figsize=(1.2 * len(images), 4), squeeze=False)
    for row, (label, pictures) in zip(axes, rows.items(), strict=True):
        for axis, picture in zip(row, pictures.cpu(), strict=True):
            axis.imshow(picture.reshape(image_shape).numpy(), cmap="gray_r", vmin=0, vmax=1)
            axis.set_xticks([])
            axis.set_yticks([])
        row[0].set_ylabel(label, fontsize=8)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    return figure
