"""The VAE with an amortised Markov guide: the plain VAE's model, and a guide that moves the
encoder's draws by Markov steps targeting that model's ``p(x, z)`` per image."""

__all__ = ["MarkovVAE"]

import pyro
from torch import Tensor

from pyroext.guides import AmortisedMarkovGuide
from pyroext.models.vae.model import VAE, check_batch, data_plate


class MarkovVAE(AmortisedMarkovGuide, VAE):
    """A :class:`~pyroext.models.vae.VAE` whose guide is an
    :class:`~pyroext.guides.AmortisedMarkovGuide` over the same model: ``vae.model`` is the
    VAE's, ``vae.guide`` runs the subclass's Markov steps in the ``"data"`` plate."""

    def data_plate(self, x: Tensor, num_data: int | None) -> pyro.plate:
        """The model's ``"data"`` plate of the batch, after checking it."""
        check_batch(x, num_data)
        return data_plate(x, num_data)
