"""Atomic, checksummed training checkpoints with everything needed to resume bit for bit.

A checkpoint file is one header line followed by a :func:`torch.save` payload::

    PYROEXT-CHECKPOINT <format> <payload bytes> <sha256 of the payload>\\n<payload>

The digest catches bit flips, truncated copies and foreign files before anything is
unpickled. The payload holds only tensors and plain containers: NumPy arrays and distribution
constraints are turned into those when saving (see :mod:`pyroext.infer.plain`), so that
loading can use ``torch.load(weights_only=True)`` with nothing allow-listed, and a file
carrying any other object (one that would run code when unpickled) is refused.
"""

__all__ = [
    "FILE_FORMAT",
    "atomic_target",
    "capture_rng_state",
    "check_writable",
    "load_checkpoint",
    "preserved_rng_state",
    "read_verified",
    "restore_rng_state",
    "save_checkpoint",
]

import contextlib
import glob
import hashlib
import io
import os
import pickle
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyro.util
import torch

from pyroext.infer.plain import from_plain, to_plain

MAGIC = b"PYROEXT-CHECKPOINT"
FILE_FORMAT = 1
"""Version of the file layout (header and payload encoding), checked on loading."""
ORPHAN_AGE = 60.0
"""Seconds after which a temporary file without a writer's process id counts as abandoned."""
_HEADER = re.compile(rb"PYROEXT-CHECKPOINT (\d+) (\d+) ([0-9a-f]{64})")
_MAX_HEADER = 128


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
    instead of a truncated one; on failure the temporary file is removed. Temporary files
    that killed writers left beside ``path`` are removed first, and the file written gets
    the permissions the umask gives a new file (a temporary file is created private).

    Arguments:
        path: Destination file; its folder is created if missing.

    Yields:
        The temporary path to write to.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_orphans(path)
    prefix = f".{path.name}.{os.getpid()}-"
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=".tmp")
    os.close(handle)
    try:
        yield Path(temporary)
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    _sync_folder(path.parent)


def check_writable(path: str | os.PathLike, argument: str) -> None:
    """Refuses a destination that :func:`atomic_target` could not write, creating nothing.

    Called before training, so that a bad ``checkpoint=`` costs no work.

    Arguments:
        path: The file to be written.
        argument: What to call it in error messages (``"checkpoint"``).

    Raises:
        ValueError: If ``path`` is a folder, lies below a file, or in a folder this process
            may not write to.
    """
    path, name = Path(path), f"{argument}={str(path)!r}"
    if path.is_dir():
        raise ValueError(f"{name} is a folder; give the path of a file to write")
    folder = path.parent
    while not folder.exists():  # the folders still to be made are made where the first is
        folder = folder.parent
    if not folder.is_dir():
        raise ValueError(f"{name} cannot be written: {str(folder)!r} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"{name} cannot be written: no permission to write in {str(folder)!r}")


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Writes ``state`` with its checksum atomically (see :func:`atomic_target`).

    Arguments:
        path: Destination file; its folder is created if missing.
        state: Tensors, NumPy arrays, constraints, numbers, strings and containers of them.

    Raises:
        TypeError: If ``state`` holds anything else (naming where), before anything is written.
    """
    buffer = io.BytesIO()
    torch.save(to_plain(state, "state"), buffer)
    payload = buffer.getvalue()
    digest = hashlib.sha256(payload).hexdigest()
    header = b"%s %d %d %s\n" % (MAGIC, FILE_FORMAT, len(payload), digest.encode())
    with atomic_target(path) as temporary, open(temporary, "wb") as file:
        file.write(header)
        file.write(payload)
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
        IsADirectoryError: If ``path`` is a folder.
        ValueError: If the file is not a pyroext checkpoint, is damaged or truncated, or holds
            objects other than tensors and plain containers (naming the file and the fault).
    """
    if not Path(path).exists():
        raise FileNotFoundError(f"checkpoint={str(path)!r} does not exist; nothing to resume")
    return read_verified(path, "checkpoint")


def read_verified(path: str | os.PathLike, argument: str) -> dict[str, Any]:
    """Reads any file written by :func:`save_checkpoint`, checking its digest first.

    Arguments:
        path: The file.
        argument: What to call it in error messages (``"checkpoint"``, ``"path"``).

    Returns:
        The saved state.

    Raises:
        IsADirectoryError: If ``path`` is a folder.
        ValueError: As for :func:`load_checkpoint`.
    """
    name = f"{argument}={str(path)!r}"
    if Path(path).is_dir():
        raise IsADirectoryError(f"{name} is a folder, not a file written by pyroext")
    payload = _verified_payload(Path(path).read_bytes(), name)
    try:
        state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        reason = str(error).strip().splitlines()[-1][:200]
        raise ValueError(
            f"{name} holds objects other than tensors and plain containers, which could run "
            f"code when loaded, so it is refused ({reason}); load only files that pyroext "
            "wrote"
        ) from None
    except (RuntimeError, EOFError, OSError, KeyError, TypeError, ValueError) as error:
        # only a file made to pass the digest check gets here: torch.save wrote the payload
        raise ValueError(f"{name} has a valid checksum but cannot be read: {error}") from None
    return from_plain(state, name)


def _verified_payload(data: bytes, name: str) -> bytes:
    """The payload of a checkpoint file's bytes, once its header and digest check out."""
    if not data.startswith(MAGIC):
        raise ValueError(f"{name} is not a pyroext checkpoint{_what_it_is(data)}")
    line, newline, _ = data[:_MAX_HEADER].partition(b"\n")
    header = _HEADER.fullmatch(line)
    if not newline or header is None:
        raise ValueError(f"{name} is damaged or truncated: its header line is malformed")
    file_format, length, digest = int(header[1]), int(header[2]), header[3].decode()
    if file_format != FILE_FORMAT:
        raise ValueError(
            f"{name} was written by another pyroext version (file format {file_format}, this "
            f"version reads {FILE_FORMAT}); load it with that version or train afresh"
        )
    payload = data[len(line) + 1 :]
    if len(payload) < length:
        raise ValueError(
            f"{name} is truncated: it holds {len(payload)} of {length} bytes (an interrupted "
            "copy?); restore it from a complete copy or train afresh"
        )
    if len(payload) > length or hashlib.sha256(payload).hexdigest() != digest:
        raise ValueError(
            f"{name} is corrupt: its content does not match its sha256 digest (a bit flip or "
            "a damaged copy); restore it from a good copy or train afresh"
        )
    return payload


def _what_it_is(data: bytes) -> str:
    """A guess at what a file that is not a checkpoint is, for the error message."""
    if not data:
        return ": it is empty (0 bytes)"
    if data.startswith(b"PK\x03\x04"):
        return (
            ": it is a zip archive, such as torch.save writes (checkpoints of pyroext versions "
            "before checksums were plain torch.save files; train afresh)"
        )
    if data.startswith(b"\x80"):
        return ": it is a bare pickle"
    return f": it starts with {data[:16]!r}"


def _remove_orphans(path: Path) -> None:
    """Removes temporary files of ``path`` whose writer was killed before renaming them."""
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(?:(\d+)-)?[a-z0-9_]{{8}}\.tmp")
    for sibling in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        match = pattern.fullmatch(sibling.name)
        if match and _abandoned(sibling, match[1]):
            with contextlib.suppress(OSError):  # another writer may be cleaning up too
                sibling.unlink()


def _abandoned(temporary: Path, pid: str | None) -> bool:
    if pid is None:  # written by a version without process ids in the name
        with contextlib.suppress(OSError):
            return time.time() - temporary.stat().st_mtime > ORPHAN_AGE
        return False
    if int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError):
        return False  # alive, though another user's
    return False


def _umask() -> int:
    """The process's umask, read without changing it where Linux shows it."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    # Elsewhere, set and restore it: another thread creating a file meanwhile gets 0o022.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _sync_folder(folder: Path) -> None:
    """Makes a rename durable: without it, a power cut may leave the old name in place."""
    with contextlib.suppress(OSError):  # not every file system lets folders be synced
        handle = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)
