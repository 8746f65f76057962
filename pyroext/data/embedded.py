"""Small real datasets that ship with the installed packages, so loading needs no download."""

__all__ = ["TabularData", "load_diabetes", "load_digits", "load_faithful"]

from importlib.resources import files
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch
from torch import Tensor


class TabularData(NamedTuple):
    """A table of features with an optional target.

    Fields:
        x: Features, a float tensor of shape ``(N, D)``.
        y: Target of shape ``(N,)`` (float for regression, int64 class labels for
            classification), or ``None`` for an unsupervised dataset.
        feature_names: Names of the ``D`` columns of ``x``, in order.
        target_name: Name of the target, or ``None`` when ``y`` is ``None``.
    """

    x: Tensor
    y: Tensor | None
    feature_names: tuple[str, ...]
    target_name: str | None


def load_diabetes(*, standardize: bool = True, dtype: torch.dtype = torch.float32) -> TabularData:
    """Loads scikit-learn's diabetes regression data (442 patients, 10 baseline features).

    The target is a measure of disease progression one year after baseline.

    Arguments:
        standardize: If ``True``, every feature column and the target are shifted and scaled
            to mean 0 and population standard deviation 1 (dividing by ``N``, not ``N - 1``).
            If ``False``, the raw values of ``sklearn.datasets.load_diabetes(scaled=False)``
            (age in years, sex coded 1/2, ...) are returned unchanged. Note that scikit-learn's
            own ``scaled=True`` form is not used: it scales columns to unit sum of squares.
        dtype: Floating dtype of ``x`` and ``y``.

    Returns:
        A :class:`TabularData` with ``x`` of shape ``(442, 10)`` and ``y`` of shape ``(442,)``.
    """
    bunch = _sklearn_datasets().load_diabetes(scaled=False)
    x, y = bunch.data, bunch.target
    if standardize:
        x, y = _standardize(x), _standardize(y)
    return TabularData(
        torch.as_tensor(x, dtype=dtype),
        torch.as_tensor(y, dtype=dtype),
        tuple(bunch.feature_names),
        "progression",
    )


def load_digits(*, dtype: torch.dtype = torch.float32) -> TabularData:
    """Loads scikit-learn's 8x8 handwritten digits (1797 images, classes 0 to 9).

    Arguments:
        dtype: Floating dtype of ``x``.

    Returns:
        A :class:`TabularData` with ``x`` of shape ``(1797, 64)``, the pixel counts (0 to 16)
        divided by 16 so that they lie in ``[0, 1]``, row-major with feature names
        ``pixel_<row>_<column>``, and ``y`` the int64 digit labels.
    """
    bunch = _sklearn_datasets().load_digits()
    return TabularData(
        torch.as_tensor(bunch.data / 16.0, dtype=dtype),
        torch.as_tensor(bunch.target, dtype=torch.int64),
        tuple(bunch.feature_names),
        "digit",
    )


def load_faithful(*, standardize: bool = False, dtype: torch.dtype = torch.float32) -> TabularData:
    """Loads R's ``datasets::faithful``: 272 eruptions of the Old Faithful geyser.

    The two columns are the eruption duration (minutes) and the waiting time to the next
    eruption (minutes); the joint distribution is a classic two-cluster example.

    Arguments:
        standardize: If ``True``, both columns are scaled to mean 0 and population standard
            deviation 1 (dividing by ``N``); otherwise the raw minutes are returned.
        dtype: Floating dtype of ``x``.

    Returns:
        A :class:`TabularData` with ``x`` of shape ``(272, 2)``, feature names
        ``("eruptions", "waiting")`` and no target.
    """
    with (files("pyroext.data") / "faithful.csv").open("r") as f:
        table = pd.read_csv(f)
    names = ("eruptions", "waiting")
    x = table.loc[:, list(names)].to_numpy(dtype=np.float64)
    if standardize:
        x = _standardize(x)
    return TabularData(torch.as_tensor(x, dtype=dtype), None, names, None)


def _sklearn_datasets() -> Any:
    """``sklearn.datasets``, imported at the first load: importing it (and scipy) takes about
    two seconds, which every start of the command line would otherwise pay."""
    import sklearn.datasets

    return sklearn.datasets


def _standardize(values: np.ndarray) -> np.ndarray:
    # In float64 before any cast, so a float32 result is centred to rounding error.
    return (values - values.mean(axis=0)) / values.std(axis=0)
