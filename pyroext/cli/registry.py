"""The fitting jobs behind ``pyroext fit``: one line per model family of the zoo."""

__all__ = ["JOBS"]

from collections.abc import Callable
from typing import Any

from pyroext.models.bnn.job import fit_bnn
from pyroext.models.gmm.job import fit_gmm
from pyroext.models.linear_regression.job import fit_linear_regression
from pyroext.models.vae.job import fit_vae

JOBS: dict[str, Callable[..., Any]] = {
    "bnn": fit_bnn,
    "gmm": fit_gmm,
    "linear-regression": fit_linear_regression,
    "vae": fit_vae,
}
