"""Train/test splits of the embedded and MNIST data sets, as the VAE and BNN jobs use them."""

__all__ = ["BNN_DATASETS", "VAE_DATASETS", "BNNData", "VAEData", "load_bnn_data", "load_vae_data"]

import os
from typing import NamedTuple

import torch
from torch import Tensor

from pyroext.data.embedded import load_diabetes, load_digits
from pyroext.data.mnist import BinarizedImages, load_mnist

VAE_DATASETS = ("digits", "mnist")
BNN_DATASETS = {"classification": ("digits", "mnist"), "regression": ("diabetes",)}
"""Datasets of each task; the first is the task's default."""
DIGITS_TRAIN = 1500
DIABETES_TEST = 88


class VAEData(NamedTuple):
    """Training images (binarised afresh at every read), fixed test images and image shape."""

    train: BinarizedImages
    test: Tensor
    image_shape: tuple[int, int]


class BNNData(NamedTuple):
    """Training and test split of one dataset: ``x`` of shape ``(N, D)``, ``y`` of shape
    ``(N,)`` (int64 classes, or float targets for regression)."""

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    likelihood: str


def load_vae_data(data: str = "digits", data_dir: str | os.PathLike | None = None) -> VAEData:
    """Training and test images for :func:`~pyroext.models.vae.job.fit_vae`.

    ``digits`` (embedded, no download): scikit-learn's 8x8 digits scaled to ``[0, 1]``, the
    first 1500 for training and the other 297 for testing. ``mnist``: the 60000/10000 split
    from ``data_dir/MNIST/raw``. Training images are binarised dynamically; the test images once,
    with a fixed seed, so that test metrics are comparable across runs.

    Arguments:
        data: A name from :data:`VAE_DATASETS`.
        data_dir: Folder holding ``MNIST/raw`` (``mnist`` only).

    Returns:
        The :class:`VAEData`.

    Raises:
        ValueError: For an unknown dataset, or ``mnist`` without ``data_dir``.
    """
    if data not in VAE_DATASETS:
        raise ValueError(f"data={data!r} is unknown; valid datasets: {', '.join(VAE_DATASETS)}")
    if data == "mnist":
        if data_dir is None:
            raise ValueError("data='mnist' needs data_dir=<folder holding MNIST/raw>")
        train, test = (load_mnist(data_dir, train=split) for split in (True, False))
        images = test.images
    else:
        digits = load_digits()
        pixels = (digits.x * 255).round().to(torch.uint8).reshape(-1, 8, 8)
        train = BinarizedImages(pixels[:DIGITS_TRAIN], digits.y[:DIGITS_TRAIN])
        images = pixels[DIGITS_TRAIN:]
    intensity = images.flatten(1).to(torch.float32) / 255
    test = torch.bernoulli(intensity, generator=torch.Generator().manual_seed(0))
    return VAEData(train, test, tuple(images.shape[1:]))


def load_bnn_data(
    task: str = "classification",
    data: str | None = None,
    data_dir: str | os.PathLike | None = None,
) -> BNNData:
    """Training and test data of :func:`~pyroext.models.bnn.job.fit_bnn`.

    ``digits`` (embedded): scikit-learn's 8x8 digits in ``[0, 1]``, the first 1500 for training
    and the other 297 for testing, as the VAE job. ``mnist``: the 60000/10000 split of
    ``data_dir/MNIST/raw``, pixels divided by 255. ``diabetes`` (embedded): standardised
    features and target, 88 patients drawn with seed 0 for testing and 354 for training.

    Arguments:
        task: ``classification`` or ``regression``.
        data: A dataset of the task (see :data:`BNN_DATASETS`); the task's first by default.
        data_dir: Folder holding ``MNIST/raw`` (``mnist`` only).

    Raises:
        ValueError: For an unknown task or dataset, or ``mnist`` without ``data_dir``.
    """
    if task not in BNN_DATASETS:
        raise ValueError(f"task={task!r} is unknown; valid tasks: {', '.join(BNN_DATASETS)}")
    data = data or BNN_DATASETS[task][0]
    if data not in BNN_DATASETS[task]:
        valid = ", ".join(BNN_DATASETS[task])
        raise ValueError(f"data={data!r} does not suit task={task!r}; valid datasets: {valid}")
    if data == "diabetes":
        table = load_diabetes()
        order = torch.randperm(len(table.y), generator=torch.Generator().manual_seed(0))
        test, train = order[:DIABETES_TEST], order[DIABETES_TEST:]
        return BNNData(table.x[train], table.y[train], table.x[test], table.y[test], "gaussian")
    if data == "digits":
        table = load_digits()
        x, y = table.x, table.y
        return BNNData(
            x[:DIGITS_TRAIN], y[:DIGITS_TRAIN], x[DIGITS_TRAIN:], y[DIGITS_TRAIN:], "categorical"
        )
    if data_dir is None:
        raise ValueError("data='mnist' needs data_dir=<folder holding MNIST/raw>")
    splits = [load_mnist(data_dir, train=train, binarize=None) for train in (True, False)]
    x_train, x_test = (split.images.flatten(1).float() / 255 for split in splits)
    return BNNData(x_train, splits[0].labels, x_test, splits[1].labels, "categorical")
