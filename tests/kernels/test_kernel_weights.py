"""Importance-weight bookkeeping of pyroext.kernels: the ULA, DAIS and MetFlow weights are
unbiased for a known normalising constant (MetFlow with MH misses exactly its infeasible paths),
and pathwise gradients match central finite differences. MCSE = across-chain sd / sqrt(B)."""

import math
from collections.abc import Callable

import pytest
import torch
from kernel_targets import (
    BASE,
    DIRECTION_LOGIT,
    DT,
    GAMMA_NORMAL,
    LOG_Z,
    as_tensor64,
    log_direction_prob,
    log_gamma,
    log_mixture,
    random_flow,
    sample_mixture,
    value_and_grad_mixture,
    weight_flow,
)
from torch import Tensor

from pyroext.kernels import (
    ConditionalCouplingFlow,
    HamiltonianState,
    Info,
    LangevinState,
    MetFlowState,
    dais_step,
    log_acceptance,
    metflow_step,
    ula_step,
    value_and_grad,
)

# ---------------------------------------------------------------------------------------------
# Unbiased normalising-constant estimates: E[w] = Z for the extended-space weights.

NUM_PARTICLES = 20_000


def _value_and_grad_gamma(z: Tensor) -> tuple[Tensor, Tensor]:
    return value_and_grad(log_gamma, z)


def _annealed(beta: float) -> Callable[[Tensor], tuple[Tensor, Tensor]]:
    """Value and gradient of the geometric path log(q0^(1 - beta) gamma^beta)."""

    def log_density(z: Tensor) -> Tensor:
        return (1 - beta) * BASE.log_prob(z) + beta * log_gamma(z)

    return lambda z: value_and_grad(log_density, z)


def _assert_unbiased(log_w: Tensor) -> None:
    w = log_w.exp()
    assert abs(w.mean() - math.exp(LOG_Z)) < 4 * w.std() / math.sqrt(len(w))
    # Jensen: E[log w] <= log Z (one-sided, within 4 MCSE).
    assert log_w.mean() - 4 * log_w.std() / math.sqrt(len(log_w)) < LOG_Z


def test_ula_weight_is_unbiased():
    torch.manual_seed(0)
    z0 = BASE.sample((NUM_PARTICLES,))
    log_w = -BASE.log_prob(z0)
    with torch.no_grad():
        state = LangevinState(z0, *_value_and_grad_gamma(z0))
        for _ in range(3):
            # + log r(z_{k-1} | z_k) - log m(z_k | z_{k-1}), the backward over forward kernel.
            state, info = ula_step(state, _value_and_grad_gamma, as_tensor64(0.15))
            log_w = log_w + info.log_weight_increment
    _assert_unbiased(log_w + log_gamma(state.position))


@pytest.mark.parametrize("damping", [0.0, 0.9])
def test_dais_weight_is_unbiased(damping):
    mass = as_tensor64([0.7, 1.5])
    torch.manual_seed(0)
    z0 = BASE.sample((NUM_PARTICLES,))
    state = HamiltonianState(z0, torch.randn(NUM_PARTICLES, 2, dtype=DT) * mass.sqrt())
    log_w = -BASE.log_prob(z0)
    with torch.no_grad():
        for beta in (0.3, 0.7, 1.0):
            # The annealed targets enter only through the dynamics; the weight needs just the
            # momentum-density increments (leapfrog preserves volume, the refresh is reversible).
            state, info = dais_step(
                state, _annealed(beta), as_tensor64(0.3), mass, as_tensor64(damping)
            )
            log_w = log_w + info.log_weight_increment
    _assert_unbiased(log_w + log_gamma(state.position))


METFLOW_CONTEXTS = as_tensor64([[0.3, -0.7], [-1.1, 0.4]])


def _metflow_chain(
    flow: ConditionalCouplingFlow,
    state: MetFlowState,
    log_target: Callable[[Tensor], Tensor],
    rule: str,
) -> tuple[MetFlowState, list[Info]]:
    """One MetFlow step per context in METFLOW_CONTEXTS; the final state and each step's info."""
    infos = []
    for u in METFLOW_CONTEXTS:
        state, info = metflow_step(
            state,
            log_target,
            lambda x, u=u: flow(x, u),
            lambda x, u=u: flow.inverse(x, u),
            DIRECTION_LOGIT,
            rule,
        )
        infos.append(info)
    return state, infos


def _metflow_log_weights(rule: str, num: int) -> tuple[Tensor, Tensor]:
    """MetFlow's extended-space log-weight with reverse model prod_k P(v_k) / 2.

    Returns (log w, sum_k log_jacobian) so that a wrong bookkeeping can be checked too.
    """
    flow = weight_flow()
    torch.manual_seed(0)
    z0 = BASE.sample((num,))
    state = MetFlowState(z0, log_gamma(z0))
    log_w, log_jacobian = -BASE.log_prob(z0), torch.zeros(num, dtype=DT)
    with torch.no_grad():
        state, infos = _metflow_chain(flow, state, log_gamma, rule)
    for info in infos:
        log_reverse = log_direction_prob(info.forward, DIRECTION_LOGIT) - math.log(2)
        log_w = log_w + info.log_jacobian - info.log_prob_choice + log_reverse
        log_jacobian = log_jacobian + info.log_jacobian
    return log_w + state.log_density, log_jacobian


def test_metflow_barker_weight_is_unbiased():
    log_w, log_jacobian = _metflow_log_weights("barker", 80_000)
    _assert_unbiased(log_w)
    # Power check: the same weights without the Jacobian terms are biased by many MCSE.
    w = (log_w - log_jacobian).exp()
    assert abs(w.mean() - math.exp(LOG_Z)) > 8 * w.std() / math.sqrt(len(w))


def _metflow_feasible_fraction(rule: str, num: int) -> Tensor:
    """P(path feasible) under gamma x r: reverse paths drawn exactly from the reverse model.

    A reverse step picks v ~ P and b ~ Bernoulli(1/2); the path is infeasible for the forward
    kernel if b = reject where the forward move would be accepted with probability 1 (MH;
    Barker's rejection probability 1 / (1 + t) is never 0).
    """
    flow = weight_flow()
    torch.manual_seed(1)
    z = GAMMA_NORMAL.sample((num,))
    feasible = torch.ones(num, dtype=torch.bool)
    with torch.no_grad():
        for u in METFLOW_CONTEXTS.flip(0):
            forward = torch.rand(num, dtype=DT) < torch.sigmoid(DIRECTION_LOGIT)
            accepted = torch.rand(num, dtype=DT) < 0.5
            undo = torch.where(forward.unsqueeze(-1), flow.inverse(z, u)[0], flow(z, u)[0])
            previous = torch.where(accepted.unsqueeze(-1), undo, z)
            y_forward, ldj_forward = flow(previous, u)
            y_backward, ldj_backward = flow.inverse(previous, u)
            proposal = torch.where(forward.unsqueeze(-1), y_forward, y_backward)
            log_ratio = (
                log_gamma(proposal)
                - log_gamma(previous)
                + torch.where(forward, ldj_forward, ldj_backward)
                + torch.where(forward, -DIRECTION_LOGIT, DIRECTION_LOGIT)
            )
            reject_prob = -torch.expm1(log_acceptance(log_ratio, rule)[0])
            feasible &= accepted | (reject_prob > 0)
            z = previous
    return feasible.double()


def test_metflow_mh_weight_misses_infeasible_paths():
    # With MH, a reverse path that rejects where alpha = 1 is never drawn forward, so
    # E[w] = Z P(feasible) < Z: the weight still gives a valid lower bound, but it is not the
    # unbiased estimate of Z that Barker's everywhere-positive rejection gives.
    log_w, _ = _metflow_log_weights("mh", 40_000)
    w = log_w.exp()
    feasible = _metflow_feasible_fraction("mh", 40_000)
    se_w, se_feasible = w.std() / math.sqrt(len(w)), feasible.std() / math.sqrt(len(feasible))
    normaliser = math.exp(LOG_Z)
    combined_se = torch.sqrt(se_w**2 + (normaliser * se_feasible) ** 2)
    assert abs(w.mean() - normaliser * feasible.mean()) < 4 * combined_se
    assert normaliser - w.mean() > 8 * se_w  # the deficit is real, not noise
    # Barker's reverse paths are all feasible: the same reference then reduces to Z.
    assert bool(_metflow_feasible_fraction("barker", 1000).all())


# ---------------------------------------------------------------------------------------------
# Pathwise gradients against central finite differences (fixed noise via the seed).


def _assert_matches_finite_differences(
    fn: Callable[[Tensor], Tensor], theta: Tensor, h: float = 1e-6
) -> None:
    jacobian = torch.autograd.functional.jacobian(fn, theta)
    basis = torch.eye(len(theta), dtype=DT)
    finite = torch.stack([(fn(theta + h * e) - fn(theta - h * e)) / (2 * h) for e in basis], -1)
    assert (jacobian.abs() > 1e-3).all()  # every derivative checked is non-trivial
    torch.testing.assert_close(jacobian, finite, rtol=1e-5, atol=1e-9)


def test_dais_pathwise_gradients():
    weights = as_tensor64([[0.7, -1.3]])

    def outputs(theta: Tensor) -> Tensor:
        step_size, damping, mass = theta[0], theta[1], theta[2:]
        torch.manual_seed(3)
        z = sample_mixture(8)
        state = HamiltonianState(z, torch.randn(8, 2, dtype=DT) * mass.sqrt())
        total = z.new_zeros(8)
        for _ in range(3):
            state, info = dais_step(state, value_and_grad_mixture, step_size, mass, damping)
            total = total + info.log_weight_increment
        return torch.stack([(state.position * weights).sum(), total.sum()])

    # theta = (step size, damping, mass_1, mass_2)
    _assert_matches_finite_differences(outputs, as_tensor64([0.4, 0.6, 0.8, 1.7]))


def test_ula_pathwise_gradients():
    weights = as_tensor64([[0.7, -1.3]])

    def outputs(theta: Tensor) -> Tensor:
        step_size, z0 = theta[0], theta[1:].reshape(2, 2)
        torch.manual_seed(4)
        state = LangevinState(z0, *value_and_grad_mixture(z0))
        log_w = -BASE.log_prob(z0)
        for _ in range(3):
            state, info = ula_step(state, value_and_grad_mixture, step_size)
            log_w = log_w + info.log_weight_increment
        log_w = log_w + log_mixture(state.position)
        return torch.stack([(state.position * weights).sum(), log_w.sum()])

    # theta = (step size, two initial positions)
    _assert_matches_finite_differences(outputs, as_tensor64([0.2, -0.4, 0.9, 1.1, -0.2]))


@pytest.mark.parametrize("rule", ["mh", "barker"])
def test_metflow_pathwise_gradients_in_flow_parameters(rule):
    flow = random_flow(2, context_dim=2, scale=0.5, seed=2)
    parameter, index, h = flow.couplings[0].nn.net.layers[0].weight, (1, 2), 1e-6

    def outputs() -> tuple[Tensor, Tensor]:
        torch.manual_seed(5)
        z = sample_mixture(16)
        state = MetFlowState(z, log_mixture(z))
        log_jacobian, log_choice, decisions = 0.0, 0.0, []
        _, infos = _metflow_chain(flow, state, log_mixture, rule)
        for info in infos:
            log_jacobian = log_jacobian + info.log_jacobian.sum()
            log_choice = log_choice + info.log_prob_choice.sum()
            decisions += [info.forward, info.accepted]
        return torch.stack([log_jacobian, log_choice]), torch.stack(decisions)

    values, decisions = outputs()
    autograd = torch.stack(
        [torch.autograd.grad(v, parameter, retain_graph=True)[0][index] for v in values]
    )
    with torch.no_grad():
        parameter[index] += h
        plus, decisions_plus = outputs()
        parameter[index] -= 2 * h
        minus, decisions_minus = outputs()
    # Same discrete choices on both sides, so the difference quotient sees only the path.
    assert torch.equal(decisions_plus, decisions) and torch.equal(decisions_minus, decisions)
    assert decisions[1::2].any() and not decisions[1::2].all()  # accepts and rejects both occur
    assert (autograd.abs() > 1e-3).all()
    torch.testing.assert_close(autograd, (plus - minus) / (2 * h), rtol=1e-5, atol=1e-9)
