"""The data sets of the exact linear regression tests: a synthetic one and sklearn's diabetes."""

import pytest
import torch
from linear_regression_checks import F64, NOISE, standardize
from sklearn.datasets import load_diabetes


@pytest.fixture(scope="module")
def synthetic() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1234)
    x = torch.randn(50, 3, generator=generator, dtype=F64)
    w = torch.tensor([1.0, -0.5, 0.25], dtype=F64)
    y = x @ w + 0.3 + NOISE * torch.randn(50, generator=generator, dtype=F64)
    return x, y


@pytest.fixture(scope="module")
def diabetes() -> tuple[torch.Tensor, torch.Tensor]:
    features, target = load_diabetes(return_X_y=True)
    x = standardize(torch.as_tensor(features, dtype=F64))
    y = standardize(torch.as_tensor(target, dtype=F64))
    return x, y


@pytest.fixture(params=["synthetic", "diabetes"])
def data(request: pytest.FixtureRequest) -> tuple[torch.Tensor, torch.Tensor]:
    return request.getfixturevalue(request.param)
