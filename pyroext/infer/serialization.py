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
from typing import Any

import torch
from pyro import poutine

import pyroext
from pyroext.infer.checkpoint import preserved_rng_state, save_checkpoint


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
    """Saves a guide's parameters atomically, leaving the live guide untouched.

    Arguments:
        guide: Any guide that is a ``torch.nn.Module`` (all Pyro autoguides are).
        path: Destination file.
    """
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
        ValueError: If the saved guide was of another class.
    """
    state = torch.load(path, map_location="cpu", weights_only=False)
    expected = f"{type(guide).__module__}.{type(guide).__qualname__}"
    if state["guide_class"] != expected:
        raise ValueError(f"path holds a {state['guide_class']} guide, not a {expected}")
    warm_up(guide, *args, **kwargs)
    guide.load_state_dict(state["state_dict"])
    return guide
