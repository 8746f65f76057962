"""The amortised Markov guide: per-datum latents, an encoder's base ``q0(z | x)``, then ``K``
Markov steps per datum that target the model's joint ``p(x, z)``.

The guide draws ``z_0 ~ q0(z | x)`` inside the model's data plate as an auxiliary site (its
``-log q0`` enters the ELBO), runs the steps of its kernel family (one runner of
:mod:`pyroext.kernels.chains`, shared with the global :class:`~pyroext.guides.AutoMarkovGuide`)
and emits ``z = z_K`` as a ``Delta`` whose log-density is the rest of the extended-space
density, score term included. Per-datum diagnostics are recorded in :attr:`sample_stats` and in
the ``z`` site's ``infer["sample_stats"]``, as the global guides do.
"""

__all__ = ["AmortisedMarkovGuide"]

from collections.abc import Callable
from typing import Any, ClassVar

import pyro
import pyro.distributions as dist
from torch import Tensor, nn

from pyroext.guides.transport import Transport


class AmortisedMarkovGuide(nn.Module):
    """Base class of amortised Markov guides, mixed into the module that holds the model.

    The module it is mixed into provides ``encoder`` (``x -> (loc, scale)`` of ``q0``),
    ``log_joint(x, z)`` (the model's ``log p(x, z)`` per datum, unscaled) and
    ``data_plate(x, num_data)`` (the model's data plate); a subclass implements
    :meth:`kernel_modules` (its learned kernel parts, registered with Pyro under these names)
    and :meth:`_transport` (the steps, through a chain runner).

    Attributes:
        sample_stats: Per-datum diagnostics of the last guide call, each ``(*batch, ...)``
            (e.g. ``acceptance_rate`` ``(*batch, K)``); per-step ones have a ``step``
            dimension (:attr:`sample_stats_dims`).
    """

    sample_stats_dims: ClassVar[dict[str, tuple[str, ...]]] = {
        "acceptance_rate": ("step",),
        "accepted": ("step",),
    }
    encoder: nn.Module
    log_joint: Callable[[Tensor, Tensor], Tensor]
    data_plate: Callable[[Tensor, int | None], pyro.plate]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sample_stats: dict[str, Tensor] = {}

    def kernel_modules(self) -> dict[str, nn.Module]:
        """The learned parts of the kernel, by the names Pyro's param store gives them."""
        raise NotImplementedError

    def _transport(self, x: Tensor, z0: Tensor, base: dist.Distribution) -> Transport:
        """Runs the ``K`` steps from ``z0 ~ q0(z | x)``, ``(*batch, L)``."""
        raise NotImplementedError

    def guide(self, x: Tensor, num_data: int | None = None) -> None:
        """``z_0 ~ q0(z | x)``, then ``K`` Markov steps per datum; emits ``z0`` and ``z = z_K``.

        Arguments:
            x: A batch of data, ``(B, ...)``.
            num_data: Size of the dataset the batch is drawn from (``B`` if omitted).
        """
        plate = self.data_plate(x, num_data)
        pyro.module("encoder", self.encoder, update_module_params=True)
        for name, module in self.kernel_modules().items():
            pyro.module(name, module, update_module_params=True)
        loc, scale = self.encoder(x)
        base = dist.Normal(loc, scale).to_event(1)
        with plate:
            z0 = pyro.sample("z0", base, infer={"is_auxiliary": True})
            transport = self._transport(x, z0, base)
            self.sample_stats = {k: v.detach() for k, v in transport.sample_stats.items()}
            pyro.sample(
                "z",
                dist.Delta(transport.position, log_density=transport.log_density, event_dim=1),
                infer={"sample_stats": self.sample_stats},
            )
