"""The NaN guard's errors and its check of parameters and optimiser state."""

__all__ = [
    "NonFiniteLossError",
    "NonFiniteParameterError",
    "first_non_finite",
    "named_tensors",
    "non_finite_state",
]

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import pyro
import torch


class NonFiniteLossError(FloatingPointError):
    """Raised when the loss becomes NaN or infinite; the last checkpoint is left as it was."""

    def __init__(
        self,
        step: int,
        value: float,
        losses: np.ndarray,
        saved: str | None,
        rank: int | None = None,
    ) -> None:
        finite = np.flatnonzero(np.isfinite(losses[: step - 1]))
        last = (
            f"last finite loss {losses[finite[-1]]:.6g} at step {finite[-1] + 1}"
            if len(finite)
            else "no finite loss before it"
        )
        where = f"; {saved}" if saved else ""
        on = "" if rank is None else f" on rank {rank}"
        super().__init__(f"loss is {value} at step {step}{on} ({last}){where}")
        self.step = step
        self.rank = rank


class NonFiniteParameterError(NonFiniteLossError):
    """Raised when a parameter or optimiser state becomes NaN or infinite while the loss is
    still finite (a non-finite gradient, or an update that overflows); nothing non-finite is
    ever written to the checkpoint, which is left as it was."""

    def __init__(self, what: str, value: float, step: int, since: int, saved: str | None) -> None:
        checked = f"all finite after step {since}" if since else "finite at the start"
        where = f"; {saved}" if saved else ""
        FloatingPointError.__init__(
            self,
            f"{what} is {value} after step {step} ({checked}) while the loss is finite: a "
            f"non-finite gradient, or an update too large (lower the learning rate){where}",
        )
        self.step = step
        self.rank = None
        self.what = what


def non_finite_state(svi: Any) -> tuple[str, float] | None:
    """The first non-finite tensor among what a checkpoint of ``svi`` would hold.

    Arguments:
        svi: An SVI object (its ``model``, ``guide`` and ``optim``).

    Returns:
        ``(what, value)``, e.g. ``("parameter 'loc'", nan)``, or ``None`` if all are finite.
    """

    def named() -> Iterator[tuple[str, torch.Tensor]]:
        for name, value in pyro.get_param_store().named_parameters():
            yield f"parameter {name!r}", value
        for role in ("model", "guide"):
            module = getattr(svi, role)
            if isinstance(module, torch.nn.Module):
                for name, value in module.state_dict().items():
                    yield f"{role} state {name!r}", value
        yield from named_tensors(svi.optim.get_state(), "optimiser state")

    return first_non_finite(named())


def named_tensors(obj: Any, prefix: str) -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor inside nested dicts, lists and tuples, named by its keys.

    Arguments:
        obj: A state, such as an optimiser's ``get_state()``.
        prefix: What to put before the keys.

    Yields:
        ``(name, tensor)`` pairs, e.g. ``("optimiser state w/state/0/exp_avg", tensor)``.
    """
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from named_tensors(value, f"{prefix}/{key}")
    elif isinstance(obj, list | tuple):
        for index, value in enumerate(obj):
            yield from named_tensors(value, f"{prefix}/{index}")


def first_non_finite(named: Iterable[tuple[str, torch.Tensor]]) -> tuple[str, float] | None:
    """The first tensor holding a NaN or infinity, and one such value.

    All tensors are tested on their devices and the results copied to the host once per
    device, so the check costs one sync, not one per tensor.

    Arguments:
        named: ``(name, tensor)`` pairs; integer tensors are skipped.

    Returns:
        ``(name, value)`` of the first non-finite tensor, or ``None`` if all are finite.
    """
    named = [(n, t) for n, t in named if t.is_floating_point() or t.is_complex()]
    flags = [torch.isfinite(t.detach()).all() for _, t in named]
    by_device: dict[torch.device, list[int]] = {}
    for index, flag in enumerate(flags):
        by_device.setdefault(flag.device, []).append(index)
    finite = [True] * len(flags)
    for indices in by_device.values():
        for index, ok in zip(
            indices, torch.stack([flags[i] for i in indices]).tolist(), strict=True
        ):
            finite[index] = ok
    for (name, tensor), ok in zip(named, finite, strict=True):
        if not ok:
            tensor = tensor.detach()
            return name, tensor[~torch.isfinite(tensor)].reshape(-1)[0].item()
    return None
