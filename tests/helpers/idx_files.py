"""Tiny MNIST-layout IDX files, written by tests (tests never read the real MNIST files)."""

import struct
from pathlib import Path

import torch


def write_idx(path: Path, array: torch.Tensor) -> None:
    # IDX: two zero bytes, type code 0x08 (uint8), number of dims, big-endian int32 dims.
    magic = 0x0800 | array.dim()
    header = struct.pack(f">{array.dim() + 1}i", magic, *array.shape)
    path.write_bytes(header + array.to(torch.uint8).numpy().tobytes())


def write_split(raw: Path, split: str, images: torch.Tensor, labels: torch.Tensor) -> None:
    """Writes ``<split>-images-idx3-ubyte`` and ``<split>-labels-idx1-ubyte`` into ``raw``."""
    write_idx(raw / f"{split}-images-idx3-ubyte", images)
    write_idx(raw / f"{split}-labels-idx1-ubyte", labels)
