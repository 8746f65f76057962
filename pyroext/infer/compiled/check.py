"""The checks a new compiled program passes against eager Pyro before it replaces it."""

__all__ = ["check_agrees", "check_same_sites"]

from collections.abc import Sequence

import torch
from torch import Tensor

from pyroext.infer.compiled.capture import NotCompilable

# Fused kernels reorder sums: agreement is to rounding, relative to each output's scale.
RELATIVE_TOLERANCE = {torch.float64: 1e-8, torch.float32: 1e-3, torch.float16: 1e-2}


def check_same_sites(recorded: Sequence[str], eager: Sequence[str]) -> None:
    """Refuses a program whose recording ran other sites than the eager call (its structure
    depends on something other than the shapes of its arguments)."""
    if tuple(recorded) == tuple(eager):
        return
    index = next(
        (i for i, (a, b) in enumerate(zip(recorded, eager, strict=False)) if a != b),
        min(len(recorded), len(eager)),
    )
    site = (list(eager) + [None])[index]
    recorded_site = (list(recorded) + ["nothing"])[index]
    raise NotCompilable(
        site,
        f"the sites change between calls (site {index + 1} was {recorded_site!r} when the "
        f"graph was recorded and {site!r} in the next call): Python control flow outside "
        "the arguments' shapes decides which sites run",
    )


def check_agrees(outputs: Sequence[Tensor], reference: Sequence[Tensor]) -> None:
    """Refuses a program whose loss and gradients differ from eager Pyro's on the same draws."""
    for index, (value, expected) in enumerate(zip(outputs, reference, strict=True)):
        rtol = RELATIVE_TOLERANCE.get(expected.dtype, 1e-3)
        scale = expected.detach().abs().max().clamp(min=1.0)
        error = (value.detach() - expected.detach()).abs().max()
        if not bool(error <= rtol * scale):
            what = "loss" if index == 0 else f"gradient {index}"
            raise NotCompilable(
                None,
                f"the compiled {what} differs from eager Pyro's on the same random draws by "
                f"{float(error):.3g} (tolerance {rtol:g} x {float(scale):.3g}): the graph "
                "does not repeat the program (state read or changed outside its inputs)",
            )
