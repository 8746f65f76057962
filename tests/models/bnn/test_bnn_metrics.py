"""The test metrics of Bayesian networks against hand computations:
:func:`~pyroext.models.bnn.predict.predictive_metrics` on hand-made outputs of classifiers and
regressions."""

import math

import pytest
import torch
from torch import Tensor

from pyroext.models.bnn.predict import predictive_metrics

F64 = torch.float64


# Mean predictive probabilities of two draws (p1 = mean + d, p2 = mean - d) at four points.
MEAN_PROBS = [
    [0.75, 0.15, 0.10],  # label 0: right, confidence bin (0.7, 0.8]
    [0.25, 0.55, 0.20],  # label 2: wrong, bin (0.5, 0.6]
    [0.78, 0.12, 0.10],  # label 1: wrong, bin (0.7, 0.8]
    [0.05, 0.10, 0.85],  # label 1: wrong, bin (0.8, 0.9]
]
SPREAD = [[0.1, -0.05, -0.05], [0.1, -0.1, 0.0], [-0.1, 0.05, 0.05], [0.0, 0.05, -0.05]]
LABELS = [0, 2, 1, 1]


def test_classification_metrics_by_hand() -> None:
    mean, spread = torch.tensor(MEAN_PROBS, dtype=F64), torch.tensor(SPREAD, dtype=F64)
    # logits: log-probabilities shifted by a constant per draw and point
    logits = torch.stack([(mean + spread).log() + 3.0, (mean - spread).log() - 1.5])
    metrics = predictive_metrics(logits, torch.tensor(LABELS))
    assert set(metrics) == {"error", "nll", "ece", "entropy"}
    assert metrics["error"] == pytest.approx(0.75)
    nll = -(math.log(0.75) + math.log(0.20) + math.log(0.12) + math.log(0.10)) / 4
    assert metrics["nll"] == pytest.approx(nll, rel=1e-12)
    # bin (0.7, 0.8]: |(1 - 0.75) + (0 - 0.78)|; then |0 - 0.55| and |0 - 0.85|
    assert metrics["ece"] == pytest.approx((0.53 + 0.55 + 0.85) / 4, rel=1e-12)
    entropy = -sum(p * math.log(p) for row in MEAN_PROBS for p in row) / 4
    assert metrics["entropy"] == pytest.approx(entropy, rel=1e-12)


def normal_cdf(z: float) -> float:
    return 0.5 * (1 + math.erf(z / math.sqrt(2)))


def test_regression_metrics_of_a_two_network_mixture_by_hand() -> None:
    noise = 0.5
    f1, f2 = [0.0, 1.0, -1.0, -1.0, 0.0], [0.2, 1.2, -0.8, -1.2, 0.4]
    y = [0.1, 3.0, -2.5, -1.85, 0.95]
    outputs = torch.tensor([f1, f2], dtype=F64)
    metrics = predictive_metrics(outputs, torch.tensor(y, dtype=F64), noise_scale=noise)
    assert set(metrics) == {"rmse", "nll", "coverage_90"}
    means = [(a + b) / 2 for a, b in zip(f1, f2, strict=True)]
    rmse = math.sqrt(sum((m - t) ** 2 for m, t in zip(means, y, strict=True)) / 5)
    assert metrics["rmse"] == pytest.approx(rmse, rel=1e-12)

    def density(t: float, f: float) -> float:
        return math.exp(-0.5 * ((t - f) / noise) ** 2) / (noise * math.sqrt(2 * math.pi))

    nll = -sum(
        math.log((density(t, a) + density(t, b)) / 2) for t, a, b in zip(y, f1, f2, strict=True)
    )
    assert metrics["nll"] == pytest.approx(nll / 5, rel=1e-10)
    cdfs = [
        (normal_cdf((t - a) / noise) + normal_cdf((t - b) / noise)) / 2
        for t, a, b in zip(y, f1, f2, strict=True)
    ]
    # about 0.5 (inside), 1.0 and 0.001 (outside), 0.071 and 0.918 (inside, near the ends)
    assert [0.05 < c < 0.95 for c in cdfs] == [True, False, False, True, True]
    assert 0.06 < cdfs[3] < 0.08 and 0.91 < cdfs[4] < 0.93
    assert metrics["coverage_90"] == pytest.approx(3 / 5)


def test_regression_metrics_of_one_network_are_gaussian() -> None:
    # S = 1: the central 90% interval is f +- 1.645 noise
    outputs, y, noise = torch.tensor([[0.0, 0.0, 2.0]]), torch.tensor([1.0, 3.0, 2.5]), 1.0
    metrics = predictive_metrics(outputs, y, noise_scale=noise)
    assert metrics["rmse"] == pytest.approx(math.sqrt((1 + 9 + 0.25) / 3), rel=1e-6)
    nll = 0.5 * math.log(2 * math.pi) + (1 + 9 + 0.25) / 6
    assert metrics["nll"] == pytest.approx(nll, rel=1e-6)
    assert metrics["coverage_90"] == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    "outputs, y, noise, message",
    [
        (torch.zeros(2, 3, 4), torch.zeros(3).long(), 1.0, "noise_scale is needed for regression"),
        (torch.zeros(2, 3), torch.zeros(3), None, "noise_scale is needed for regression"),
        (
            torch.zeros(2, 3),
            torch.zeros(4),
            1.0,
            r"\(S, N, C\) and y \(N,\) expected, got shapes \(2, 3\) and \(4,\)",
        ),
        (torch.zeros(3), torch.zeros(3), 1.0, r"got shapes \(3,\) and \(3,\)"),
    ],
)
def test_predictive_metrics_refuses_bad_input(
    outputs: Tensor, y: Tensor, noise: float | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        predictive_metrics(outputs, y, noise_scale=noise)
