"""Shared fixtures: every test starts from a clean param store with fixed seeds; ``float64``
makes float64 torch's default dtype for the tests that ask for it."""

import os
from collections.abc import Iterator

import pyro
import pytest
import torch


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # One thread per worker: workers with torch's default threads each oversubscribe the cores.
        torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def clean_pyro_state() -> Iterator[None]:
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    with pyro.validation_enabled(True):
        yield
    pyro.clear_param_store()


@pytest.fixture
def float64() -> Iterator[None]:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)
