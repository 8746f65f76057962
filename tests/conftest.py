"""Shared fixtures: every test starts from a clean param store with fixed seeds."""

from collections.abc import Iterator

import pyro
import pytest


@pytest.fixture(autouse=True)
def clean_pyro_state() -> Iterator[None]:
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    with pyro.validation_enabled(True):
        yield
    pyro.clear_param_store()
