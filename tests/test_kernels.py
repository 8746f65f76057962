"""Correctness of pyroext.kernels against exact references.

Acceptance rules against closed forms; the coupling flow against autograd Jacobians;
invariance of every corrected kernel (chains started exactly in a Gaussian-mixture target must
keep its first and second moments, while deliberately wrong kernels visibly do not);
unbiasedness of the ULA, DAIS and MetFlow importance weights for a target with a known
normalising constant; and pathwise gradients against central finite differences.
Monte Carlo checks use B i.i.d. parallel chains, so the Monte Carlo standard error (MCSE) of a
mean is the across-chain standard deviation over sqrt(B); tolerances are 4 MCSE.
"""

import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from pyroext.kernels import (
    ConditionalCouplingFlow,
    DAISState,
    LangevinState,
    MetFlowState,
    dais_step,
    gaussian_momentum_log_prob,
    hmc_step,
    leapfrog,
    log_acceptance,
    mala_step,
    metflow_step,
    ula_step,
    value_and_grad,
)

DT = torch.float64

# Invariance target: a correlated two-component Gaussian mixture in 2-D (exact moments below).
MIX_WEIGHTS = torch.tensor([0.35, 0.65], dtype=DT)
MIX_MEANS = torch.tensor([[-1.0, 0.8], [1.0, -0.5]], dtype=DT)
MIX_COVS = torch.tensor([[[0.5, 0.2], [0.2, 0.4]], [[0.6, -0.25], [-0.25, 0.5]]], dtype=DT)
MIX_COMPONENTS = torch.distributions.MultivariateNormal(MIX_MEANS, MIX_COVS)

# Weight target: gamma = Z N(m, S) with known Z; base q0 = N(mu0, s0^2 I), shifted and wide
# enough that every importance weight below has a finite variance (so the MCSE is meaningful).
LOG_Z = 1.3
GAMMA_NORMAL = torch.distributions.MultivariateNormal(
    torch.tensor([0.5, -0.3], dtype=DT), torch.tensor([[1.0, 0.6], [0.6, 0.8]], dtype=DT)
)
BASE = torch.distributions.Independent(
    torch.distributions.Normal(
        torch.tensor([0.3, -0.1], dtype=DT), torch.full((2,), 2.0, dtype=DT)
    ),
    1,
)


def _t(value: float | list) -> Tensor:
    return torch.tensor(value, dtype=DT)


def _log_mixture(z: Tensor) -> Tensor:
    return torch.logsumexp(MIX_WEIGHTS.log() + MIX_COMPONENTS.log_prob(z.unsqueeze(-2)), -1)


def _grad_log_mixture(z: Tensor) -> Tensor:
    return value_and_grad(_log_mixture, z)[1]


def _sample_mixture(n: int) -> Tensor:
    component = torch.multinomial(MIX_WEIGHTS, n, replacement=True)
    noise = torch.randn(n, 2, 1, dtype=DT)
    return MIX_MEANS[component] + (torch.linalg.cholesky(MIX_COVS)[component] @ noise)[..., 0]


def _mixture_statistics(z: Tensor) -> Tensor:
    """Per-chain z1, z2, z1^2, z2^2, z1 z2."""
    return torch.stack([z[:, 0], z[:, 1], z[:, 0] ** 2, z[:, 1] ** 2, z[:, 0] * z[:, 1]], -1)


def _exact_mixture_statistics() -> Tensor:
    mean = (MIX_WEIGHTS[:, None] * MIX_MEANS).sum(0)
    outer = MIX_MEANS[:, :, None] * MIX_MEANS[:, None, :]
    second = (MIX_WEIGHTS[:, None, None] * (MIX_COVS + outer)).sum(0)
    return torch.stack([mean[0], mean[1], second[0, 0], second[1, 1], second[0, 1]])


def _z_scores(samples: Tensor, exact: Tensor) -> Tensor:
    """(mean - exact) / MCSE over i.i.d. chains along dim 0."""
    se = samples.std(0) / math.sqrt(samples.shape[0])
    return (samples.mean(0) - exact) / se


def _mixture_z_scores(z: Tensor) -> Tensor:
    return _z_scores(_mixture_statistics(z), _exact_mixture_statistics())


def _log_gamma(z: Tensor) -> Tensor:
    return LOG_Z + GAMMA_NORMAL.log_prob(z)


def _random_flow(dim: int, context_dim: int, scale: float, seed: int) -> ConditionalCouplingFlow:
    # Every parameter redrawn, the (zero-initialised) output layers included: a non-trivial map.
    torch.manual_seed(seed)
    flow = ConditionalCouplingFlow(dim, context_dim).to(DT)
    with torch.no_grad():
        for parameter in flow.parameters():
            parameter.normal_(0.0, scale)
    return flow


def _weight_flow() -> ConditionalCouplingFlow:
    """A random flow whose log-scales are constant in z (nonzero, set by the output biases).

    With z-dependent log-scales the tanh saturates in the tails, where the flow then contracts
    by e^-1 per layer; for K = 2 steps that makes the MetFlow weight's variance infinite for
    this base, and a mean check within 4 MCSE meaningless.
    """
    flow = _random_flow(2, context_dim=2, scale=0.3, seed=2)
    with torch.no_grad():
        for coupling in flow.couplings:
            coupling.nn.net.layers[-1].weight[1:].zero_()  # outputs: (shift, log-scale)
    return flow


def _log_direction_prob(forward: Tensor, logit: Tensor) -> Tensor:
    return torch.where(forward, F.logsigmoid(logit), F.logsigmoid(-logit))


# ---------------------------------------------------------------------------------------------
# Acceptance rules

LOG_RATIOS = [-30.0, -3.0, -0.5, -1e-10, 0.0, 0.7, 5.0, 40.0]


def test_barker_acceptance_matches_closed_form():
    log_accept, log_reject = log_acceptance(_t(LOG_RATIOS), "barker")
    # log(t / (1 + t)) and log(1 / (1 + t)), written stably in Python floats.
    expected_accept = [r - math.log1p(math.exp(r)) for r in LOG_RATIOS]
    expected_reject = [-math.log1p(math.exp(r)) for r in LOG_RATIOS]
    torch.testing.assert_close(log_accept, _t(expected_accept), rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(log_reject, _t(expected_reject), rtol=1e-12, atol=1e-15)


def test_mh_acceptance_matches_closed_form_with_floor():
    log_accept, log_reject = log_acceptance(_t(LOG_RATIOS), "mh")
    expected_accept = [min(0.0, r) for r in LOG_RATIOS]
    # log(1 - min(1, t)) floored at log(1e-8): -1e-10, 0 and positive ratios hit the floor.
    expected_reject = [math.log(max(-math.expm1(min(0.0, r)), 1e-8)) for r in LOG_RATIOS]
    assert expected_reject[3:] == [math.log(1e-8)] * 5
    torch.testing.assert_close(log_accept, _t(expected_accept), rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(log_reject, _t(expected_reject), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("rule", ["barker", "mh"])
def test_acceptance_derivatives(rule):
    # d/dr log alpha and d/dr log(1 - alpha) at r = -0.5, against the closed forms.
    log_ratio = _t(-0.5).requires_grad_()
    log_accept, log_reject = log_acceptance(log_ratio, rule)
    d_accept = torch.autograd.grad(log_accept, log_ratio, retain_graph=True)[0]
    d_reject = torch.autograd.grad(log_reject, log_ratio)[0]
    t = math.exp(-0.5)
    expected = (1 / (1 + t), -t / (1 + t)) if rule == "barker" else (1.0, -t / (1 - t))
    torch.testing.assert_close(d_accept, _t(expected[0]), rtol=1e-12, atol=0)
    torch.testing.assert_close(d_reject, _t(expected[1]), rtol=1e-12, atol=0)


def test_unknown_acceptance_rule_raises():
    with pytest.raises(ValueError, match="acceptance='metropolis'"):
        log_acceptance(_t(0.0), "metropolis")


# ---------------------------------------------------------------------------------------------
# ConditionalCouplingFlow


@pytest.mark.parametrize("dim", [1, 2, 3, 5])
def test_coupling_flow_inverts_and_reports_log_det(dim):
    flow = _random_flow(dim, context_dim=3, scale=0.5, seed=dim)
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
    flow = _random_flow(dim, context_dim=3, scale=0.5, seed=10 + dim)
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
DIRECTION_LOGIT = _t(math.log(0.3 / 0.7))  # P(propose T) = 0.3
HMC_MASS = _t([0.5, 2.0])


def _run_metflow(rule: str, drop_jacobian: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    flow = _random_flow(2, context_dim=2, scale=0.5, seed=2)
    context = _t([0.3, -0.7])

    def without_jacobian(move: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        return move[0], torch.zeros_like(move[1])

    wrap = without_jacobian if drop_jacobian else (lambda move: move)
    torch.manual_seed(0)
    z = _sample_mixture(NUM_CHAINS)
    state = MetFlowState(z, _log_mixture(z))
    forward, accepted = [], []
    with torch.no_grad():
        for _ in range(NUM_STEPS):
            state, info = metflow_step(
                state,
                _log_mixture,
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
    assert _mixture_z_scores(position).abs().max() < 4
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
    assert _mixture_z_scores(position).abs().max() > 8


def _hmc_no_flip_step(state: DAISState, step_size: Tensor, damping: Tensor) -> DAISState:
    """Generalised HMC that keeps (instead of negating) the momentum on rejection: wrong."""
    noise = torch.randn_like(state.momentum) * HMC_MASS.sqrt()
    momentum = damping * state.momentum + (1 - damping**2).sqrt() * noise
    position, proposal = state.position, momentum
    for _ in range(3):
        position, proposal = leapfrog(position, proposal, _grad_log_mixture, step_size, HMC_MASS)
    log_ratio = (
        _log_mixture(position)
        - _log_mixture(state.position)
        + gaussian_momentum_log_prob(proposal, HMC_MASS)
        - gaussian_momentum_log_prob(momentum, HMC_MASS)
    )
    keep = (torch.rand_like(log_ratio).log() < log_acceptance(log_ratio, "mh")[0]).unsqueeze(-1)
    return DAISState(
        torch.where(keep, position, state.position), torch.where(keep, proposal, momentum)
    )


def _hmc_initial_state() -> DAISState:
    torch.manual_seed(0)
    z = _sample_mixture(NUM_CHAINS)
    return DAISState(z, torch.randn(NUM_CHAINS, 2, dtype=DT) * HMC_MASS.sqrt())


@pytest.mark.parametrize(("damping", "rule"), [(0.0, "mh"), (0.7, "mh"), (0.7, "barker")])
def test_hmc_leaves_target_and_momentum_invariant(damping, rule):
    state, accepted = _hmc_initial_state(), []
    with torch.no_grad():
        for _ in range(NUM_STEPS):
            state, info = hmc_step(
                state, _log_mixture, _grad_log_mixture, _t(0.8), HMC_MASS, _t(damping), 3, rule
            )
            accepted.append(info.accepted)
    assert torch.stack(accepted).double().mean() < 0.75  # the correction is doing real work
    assert _mixture_z_scores(state.position).abs().max() < 4
    # The momentum marginal stays N(0, diag(mass)).
    v = state.momentum
    momentum_stats = torch.stack(
        [v[:, 0] ** 2 / HMC_MASS[0], v[:, 1] ** 2 / HMC_MASS[1], v[:, 0] * v[:, 1]], -1
    )
    assert _z_scores(momentum_stats, _t([1.0, 1.0, 0.0])).abs().max() < 4


def test_hmc_without_momentum_flip_is_detected():
    # Power check: with partial refresh, keeping the momentum on rejection breaks invariance.
    state = _hmc_initial_state()
    with torch.no_grad():
        for _ in range(NUM_STEPS):
            state = _hmc_no_flip_step(state, _t(0.8), _t(0.7))
    assert _mixture_z_scores(state.position).abs().max() > 8


def _value_and_grad_mixture(z: Tensor) -> tuple[Tensor, Tensor]:
    return value_and_grad(_log_mixture, z)


def _run_langevin(kernel: str, step_size: float) -> tuple[Tensor, Tensor]:
    torch.manual_seed(0)
    z = _sample_mixture(NUM_CHAINS)
    accepted = []
    with torch.no_grad():
        state = LangevinState(z, *_value_and_grad_mixture(z))
        for _ in range(NUM_STEPS):
            if kernel == "ula":
                state, info = ula_step(state, _value_and_grad_mixture, _t(step_size))
            else:
                state, info = mala_step(state, _value_and_grad_mixture, _t(step_size), kernel)
            accepted.append(info.accepted)
    return state.position, torch.stack(accepted)


@pytest.mark.parametrize("rule", ["mh", "barker"])
def test_mala_leaves_mixture_invariant(rule):
    position, accepted = _run_langevin(rule, 0.5)
    assert accepted.double().mean() < 0.75  # the correction is doing real work
    assert _mixture_z_scores(position).abs().max() < 4


def test_ula_at_the_same_step_size_is_detected():
    # Power check: without the MH correction the same Langevin moves inflate the variance.
    position, _ = _run_langevin("ula", 0.5)
    assert _mixture_z_scores(position).abs().max() > 8


# ---------------------------------------------------------------------------------------------
# Unbiased normalising-constant estimates: E[w] = Z for the extended-space weights.

NUM_PARTICLES = 20_000


def _value_and_grad_gamma(z: Tensor) -> tuple[Tensor, Tensor]:
    return value_and_grad(_log_gamma, z)


def _annealed_grad(beta: float) -> Callable[[Tensor], Tensor]:
    """Gradient of the geometric path log(q0^(1 - beta) gamma^beta)."""

    def log_density(z: Tensor) -> Tensor:
        return (1 - beta) * BASE.log_prob(z) + beta * _log_gamma(z)

    return lambda z: value_and_grad(log_density, z)[1]


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
            state, info = ula_step(state, _value_and_grad_gamma, _t(0.15))
            log_w = log_w + info.log_weight_increment
    _assert_unbiased(log_w + _log_gamma(state.position))


@pytest.mark.parametrize("damping", [0.0, 0.9])
def test_dais_weight_is_unbiased(damping):
    mass = _t([0.7, 1.5])
    torch.manual_seed(0)
    z0 = BASE.sample((NUM_PARTICLES,))
    state = DAISState(z0, torch.randn(NUM_PARTICLES, 2, dtype=DT) * mass.sqrt())
    log_w = -BASE.log_prob(z0)
    with torch.no_grad():
        for beta in (0.3, 0.7, 1.0):
            # The annealed targets enter only through the dynamics; the weight needs just the
            # momentum-density increments (leapfrog preserves volume, the refresh is reversible).
            state, info = dais_step(state, _annealed_grad(beta), _t(0.3), mass, _t(damping))
            log_w = log_w + info.log_weight_increment
    _assert_unbiased(log_w + _log_gamma(state.position))


METFLOW_CONTEXTS = _t([[0.3, -0.7], [-1.1, 0.4]])


def _metflow_log_weights(rule: str, num: int) -> tuple[Tensor, Tensor]:
    """MetFlow's extended-space log-weight with reverse model prod_k P(v_k) / 2.

    Returns (log w, sum_k log_jacobian) so that a wrong bookkeeping can be checked too.
    """
    flow = _weight_flow()
    torch.manual_seed(0)
    z0 = BASE.sample((num,))
    state = MetFlowState(z0, _log_gamma(z0))
    log_w, log_jacobian = -BASE.log_prob(z0), torch.zeros(num, dtype=DT)
    with torch.no_grad():
        for u in METFLOW_CONTEXTS:
            state, info = metflow_step(
                state,
                _log_gamma,
                lambda x, u=u: flow(x, u),
                lambda x, u=u: flow.inverse(x, u),
                DIRECTION_LOGIT,
                rule,
            )
            log_reverse = _log_direction_prob(info.forward, DIRECTION_LOGIT) - math.log(2)
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
    flow = _weight_flow()
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
                _log_gamma(proposal)
                - _log_gamma(previous)
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
    weights = _t([[0.7, -1.3]])

    def outputs(theta: Tensor) -> Tensor:
        step_size, damping, mass = theta[0], theta[1], theta[2:]
        torch.manual_seed(3)
        z = _sample_mixture(8)
        state = DAISState(z, torch.randn(8, 2, dtype=DT) * mass.sqrt())
        total = z.new_zeros(8)
        for _ in range(3):
            state, info = dais_step(state, _grad_log_mixture, step_size, mass, damping)
            total = total + info.log_weight_increment
        return torch.stack([(state.position * weights).sum(), total.sum()])

    # theta = (step size, damping, mass_1, mass_2)
    _assert_matches_finite_differences(outputs, _t([0.4, 0.6, 0.8, 1.7]))


def test_ula_pathwise_gradients():
    weights = _t([[0.7, -1.3]])

    def outputs(theta: Tensor) -> Tensor:
        step_size, z0 = theta[0], theta[1:].reshape(2, 2)
        torch.manual_seed(4)
        state = LangevinState(z0, *_value_and_grad_mixture(z0))
        log_w = -BASE.log_prob(z0)
        for _ in range(3):
            state, info = ula_step(state, _value_and_grad_mixture, step_size)
            log_w = log_w + info.log_weight_increment
        log_w = log_w + _log_mixture(state.position)
        return torch.stack([(state.position * weights).sum(), log_w.sum()])

    # theta = (step size, two initial positions)
    _assert_matches_finite_differences(outputs, _t([0.2, -0.4, 0.9, 1.1, -0.2]))


@pytest.mark.parametrize("rule", ["mh", "barker"])
def test_metflow_pathwise_gradients_in_flow_parameters(rule):
    flow = _random_flow(2, context_dim=2, scale=0.5, seed=2)
    parameter, index, h = flow.couplings[0].nn.net.layers[0].weight, (1, 2), 1e-6

    def outputs() -> tuple[Tensor, Tensor]:
        torch.manual_seed(5)
        z = _sample_mixture(16)
        state = MetFlowState(z, _log_mixture(z))
        log_jacobian, log_choice, decisions = 0.0, 0.0, []
        for u in METFLOW_CONTEXTS:
            state, info = metflow_step(
                state,
                _log_mixture,
                lambda x, u=u: flow(x, u),
                lambda x, u=u: flow.inverse(x, u),
                DIRECTION_LOGIT,
                rule,
            )
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


# ---------------------------------------------------------------------------------------------
# value_and_grad

QUAD_PRECISION = _t([[2.0, 0.5], [0.5, 1.0]])


def _quadratic(center: Tensor) -> Callable[[Tensor], Tensor]:
    def log_density(x: Tensor) -> Tensor:
        diff = x - center
        return -0.5 * ((diff @ QUAD_PRECISION) * diff).sum(-1) + 0.25

    return log_density


def test_value_and_grad_of_quadratic():
    center = _t([0.3, -0.2])
    x = torch.randn(5, 2, dtype=DT)
    value, grad = value_and_grad(_quadratic(center), x)
    diff = x - center
    torch.testing.assert_close(value, -0.5 * ((diff @ QUAD_PRECISION) * diff).sum(-1) + 0.25)
    torch.testing.assert_close(grad, -diff @ QUAD_PRECISION, rtol=1e-13, atol=1e-14)


def test_value_and_grad_is_detached_under_no_grad():
    center = _t([0.3, -0.2]).requires_grad_()
    x = torch.randn(5, 2, dtype=DT)
    with torch.no_grad():
        value, grad = value_and_grad(_quadratic(center), x)
    assert not value.requires_grad and not grad.requires_grad
    torch.testing.assert_close(grad, -(x - center.detach()) @ QUAD_PRECISION)


def test_value_and_grad_is_differentiable_when_training():
    # grad = -P (x - c): d/dc sum_b w_b . grad_b = P^T sum_b w_b and d/dx (w . grad) = -P^T w.
    center = _t([0.3, -0.2]).requires_grad_()
    x = torch.randn(5, 2, dtype=DT).requires_grad_()
    weights = torch.randn(5, 2, dtype=DT)
    _, grad = value_and_grad(_quadratic(center), x)
    d_center, d_x = torch.autograd.grad((grad * weights).sum(), (center, x))
    torch.testing.assert_close(d_center, weights.sum(0) @ QUAD_PRECISION, rtol=1e-13, atol=1e-14)
    torch.testing.assert_close(d_x, -weights @ QUAD_PRECISION, rtol=1e-13, atol=1e-14)
