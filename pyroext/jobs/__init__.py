"""Ready-made fitting jobs behind the ``pyroext`` command line: one module per zoo model."""

__all__ = ["JOBS", "run_demo"]

from collections.abc import Callable
from typing import Any

from pyroext.jobs.bnn import fit_bnn
from pyroext.jobs.demo import run_demo
from pyroext.jobs.gmm import fit_gmm
from pyroext.jobs.linear_regression import fit_linear_regression
from pyroext.jobs.vae import fit_vae

JOBS: dict[str, Callable[..., Any]] = {
    "bnn": fit_bnn,
    "gmm": fit_gmm,
    "linear-regression": fit_linear_regression,
    "vae": fit_vae,
}
