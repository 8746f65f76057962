"""Reading MNIST-layout IDX files, raw or gzipped, checking every header field before use.

An IDX file is two zero bytes, a type code (``0x08`` for unsigned bytes), the number of
dimensions, one big-endian int32 per dimension, then the values in row-major order. MNIST's
image files (magic number 2051) hold ``N x 28 x 28`` bytes and its label files (2049) ``N``
digits 0 to 9. A file that does not say exactly that is refused with a ``ValueError`` naming it:
a truncated download or a file of another data set would otherwise train on garbage or fail
deep inside torch.
"""

__all__ = ["IMAGE_SHAPE", "NUM_CLASSES", "read_idx_images", "read_idx_labels"]

import gzip
import math
import zlib
from pathlib import Path

import torch
from torch import Tensor

IMAGE_SHAPE = (28, 28)
NUM_CLASSES = 10
UINT8_CODE = 0x08
FETCH_AGAIN = "download it again (load_mnist(..., download=True) into an empty folder)"


def read_idx_images(path: Path) -> Tensor:
    """Reads an IDX image file (magic 2051) of ``N`` 28x28 uint8 images.

    Arguments:
        path: The file, raw or gzipped (a name ending in ``.gz``).

    Returns:
        The images, a uint8 tensor of shape ``(N, 28, 28)``.

    Raises:
        ValueError: If the file is not a gzip (``.gz`` only) or IDX file of uint8 images of
            28x28 pixels, holds no image, or its length is not what its header implies.
        OSError: If it cannot be read.
    """
    images = _read_idx(path, ndim=3, kind="images")
    if tuple(images.shape[1:]) != IMAGE_SHAPE:
        rows, cols = images.shape[1:]
        raise ValueError(
            f"{path}: its header says images of {rows}x{cols} pixels; MNIST and Fashion-MNIST "
            f"images are {IMAGE_SHAPE[0]}x{IMAGE_SHAPE[1]} ({FETCH_AGAIN})"
        )
    return images


def read_idx_labels(path: Path) -> Tensor:
    """Reads an IDX label file (magic 2049) of ``N`` class labels 0 to 9.

    Arguments:
        path: The file, raw or gzipped (a name ending in ``.gz``).

    Returns:
        The labels, an int64 tensor of shape ``(N,)``.

    Raises:
        ValueError: As :func:`read_idx_images`, or if a label is above 9.
        OSError: If it cannot be read.
    """
    labels = _read_idx(path, ndim=1, kind="labels")
    if len(labels) and int(labels.max()) >= NUM_CLASSES:
        bad = int(labels.argmax())
        raise ValueError(
            f"{path}: label {int(labels[bad])} at index {bad} is not a class; MNIST labels "
            f"are 0 to {NUM_CLASSES - 1} ({FETCH_AGAIN})"
        )
    return labels.to(torch.int64)


def _read_idx(path: Path, ndim: int, kind: str) -> Tensor:
    data = _read_bytes(path)
    _check_magic(path, data, ndim, kind)
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if shape[0] == 0:
        raise ValueError(f"{path}: its header says it holds no {kind} ({FETCH_AGAIN})")
    expected = header + math.prod(shape)
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "longer than its header says"
        raise ValueError(
            f"{path} is {what}: its header says {shape[0]} {kind} of shape {shape[1:]}, "
            f"{expected} bytes in all, but it has {len(data)} bytes ({FETCH_AGAIN})"
        )
    # bytearray: a writable buffer, so torch does not warn, and the tensor owns its memory.
    return torch.frombuffer(bytearray(data[header:]), dtype=torch.uint8).reshape(shape)


def _check_magic(path: Path, data: bytes, ndim: int, kind: str) -> None:
    """The magic number (two zero bytes, the uint8 type code, ``ndim``), then the header."""
    expected, header = (UINT8_CODE << 8) | ndim, 4 + 4 * ndim
    short = (
        f"{path} has {len(data)} bytes, fewer than the {header}-byte header of an IDX file "
        f"of {kind} ({FETCH_AGAIN})"
    )
    if len(data) < 4:
        raise ValueError(short)
    magic = int.from_bytes(data[:4], "big")
    if data[:2] != b"\0\0":
        raise ValueError(
            f"{path} is not an IDX file: its magic number is {magic}, expected {expected} "
            f"for {kind} (if it is gzipped, name it *.gz)"
        )
    if data[2] != UINT8_CODE:
        raise ValueError(
            f"{path}: IDX type code 0x{data[2]:02x}, expected 0x{UINT8_CODE:02x} (unsigned "
            f"bytes) for MNIST {kind} ({FETCH_AGAIN})"
        )
    if data[3] != ndim:
        raise ValueError(
            f"{path}: magic number {magic} says {data[3]} dimensions, expected {expected} "
            f"({ndim} dimensions) for {kind}; is it the other file of the pair?"
        )
    if len(data) < header:
        raise ValueError(short)


def _read_bytes(path: Path) -> bytes:
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder, not an IDX file")
    raw = path.read_bytes()
    if path.suffix != ".gz":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as error:  # BadGzipFile is an OSError
        raise ValueError(f"{path} is not a valid gzip file ({error}); {FETCH_AGAIN}") from error
