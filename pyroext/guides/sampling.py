"""Random draws of an MCMC-in-guide guide: their batch shape, their seeds, their quantiles."""

__all__ = ["antithetic_draws", "common_random_numbers", "plate_batch_shape", "unpacked_quantiles"]

from collections.abc import Iterator
from contextlib import contextmanager

import pyro.distributions as dist
import torch
from pyro.infer.autoguide import AutoContinuous
from pyro.poutine import runtime
from torch import Tensor
from torch.distributions import biject_to

from pyroext.infer.checkpoint import preserved_rng_state


def plate_batch_shape() -> torch.Size:
    """The batch shape that the enclosing vectorised plates give a draw (ELBO particles)."""
    frames = [f for f in runtime.get_plates() if f.vectorized and f.dim is not None]
    if not frames:
        return torch.Size()
    shape = [1] * max(-frame.dim for frame in frames)
    for frame in frames:
        shape[frame.dim] = frame.size
    return torch.Size(shape)


@contextmanager
def common_random_numbers(device: torch.device, seed: int) -> Iterator[None]:
    """Draws from a fixed seed inside, and leaves the caller's random state as it was."""
    with preserved_rng_state():
        torch.random.default_generator.manual_seed(seed)
        if device.type == "cuda":
            with torch.cuda.device(device):
                torch.cuda.manual_seed(seed)
        yield


def unpacked_quantiles(
    guide: AutoContinuous, draws: Tensor, quantiles: list[float] | Tensor
) -> dict[str, Tensor]:
    """Elementwise quantiles of flat unconstrained draws ``(S, D)``, by constrained site.

    Each level is unpacked on its own, as Pyro's ``AutoContinuous.quantiles`` does: a batch of
    levels would broadcast against the sites' plate dimensions.

    Arguments:
        guide: The guide whose ``_unpack_latent`` splits the flat vector into sites.
        draws: Unconstrained draws.
        quantiles: Levels in (0, 1).

    Returns:
        A dict from site name to a tensor with the levels as leading dimension.

    Raises:
        ValueError: If a level is outside (0, 1).
    """
    levels = torch.as_tensor(quantiles, dtype=draws.dtype, device=draws.device).reshape(-1)
    if not bool(((levels > 0) & (levels < 1)).all()):
        raise ValueError(f"quantiles={quantiles!r} must all lie in (0, 1)")
    result: dict[str, list[Tensor]] = {}
    for latent in torch.quantile(draws, levels, dim=0):
        for site, unconstrained in guide._unpack_latent(latent):
            value = biject_to(site["fn"].support)(unconstrained)
            result.setdefault(site["name"], []).append(value)
    return {name: torch.stack(values) for name, values in result.items()}


def antithetic_draws(base: dist.Distribution, half: int) -> Tensor:
    """``2 half`` base draws in antithetic pairs, reflected through the base's noise."""
    if isinstance(base, dist.TransformedDistribution):
        noise = base.base_dist.sample((half,))
        draws = torch.cat([noise, -noise])
        for layer in base.transforms:  # one by one, so that each layer caches its inverse
            draws = layer(draws)
        return draws
    draws = base.sample((half,))
    return torch.cat([draws, 2 * base.mean - draws])
