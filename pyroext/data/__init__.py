"""Datasets: small tables shipped with installed packages, and MNIST images from local files."""

__all__ = [
    "BINARIZATIONS",
    "RAW_FILES",
    "BinarizedImages",
    "TabularData",
    "load_diabetes",
    "load_digits",
    "load_faithful",
    "load_mnist",
]

from pyroext.data.embedded import TabularData, load_diabetes, load_digits, load_faithful
from pyroext.data.mnist import BINARIZATIONS, RAW_FILES, BinarizedImages, load_mnist
