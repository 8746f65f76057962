"""Saving and loading guides without Pyro's pickling pitfalls.

``torch.save(guide)`` on a Pyro autoguide runs ``AutoGuide.__getstate__``, which sets
``guide._model = None`` on the *live* guide, so ``guide.model`` breaks after saving; and a
freshly built autoguide creates its parameters lazily, so ``load_state_dict`` fails with
"Unexpected key(s)" until the guide has been called once. These helpers store only the state
dict (the live guide is never pickled) and warm a fresh guide up before loading into it.
"""

__all__ = ["load_guide", "save_guide", "warm_up"]

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from pyro import poutine

import pyroext
from pyroext.infer.checkpoint import (
    check_writable,
    preserved_rng_state,
    read_verified,
    save_checkpoint,
)


def warm_up(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    """Calls a model or guide once so that its lazily created parameters exist.

    The call is hidden from any enclosing Pyro handler and leaves every random generator as it
    found it, so warming up never changes a seeded run.

    Arguments:
        fn: A Pyro model or guide.
        args: Positional arguments for ``fn``.
        kwargs: Keyword arguments for ``fn``.
    """
    with preserved_rng_state(), poutine.block():
        fn(*args, **kwargs)


def save_guide(guide: torch.nn.Module, path: str | os.PathLike) -> None:
    """Saves a guide's parameters atomically with a checksum, leaving the live guide untouched.

    The file is a checkpoint file (see :mod:`pyroext.infer.checkpoint`): it is verified when
    loaded and holds only tensors and plain containers.

    Arguments:
        guide: Any guide that is a ``torch.nn.Module`` (all Pyro autoguides are).
        path: Destination file.

    Raises:
        ValueError: If ``path`` is a folder or cannot be written (see
            :func:`~pyroext.infer.checkpoint.check_writable`).
    """
    check_writable(path, "path")
    save_checkpoint(
        path,
        {
            "guide_class": f"{type(guide).__module__}.{type(guide).__qualname__}",
            "state_dict": guide.state_dict(),
            "pyroext_version": pyroext.__version__,
        },
    )


def load_guide(
    guide: torch.nn.Module, path: str | os.PathLike, *args: Any, **kwargs: Any
) -> torch.nn.Module:
    """Loads parameters saved by :func:`save_guide` into a guide, fresh or already used.

    Arguments:
        guide: A guide built the same way as the saved one (same class, model and options).
        path: File written by :func:`save_guide`.
        args: Model arguments, used once to create the guide's lazy parameters.
        kwargs: Model keyword arguments, likewise.

    Returns:
        ``guide``, with the saved parameters.

    Raises:
        FileNotFoundError: If there is no file at ``path``.
        ValueError: If the file is not a saved guide, is damaged, holds objects other than
            tensors and plain containers, or was saved from a guide of another class or shape.
    """
    state = _saved_state(guide, path)
    warm_up(guide, *args, **kwargs)
    try:
        guide.load_state_dict(state["state_dict"])
    except RuntimeError as error:
        raise ValueError(
            f"path={str(path)!r} does not fit this {type(guide).__qualname__} (another model "
            f"or options?): {_first_lines(error)}"
        ) from None
    return guide


def _saved_state(guide: torch.nn.Module, path: str | os.PathLike) -> dict[str, Any]:
    """The verified content of a file from :func:`save_guide`, checked against ``guide``."""
    if not Path(path).exists():
        raise FileNotFoundError(f"path={str(path)!r} does not exist; save_guide writes it")
    state = read_verified(path, "path")
    if not isinstance(state, dict) or "state_dict" not in state or "guide_class" not in state:
        raise ValueError(f"path={str(path)!r} is a pyroext checkpoint, not a saved guide")
    expected = f"{type(guide).__module__}.{type(guide).__qualname__}"
    if state["guide_class"] != expected:
        raise ValueError(
            f"path={str(path)!r} holds a {state['guide_class']} guide, not a {expected}; "
            "build the guide the saved one was built as"
        )
    return state


def _first_lines(error: Exception, count: int = 3) -> str:
    """The gist of ``load_state_dict``'s error: its key lists can run to pages."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return " ".join(lines[:count])[:400]
