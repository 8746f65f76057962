"""Atomic training checkpoints with everything needed to resume bit for bit."""

__all__ = [
    "atomic_target",
    "capture_rng_state",
    "load_checkpoint",
    "preserved_rng_state",
    "restore_rng_state",
    "save_checkpoint",
]

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyro.util
import torch


def capture_rng_state() -> dict[str, Any]:
    """Returns the state of every random generator SVI may draw from.

    Returns:
        Torch (CPU and, when initialised, every CUDA device), Python ``random`` and NumPy states.
    """
    state = pyro.util.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restores generators captured by :func:`capture_rng_state`.

    Arguments:
        state: The captured state.
    """
    pyro.util.set_rng_state(state)
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextlib.contextmanager
def preserved_rng_state() -> Iterator[None]:
    """Leaves every generator of :func:`capture_rng_state` as it was, whatever runs inside."""
    state = capture_rng_state()
    try:
        yield
    finally:
        restore_rng_state(state)


@contextlib.contextmanager
def atomic_target(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary file beside ``path`` and renames it onto ``path`` on success.

    The rename is atomic on POSIX, so a crash while writing leaves the previous file intact
    instead of a truncated one; on failure the temporary file is removed.

    Arguments:
        path: Destination file; its folder is created if missing.

    Yields:
        The temporary path to write to.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        yield Path(temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Writes ``state`` with :func:`torch.save` atomically (see :func:`atomic_target`).

    Arguments:
        path: Destination file; its folder is created if missing.
        state: Picklable training state.
    """
    with atomic_target(path) as temporary, open(temporary, "wb") as file:
        torch.save(state, file)
        file.flush()
        os.fsync(file.fileno())


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Reads a checkpoint written by :func:`save_checkpoint` onto the CPU.

    Arguments:
        path: The checkpoint file.

    Returns:
        The saved state.

    Raises:
        FileNotFoundError: If there is no checkpoint at ``path``.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"checkpoint={str(path)!r} does not exist; nothing to resume")
    # Checkpoints hold optimiser state, RNG states and NumPy arrays, not only tensors.
    return torch.load(path, map_location="cpu", weights_only=False)
