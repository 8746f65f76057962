"""Correctness of pyroext.kernels: acceptance rules against closed forms, the coupling flow
against autograd Jacobians, and invariance of every corrected kernel (chains started exactly in
a Gaussian-mixture target keep its first and second moments within 4 MCSE, while deliberately
wrong kernels visibly do not)."""

import math
from collections.abc import Callable

import pytest
import torch
from kernel_targets import (
    DIRECTION_LOGIT,
    DT,
    as_tensor64,
    grad_log_mixture,
    log_mixture,
    mixture_z_scores,
    random_flow,
    sample_mixture,
    value_and_grad_mixture,
    z_scores,
)
from torch import Tensor

from pyroext.kernels import (
    ConditionalCouplingFlow,
    HamiltonianState,
    LangevinState,
    MetFlowState,
    gaussian_momentum_log_prob,
    hmc_step,
    leapfrog,
    log_acceptance,
    mala_step,
    metflow_step,
    ula_step,
    value_and_grad,
)

# ---------------------------------------------------------------------------------------------
# Acceptance rules

LOG_RATIOS = [-30.0, -3.0, -0.5, -1e-10, 0.0, 0.7, 5.0, 40.0]


def test_barker_acceptance_matches_closed_form():
    log_accept, log_reject = log_acceptance(as_tensor64(LOG_RATIOS), "barker")
    # log(t / (1 + t)) and log(1 / (1 + t)), written stably in Python floats.
    expected_accept = [r - math.log1p(math.exp(r)) for r in LOG_RATIOS]
    expected_reject = [-math.log1p(math.exp(r)) for r in LOG_RATIOS]
    torch.testing.assert_close(log_accept, as_tensor64(expected_accept), rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(log_reject, as_tensor64(expected_reject), rtol=1e-12, atol=1e-15)


def test_mh_acceptance_matches_closed_form_with_floor():
    log_accept, log_reject = log_acceptance(as_tensor64(LOG_RATIOS), "mh")
    expected_accept = [min(0.0, r) for r in LOG_RATIOS]
    # log(1 - min(1, t)) floored at log(1e-8): -1e-10, 0 and positive ratios hit the floor.
    expected_reject = [math.log(max(-math.expm1(min(0.0, r)), 1e-8)) for r in LOG_RATIOS]
    assert expected_reject[3:] == [math.log(1e-8)] * 5
    torch.testing.assert_close(log_accept, as_tensor64(expected_accept), rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(log_reject, as_tensor64(expected_reject), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("rule", ["barker", "mh"])
def test_acceptance_derivatives(rule):
    # d/dr log alpha and d/dr log(1 - alpha) at r = -0.5, against the closed forms.
    log_ratio = as_tensor64(-0.5).requires_grad_()
    log_accept, log_reject = log_acceptance(log_ratio, rule)
    d_accept = torch.autograd.grad(log_accept, log_ratio, retain_graph=True)[0]
    d_reject = torch.autograd.grad(log_reject, log_ratio)[0]
    t = math.exp(-0.5)
    expected = (1 / (1 + t), -t / (1 + t)) if rule == "barker" else (1.0, -t / (1 - t))
    torch.testing.assert_close(d_accept, as_tensor64(expected[0]), rtol=1e-12, atol=0)
    torch.testing.assert_close(d_reject, as_tensor64(expected[1]), rtol=1e-12, atol=0)


def test_unknown_acceptance_rule_raises():
    with pytest.raises(ValueError, match="acceptance='metropolis'"):
        log_acceptance(as_tensor64(0.0), "metropolis")


# ---------------------------------------------------------------------------------------------
# ConditionalCouplingFlow


@pytest.mark.parametrize("dim", [1, 2, 3, 5])
def test_coupling_flow_inverts_and_reports_log_det(dim):
    flow = random_flow(dim, context_dim=3, scale=0.5, seed=dim)
    context = torch.randn(3, dtype=DT)
    z = torch.randn(64, dim, dtype=DT)
    y, log_det = flow(z, context)
    assert (y - z).abs().max() > 0.1  # the map is not the identity
    back, inverse_log_det = flow.inverse(y, context)
    torch.testing.assert_close(back, z, rtol=0, atol=1e-10)
    torch.testing.assert_close(inverse_log_det, -log_det, rtol=0, atol=1e-10)
    for point in z[:4]:
        jacobian = torch.autograd.functional.jacobian(lambda x: flow(x, context)[0], point)
        expected = torch.linalg.slogdet(jacobian).logabsdet
        torch.testing.assert_close(flow(point, context)[1], expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("dim", [1, 2, 3, 5])
def test_coupling_flow_every_parameter_gets_a_gradient(dim):
    flow = random_flow(dim, context_dim=3, scale=0.5, seed=10 + dim)
    context = torch.randn(3, dtype=DT)
    z = torch.randn(32, dim, dtype=DT)
    y, log_det = flow(z, context)
    x, inverse_log_det = flow.inverse(z, context)
    (y.square().sum() + log_det.sum() + x.square().sum() + inverse_log_det.sum()).backward()
    for name, parameter in flow.named_parameters():
        assert parameter.grad is not None, name
        assert parameter.grad.abs().sum() > 0, name


@pytest.mark.parametrize(("dim", "num_couplings"), [(1, 1), (2, 2), (3, 3), (5, 2)])
def test_coupling_flow_starts_at_identity(dim, num_couplings):
    # Documented: the flow is initialised at the identity (so MetFlow starts at its base).
    flow = ConditionalCouplingFlow(dim, 2, num_couplings).to(DT)
    z = torch.randn(8, dim, dtype=DT)
    y, log_det = flow(z, torch.randn(2, dtype=DT))
    torch.testing.assert_close(y, z, rtol=0, atol=0)
    torch.testing.assert_close(log_det, torch.zeros(8, dtype=DT), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"dim": 0}, "dim=0"), ({"num_couplings": 0}, "num_couplings=0")],
)
def test_coupling_flow_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ConditionalCouplingFlow(**{"dim": 2, "context_dim": 2, **kwargs})


def test_coupling_flow_rejects_zero_hidden_dim():
    with pytest.raises(ValueError, match="hidden_dim=0"):
        ConditionalCouplingFlow(2, 2, hidden_dim=0)


# ---------------------------------------------------------------------------------------------
# Invariance: chains started exactly in the mixture must keep its moments.

NUM_CHAINS = 10_000
NUM_STEPS = 15
HMC_MASS = as_tensor64([0.5, 2.0])


def _run_metflow(rule: str, drop_jacobian: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    flow = random_flow(2, context_dim=2, scale=0.5, seed=2)
    context = as_tensor64([0.3, -0.7])

    def without_jacobian(move: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        return move[0], torch.zeros_like(move[1])

    wrap = without_jacobian if drop_jacobian else (lambda move: move)
    torch.manual_seed(0)
    z = sample_mixture(NUM_CHAINS)
    state = MetFlowState(z, log_mixture(z))
    forward, accepted = [], []
    with torch.no_grad():
        for _ in range(NUM_STEPS):
            state, info = metflow_step(
                state,
                log_mixture,
                lambda x: wrap(flow(x, context)),
                lambda x: wrap(flow.inverse(x, context)),
                DIRECTION_LOGIT,
                rule,
            )
            forward.append(info.forward)
            accepted.append(info.accepted)
    return state.position, torch.stack(forward), torch.stack(accepted)


@pytest.mark.parametrize("rule", ["mh", "barker"])
def test_metflow_leaves_mixture_invariant(rule):
    position, forward, accepted = _run_metflow(rule)
    assert mixture_z_scores(position).abs().max() < 4
    # Directions are Bernoulli(0.3) draws: their frequency within 4 binomial MCSE ...
    frequency = forward.double().mean()
    assert abs(frequency - 0.3) < 4 * math.sqrt(0.3 * 0.7 / forward.numel())
    # ... and both T and T^-1 moves are accepted often (the chains really move).
    assert (forward & accepted).double().mean() > 0.05
    assert (~forward & accepted).double().mean() > 0.05


@pytest.mark.parametrize("rule", ["mh", "barker"])
def test_metflow_without_jacobian_is_detected(rule):
    # Power check: dropping log|det| from the ratio biases the moments by many MCSE.
    position, _, _ = _run_metflow(rule, drop_jacobian=True)
    assert mixture_z_scores(position).abs().max() > 8


def _hmc_no_flip_step(
    state: HamiltonianState, step_size: Tensor, damping: Tensor
) -> HamiltonianState:
    """Generalised HMC that keeps (instead of negating) the momentum on rejection: wrong."""
    noise = torch.randn_like(state.momentum) * HMC_MASS.sqrt()
    momentum = damping * state.momentum + (1 - damping**2).sqrt() * noise
    position, proposal = state.position, momentum
    for _ in range(3):
        position, proposal = leapfrog(position, proposal, grad_log_mixture, step_size, HMC_MASS)
    log_ratio = (
        log_mixture(position)
        - log_mixture(state.position)
        + gaussian_momentum_log_prob(proposal, HMC_MASS)
        - gaussian_momentum_log_prob(momentum, HMC_MASS)
    )
    keep = (torch.rand_like(log_ratio).log() < log_acceptance(log_ratio, "mh")[0]).unsqueeze(-1)
    return HamiltonianState(
        torch.where(keep, position, state.position), torch.where(keep, proposal, momentum)
    )


def _hmc_initial_state() -> HamiltonianState:
    torch.manual_seed(0)
    z = sample_mixture(NUM_CHAINS)
    return HamiltonianState(z, torch.randn(NUM_CHAINS, 2, dtype=DT) * HMC_MASS.sqrt())


@pytest.mark.parametrize(("damping", "rule"), [(0.0, "mh"), (0.7, "mh"), (0.7, "barker")])
def test_hmc_leaves_target_and_momentum_invariant(damping, rule):
    state, accepted = _hmc_initial_state(), []
    with torch.no_grad():
        for _ in range(NUM_STEPS):
            state, info = hmc_step(
                state,
                value_and_grad_mixture,
                as_tensor64(0.8),
                HMC_MASS,
                as_tensor64(damping),
                3,
                rule,
            )
            accepted.append(info.accepted)
    assert torch.stack(accepted).double().mean() < 0.75  # the correction is doing real work
    assert mixture_z_scores(state.position).abs().max() < 4
    # The momentum marginal stays N(0, diag(mass)).
    v = state.momentum
    momentum_stats = torch.stack(
        [v[:, 0] ** 2 / HMC_MASS[0], v[:, 1] ** 2 / HMC_MASS[1], v[:, 0] * v[:, 1]], -1
    )
    assert z_scores(momentum_stats, as_tensor64([1.0, 1.0, 0.0])).abs().max() < 4


def test_hmc_without_momentum_flip_is_detected():
    # Power check: with partial refresh, keeping the momentum on rejection breaks invariance.
    state = _hmc_initial_state()
    with torch.no_grad():
        for _ in range(NUM_STEPS):
            state = _hmc_no_flip_step(state, as_tensor64(0.8), as_tensor64(0.7))
    assert mixture_z_scores(state.position).abs().max() > 8


def _run_langevin(kernel: str, step_size: float) -> tuple[Tensor, Tensor]:
    torch.manual_seed(0)
    z = sample_mixture(NUM_CHAINS)
    accepted = []
    with torch.no_grad():
        state = LangevinState(z, *value_and_grad_mixture(z))
        for _ in range(NUM_STEPS):
            if kernel == "ula":
                state, info = ula_step(state, value_and_grad_mixture, as_tensor64(step_size))
            else:
                state, info = mala_step(
                    state, value_and_grad_mixture, as_tensor64(step_size), kernel
                )
            accepted.append(info.accepted)
    return state.position, torch.stack(accepted)


@pytest.mark.parametrize("rule", ["mh", "barker"])
def test_mala_leaves_mixture_invariant(rule):
    position, accepted = _run_langevin(rule, 0.5)
    assert accepted.double().mean() < 0.75  # the correction is doing real work
    assert mixture_z_scores(position).abs().max() < 4


def test_ula_at_the_same_step_size_is_detected():
    # Power check: without the MH correction the same Langevin moves inflate the variance.
    position, _ = _run_langevin("ula", 0.5)
    assert mixture_z_scores(position).abs().max() > 8


# ---------------------------------------------------------------------------------------------
# value_and_grad

QUAD_PRECISION = as_tensor64([[2.0, 0.5], [0.5, 1.0]])


def _quadratic(center: Tensor) -> Callable[[Tensor], Tensor]:
    def log_density(x: Tensor) -> Tensor:
        diff = x - center
        return -0.5 * ((diff @ QUAD_PRECISION) * diff).sum(-1) + 0.25

    return log_density


def test_value_and_grad_of_quadratic():
    center = as_tensor64([0.3, -0.2])
    x = torch.randn(5, 2, dtype=DT)
    value, grad = value_and_grad(_quadratic(center), x)
    diff = x - center
    torch.testing.assert_close(value, -0.5 * ((diff @ QUAD_PRECISION) * diff).sum(-1) + 0.25)
    torch.testing.assert_close(grad, -diff @ QUAD_PRECISION, rtol=1e-13, atol=1e-14)


def test_value_and_grad_is_detached_under_no_grad():
    center = as_tensor64([0.3, -0.2]).requires_grad_()
    x = torch.randn(5, 2, dtype=DT)
    with torch.no_grad():
        value, grad = value_and_grad(_quadratic(center), x)
    assert not value.requires_grad and not grad.requires_grad
    torch.testing.assert_close(grad, -(x - center.detach()) @ QUAD_PRECISION)


def test_value_and_grad_is_differentiable_when_training():
    # grad = -P (x - c): d/dc sum_b w_b . grad_b = P^T sum_b w_b and d/dx (w . grad) = -P^T w.
    center = as_tensor64([0.3, -0.2]).requires_grad_()
    x = torch.randn(5, 2, dtype=DT).requires_grad_()
    weights = torch.randn(5, 2, dtype=DT)
    _, grad = value_and_grad(_quadratic(center), x)
    d_center, d_x = torch.autograd.grad((grad * weights).sum(), (center, x))
    torch.testing.assert_close(d_center, weights.sum(0) @ QUAD_PRECISION, rtol=1e-13, atol=1e-14)
    torch.testing.assert_close(d_x, -weights @ QUAD_PRECISION, rtol=1e-13, atol=1e-14)
