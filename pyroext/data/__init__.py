"""Datasets: small tables shipped with the package, MNIST from local files, synthetic data with
known parameters, and the train/test splits the jobs and benchmarks share."""

__all__ = [
    "BINARIZATIONS",
    "BNN_DATASETS",
    "RAW_FILES",
    "SYNTHETIC_COVARIANCES",
    "SYNTHETIC_MEANS",
    "SYNTHETIC_WEIGHTS",
    "VAE_DATASETS",
    "BNNData",
    "BinarizedImages",
    "TabularData",
    "VAEData",
    "load_bnn_data",
    "load_diabetes",
    "load_digits",
    "load_faithful",
    "load_mnist",
    "load_vae_data",
    "synthetic_mixture",
    "synthetic_regression",
]

from pyroext.data.embedded import TabularData, load_diabetes, load_digits, load_faithful
from pyroext.data.mnist import BINARIZATIONS, RAW_FILES, BinarizedImages, load_mnist
from pyroext.data.splits import (
    BNN_DATASETS,
    VAE_DATASETS,
    BNNData,
    VAEData,
    load_bnn_data,
    load_vae_data,
)
from pyroext.data.synthetic import (
    SYNTHETIC_COVARIANCES,
    SYNTHETIC_MEANS,
    SYNTHETIC_WEIGHTS,
    synthetic_mixture,
    synthetic_regression,
)
