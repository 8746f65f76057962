"""Device placement for SVI inputs: one rule for tensors, containers and modules."""

__all__ = ["resolve_device", "to_device"]

from collections.abc import Mapping
from typing import Any

import torch


def resolve_device(device: str | torch.device | None, *values: Any) -> torch.device:
    """Chooses the device SVI runs on.

    Arguments:
        device: An explicit device, or ``None`` to infer one.
        values: Model inputs; with ``device=None`` the first tensor among them decides.

    Returns:
        The explicit device if given, else the device of the first input tensor, else
        :func:`torch.get_default_device` (so ``torch.set_default_device`` users are honoured).

    Raises:
        ValueError: If ``device`` is not a valid device or names CUDA when none is available.
    """
    if device is None:
        tensor = _first_tensor(values)
        return tensor.device if tensor is not None else torch.get_default_device()
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        message = f"device={device!r} is not a torch device ('cpu', 'cuda', 'cuda:1', ...)"
        raise ValueError(message) from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was requested but CUDA is not available here")
    return resolved


def to_device(value: Any, device: torch.device) -> Any:
    """Moves tensors and modules, also inside tuples, lists and dicts, to ``device``.

    Arguments:
        value: A tensor, module, container of them, or anything else (returned unchanged).
        device: The target device.

    Returns:
        The value with every tensor and module on ``device``.
    """
    if isinstance(value, torch.Tensor | torch.nn.Module):
        return value.to(device)
    if isinstance(value, tuple):
        moved = [to_device(v, device) for v in value]
        return type(value)(*moved) if hasattr(value, "_fields") else tuple(moved)
    if isinstance(value, list):
        return [to_device(v, device) for v in value]
    if isinstance(value, Mapping):
        return {k: to_device(v, device) for k, v in value.items()}
    return value


def _first_tensor(values: Any) -> torch.Tensor | None:
    for value in values:
        if isinstance(value, torch.Tensor):
            return value
        if isinstance(value, tuple | list):
            found = _first_tensor(value)
            if found is not None:
                return found
        if isinstance(value, Mapping):
            found = _first_tensor(tuple(value.values()))
            if found is not None:
                return found
    return None
