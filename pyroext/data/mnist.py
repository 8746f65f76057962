"""MNIST and Fashion-MNIST as flattened, optionally binarised images from local IDX files."""

__all__ = ["BINARIZATIONS", "RAW_FILES", "BinarizedImages", "load_mnist"]

import os
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset

from pyroext.data.idx import read_idx_images, read_idx_labels

BINARIZATIONS: tuple[str | None, ...] = ("dynamic", "static", None)
"""Valid values of the ``binarize`` argument."""

RAW_FILES: tuple[str, ...] = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
"""The IDX files :func:`load_mnist` reads from ``<root>/<MNIST|FashionMNIST>/raw/`` (each
uncompressed or gzipped as ``<name>.gz``), as torchvision downloads them."""


class BinarizedImages(Dataset[tuple[Tensor, Tensor]]):
    """Grey-scale images as flat vectors, binarised on the fly.

    The uint8 images are stored once; each read turns one into ``H * W`` float32 values:

    - ``"dynamic"``: a fresh ``torch.bernoulli(intensity)`` draw at every read, so each epoch
      sees new binary images. It uses torch's global generator, so ``torch.manual_seed``
      reproduces it.
    - ``"static"``: ``intensity > 0.5`` as 0/1 floats, the same at every read.
    - ``None``: the intensity ``pixel / 255`` in ``[0, 1]``.

    Arguments:
        images: uint8 images of shape ``(N, H, W)``.
        labels: Class labels of shape ``(N,)``, stored as int64.
        binarize: One of :data:`BINARIZATIONS`.

    Raises:
        ValueError: If ``binarize`` is unknown, ``images`` is not a 3-D uint8 tensor or the
            numbers of images and labels differ.
    """

    def __init__(self, images: Tensor, labels: Tensor, binarize: str | None = "dynamic") -> None:
        _check_binarize(binarize)
        if images.dtype != torch.uint8 or images.dim() != 3:
            raise ValueError(
                f"images must be a uint8 tensor of shape (N, H, W), got {images.dtype} "
                f"of shape {tuple(images.shape)}"
            )
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = labels.to(torch.int64)
        self.binarize = binarize

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        """Returns the flattened, binarised image ``index`` and its 0-d int64 label."""
        return self._transform(self.images[index]), self.labels[index]

    def tensors(self) -> tuple[Tensor, Tensor]:
        """Returns the whole dataset at once, for full-batch use.

        Returns:
            All images, shape ``(N, H * W)``, binarised by the same rule as items (a single
            draw for ``"dynamic"``), and the int64 labels, shape ``(N,)``.
        """
        return self._transform(self.images), self.labels

    def _transform(self, images: Tensor) -> Tensor:
        intensity = images.flatten(-2).to(torch.float32) / 255
        if self.binarize == "dynamic":
            return torch.bernoulli(intensity)
        if self.binarize == "static":
            return (intensity > 0.5).to(torch.float32)
        return intensity


def load_mnist(
    root: str | os.PathLike[str],
    *,
    train: bool = True,
    binarize: str | None = "dynamic",
    fashion: bool = False,
    download: bool = False,
) -> BinarizedImages:
    """Loads MNIST (or Fashion-MNIST) from local IDX files as :class:`BinarizedImages`.

    The files are checked before use (see :mod:`pyroext.data.idx`): magic numbers, the uint8
    type code, 28x28 images, as many labels as images, labels 0 to 9 and file lengths.

    Arguments:
        root: Folder holding ``MNIST/raw/`` (or ``FashionMNIST/raw/``) with the four IDX files
            of :data:`RAW_FILES`, each uncompressed or gzipped (``<name>.gz``); ``~`` is
            expanded.
        train: The 60000 training images if ``True``, else the 10000 test images.
        binarize: One of :data:`BINARIZATIONS`, see :class:`BinarizedImages`.
        fashion: Load Fashion-MNIST instead of MNIST.
        download: Let torchvision download any missing files into ``root`` first.

    Returns:
        A dataset of ``(image, label)`` pairs, images flattened to 784 values.

    Raises:
        ValueError: If ``binarize`` is unknown, or a file is not a valid IDX file of MNIST
            images or labels, or the image and label files of the split disagree.
        FileNotFoundError: If ``download`` is ``False`` and a raw file is missing.
        OSError: If a file cannot be read, or the download fails.
    """
    _check_binarize(binarize)
    root = os.path.expanduser(os.fspath(root))
    name = "FashionMNIST" if fashion else "MNIST"  # torchvision's folder names
    folder = Path(root) / name / "raw"
    if download:
        _download(name, root, folder)
    _check_raw_files(folder, name)
    split = "train" if train else "t10k"
    image_file = _present(folder / f"{split}-images-idx3-ubyte")
    label_file = _present(folder / f"{split}-labels-idx1-ubyte")
    images, labels = read_idx_images(image_file), read_idx_labels(label_file)
    if len(images) != len(labels):
        raise ValueError(
            f"{image_file} holds {len(images)} images but {label_file} holds {len(labels)} "
            "labels; the files come from different downloads (fetch both again)"
        )
    return BinarizedImages(images, labels, binarize)


def _check_binarize(binarize: str | None) -> None:
    if binarize not in BINARIZATIONS:
        raise ValueError(
            f"binarize={binarize!r} is unknown; valid values: "
            + ", ".join(repr(value) for value in BINARIZATIONS)
        )


def _download(name: str, root: str, folder: Path) -> None:
    """Runs torchvision's download (a no-op when the files are there) without its reader,
    whose bare assertions would hide which file is bad."""
    # Imported here: torchvision takes seconds to import (it loads torch._dynamo), which every
    # start of the command line would pay for a download few runs make.
    import torchvision.datasets

    cls = getattr(torchvision.datasets, name)
    downloader = cls.__new__(cls)
    downloader.root = root
    try:
        downloader.download()
    except (OSError, RuntimeError) as error:
        reason = " ".join(str(error).split())
        raise OSError(f"downloading {cls.__name__} into {folder} failed: {reason}") from error


def _present(path: Path) -> Path:
    """The file itself if it is there, else its gzipped form."""
    gzipped = path.with_name(path.name + ".gz")
    return path if path.exists() or not gzipped.exists() else gzipped


def _check_raw_files(folder: Path, name: str) -> None:
    # All four files, whichever split is read: the jobs read both, and a missing test split
    # would otherwise surface only after training.
    for file in RAW_FILES:
        if _present(folder / file).is_dir():
            raise IsADirectoryError(f"{_present(folder / file)} is a folder, not an IDX file")
    missing = [file for file in RAW_FILES if not _present(folder / file).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{name} not found: expected the IDX files {', '.join(RAW_FILES)} (each "
            f"uncompressed or as <name>.gz) in {folder}{os.sep} (missing: "
            f"{', '.join(missing)}). Pass download=True to fetch them, or copy them into "
            "that folder."
        )
