"""Predictions of Bayes-by-backprop networks: predictive mean, entropy and calibration against
hand computations, out-of-distribution entropy on digits, and VIME's information gain."""

import math

import pyro
import pytest
import torch
from pyro.infer import SVI, TraceMeanField_ELBO
from sklearn.datasets import load_digits
from torch import nn

from pyroext.models.bnn import BayesianMLP
from pyroext.models.bnn.guide import AutoBayesByBackprop
from pyroext.models.bnn.predict import (
    expected_calibration_error,
    information_gain,
    predictive_entropy,
    predictive_mean,
)


def train(model, guide, batches, steps, particles=1):
    elbo = TraceMeanField_ELBO(
        num_particles=particles, vectorize_particles=True, max_plate_nesting=1
    )
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 1e-2}), elbo)
    for _ in range(steps):
        svi.step(*next(batches))


@pytest.fixture(scope="module")
def sine_fit():
    """A 1-32-1 tanh network fitted to y = sin(2x) + N(0, 0.1^2) on [-2, 2] (known noise)."""
    pyro.set_rng_seed(0)
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(100, 1, generator=generator) * 4 - 2
    y = torch.sin(2 * x[:, 0]) + 0.1 * torch.randn(100, generator=generator)
    net = nn.Sequential(nn.Linear(1, 32), nn.Tanh(), nn.Linear(32, 1))
    model = BayesianMLP(net, noise_scale=0.1)
    guide = AutoBayesByBackprop(model, local_reparameterization=True)
    train(model, guide, iter(lambda: (x, y), None), steps=600, particles=4)
    return model, guide


@pytest.fixture(scope="module")
def digits_fit():
    """A 64-50-10 ReLU classifier trained on 1400 of sklearn's digits (minibatches of 128)."""
    pyro.set_rng_seed(0)
    digits = load_digits()
    x = torch.tensor(digits.data / 16, dtype=torch.float32)
    y = torch.tensor(digits.target)
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(len(x), generator=generator)
    train_index, test_index = order[:1400], order[1400:]
    net = nn.Sequential(nn.Linear(64, 50), nn.ReLU(), nn.Linear(50, 10))
    model = BayesianMLP(net, likelihood="categorical")
    guide = AutoBayesByBackprop(model, init_scale=1e-3, local_reparameterization=True)

    def batches():
        while True:
            index = train_index[torch.randint(1400, (128,), generator=generator)]
            yield x[index], y[index], 1400

    train(model, guide, batches(), steps=500)
    noise = torch.rand(len(test_index), 64, generator=generator)
    return model, guide, x[test_index], y[test_index], noise


def test_predictive_entropy_by_hand():
    probs = torch.tensor([[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3], [0.5, 0.5, 0.0]])
    expected = torch.tensor([0.0, math.log(3), math.log(2)])
    assert torch.allclose(predictive_entropy(probs), expected, atol=1e-6)


def test_expected_calibration_error_by_hand():
    probs = torch.tensor(
        [
            [0.90, 0.05, 0.05],  # bin (0.8, 1]: right
            [0.85, 0.10, 0.05],  # bin (0.8, 1]: wrong
            [0.70, 0.20, 0.10],  # bin (0.6, 0.8]: right
            [0.10, 0.65, 0.25],  # bin (0.6, 0.8]: wrong
            [0.50, 0.30, 0.20],  # bin (0.4, 0.6]: right
            [0.38, 0.32, 0.30],  # bin (0.2, 0.4]: wrong
        ],
        dtype=torch.float64,
    )
    labels = torch.tensor([0, 1, 0, 2, 0, 1])
    # (2 |1/2 - 0.875| + 2 |1/2 - 0.675| + |1 - 0.5| + |0 - 0.38|) / 6
    assert expected_calibration_error(probs, labels, num_bins=5) == pytest.approx(0.33)
    # one bin: |accuracy 3/6 - mean confidence 3.98/6|
    assert expected_calibration_error(probs, labels, num_bins=1) == pytest.approx(0.98 / 6)


def test_predictive_mean_of_linear_network_is_mean_weights():
    """For a network without hidden layer E_q[f(x)] = x m_W^T + m_b exactly, whatever q."""
    x = torch.randn(7, 3, dtype=torch.float64)
    model = BayesianMLP(nn.Sequential(nn.Linear(3, 1, dtype=torch.float64)), noise_scale=1.0)
    guide = AutoBayesByBackprop(model, init_scale=0.5)
    num = 4000
    estimate = predictive_mean(model, guide, x, num_samples=num)
    (w_loc, w_scale), (b_loc, b_scale) = guide.locs_and_scales().values()
    mean = (x @ w_loc.T).squeeze(-1) + b_loc
    sd = ((x.square() @ w_scale.square().T).squeeze(-1) + b_scale.square()).sqrt()
    assert ((estimate - mean).abs() < 4 * sd / math.sqrt(num)).all()


def test_regression_fit_predicts_the_function(sine_fit):
    model, guide = sine_fit
    x = torch.linspace(-1.5, 1.5, 7)[:, None]
    error = predictive_mean(model, guide, x, num_samples=200) - torch.sin(2 * x[:, 0])
    assert error.abs().max() < 0.1


def test_digits_are_classified_and_noise_images_are_uncertain(digits_fit):
    model, guide, x, y, noise = digits_fit
    probs = predictive_mean(model, guide, x, num_samples=100)
    assert (probs.argmax(-1) == y).float().mean() > 0.9
    assert expected_calibration_error(probs, y) < 0.1
    entropy = predictive_entropy(probs)
    noise_entropy = predictive_entropy(predictive_mean(model, guide, noise, num_samples=100))
    assert noise_entropy.mean() > 2 * entropy.mean()
    # most noise images are more uncertain than the typical digit
    assert (noise_entropy > entropy.median()).float().mean() > 0.8


def test_information_gain_is_larger_for_a_surprising_point(sine_fit):
    model, guide = sine_fit
    before = {
        name: (loc.clone(), scale.clone())
        for name, (loc, scale) in guide.locs_and_scales().items()
    }
    x = torch.tensor([[0.5]])
    expected = torch.sin(torch.tensor([1.0]))
    gains = [information_gain(model, guide, x, expected + shift) for shift in (0.0, 1.0)]
    assert all(gain >= 0 for gain in gains)
    assert gains[1] > 100 * gains[0]
    far = information_gain(model, guide, torch.tensor([[4.0]]), torch.sin(torch.tensor([8.0])))
    assert far > gains[0]
    for name, (loc, scale) in guide.locs_and_scales().items():  # the guide is left as it was
        assert torch.equal(loc, before[name][0]) and torch.equal(scale, before[name][1])


BAD_CALLS = {
    "probs sum": (
        lambda: predictive_entropy(torch.tensor([0.5, 0.6])),
        "probs must be non-negative and sum to 1 along the last dimension",
    ),
    "probs sign": (
        lambda: predictive_entropy(torch.tensor([1.5, -0.5])),
        "probs must be non-negative and sum to 1 along the last dimension",
    ),
    "ece shapes": (
        lambda: expected_calibration_error(torch.full((3, 2), 0.5), torch.zeros(2).long()),
        r"probs \(N, C\) and labels \(N,\) expected with N >= 1, got shapes \(3, 2\) and \(2,\)",
    ),
    "ece labels": (
        lambda: expected_calibration_error(torch.full((3, 2), 0.5), torch.tensor([0, 2, 1])),
        r"labels must be integers in \[0, 2\)",
    ),
    "ece bins": (
        lambda: expected_calibration_error(
            torch.full((3, 2), 0.5), torch.zeros(3).long(), num_bins=0
        ),
        "num_bins=0 must be an integer >= 1",
    ),
}


@pytest.mark.parametrize("case", BAD_CALLS)
def test_bad_input_raises_value_error(case):
    call, message = BAD_CALLS[case]
    with pytest.raises(ValueError, match=message):
        call()


def test_bad_options_of_model_helpers(sine_fit):
    model, guide = sine_fit
    x, y = torch.zeros(1, 1), torch.zeros(1)
    with pytest.raises(ValueError, match="num_samples=0 must be an integer >= 1"):
        predictive_mean(model, guide, x, num_samples=0)
    with pytest.raises(ValueError, match="step_size=0.0 must be a finite number > 0"):
        information_gain(model, guide, x, y, step_size=0.0)
    with pytest.raises(ValueError, match="num_steps=0 must be an integer >= 1"):
        information_gain(model, guide, x, y, num_steps=0)
    with pytest.raises(ValueError, match=r"x must have shape \(B, 1\), got \(1, 2\)"):
        information_gain(model, guide, torch.zeros(1, 2), y)
