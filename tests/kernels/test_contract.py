"""The contract every kernel in ``pyroext.kernels.KERNELS`` keeps, checked by being listed in
CASES: pure ``init(position, target, **params)`` / ``step(state, target, **params)`` functions,
the shared ``Info`` with per-chain fields, and either invariance of the target (MH-corrected
kernels) or an importance weight ``log gamma(z_K) - log q_0(z_0) + sum_k increment_k``
unbiased for the normalising constant (kernels with a tractable increment)."""

import inspect
import math

import pytest
import torch
from kernel_targets import (
    BASE,
    DIRECTION_LOGIT,
    LOG_Z,
    as_tensor64,
    log_gamma,
    log_mixture,
    mixture_z_scores,
    sample_mixture,
    weight_flow,
)

from pyroext.kernels import KERNELS, Info, value_and_grad

MASS = as_tensor64([0.7, 1.5])
FLOW = weight_flow()
CONTEXT = as_tensor64([0.3, -0.7])


def _metflow_params():
    return {
        "flow": lambda z: FLOW(z, CONTEXT),
        "flow_inverse": lambda z: FLOW.inverse(z, CONTEXT),
        "direction_logit": DIRECTION_LOGIT,
        "acceptance": "barker",
    }


# Per kernel: init and step options, and what to check (invariance, the weight, or both).
CASES = {
    "dais": {
        "init": lambda: {"mass": MASS},
        "step": lambda: {"step_size": as_tensor64(0.3), "mass": MASS, "damping": as_tensor64(0.5)},
        "checks": ("weight",),
    },
    "hmc": {
        "init": lambda: {"mass": MASS},
        "step": lambda: {
            "step_size": as_tensor64(0.8),
            "mass": MASS,
            "damping": as_tensor64(0.7),
            "num_leapfrog": 3,
        },
        "checks": ("invariance",),
    },
    "mala": {
        "init": dict,
        "step": lambda: {"step_size": as_tensor64(0.5)},
        "checks": ("invariance",),
    },
    "metflow": {"init": dict, "step": _metflow_params, "checks": ("invariance", "weight")},
    "ula": {"init": dict, "step": lambda: {"step_size": as_tensor64(0.15)}, "checks": ("weight",)},
}
NUM_CHAINS = 10_000
NUM_STEPS = 3


def _target(name, log_density):
    if KERNELS[name].uses_gradient:
        return lambda z: value_and_grad(log_density, z)
    return log_density


def _run(name, z, log_density, num_steps=NUM_STEPS):
    kernel, case = KERNELS[name], CASES[name]
    target = _target(name, log_density)
    state = kernel.init(z, target, **case["init"]())
    infos = []
    with torch.no_grad():
        for _ in range(num_steps):
            state, info = kernel.step(state, target, **case["step"]())
            infos.append(info)
    return state, infos


def test_every_kernel_has_a_case():
    assert set(CASES) == set(KERNELS)


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_init_and_step_signatures(name):
    kernel = KERNELS[name]
    assert list(inspect.signature(kernel.init).parameters)[:2] == ["position", "target"]
    assert list(inspect.signature(kernel.step).parameters)[:2] == ["state", "target"]


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_step_returns_its_state_and_the_shared_info(name):
    torch.manual_seed(0)
    z = sample_mixture(64)
    state = KERNELS[name].init(z, _target(name, log_mixture), **CASES[name]["init"]())
    assert torch.equal(state.position, z)
    new_state, infos = _run(name, z, log_mixture, num_steps=1)
    info = infos[0]
    assert type(new_state) is type(state) and new_state.position.shape == z.shape
    assert type(info) is Info and info._fields == Info._fields
    for field, value in zip(Info._fields, info, strict=True):
        assert value.shape == (64,), field
    assert info.accepted.dtype == info.forward.dtype == torch.bool
    assert ((info.acceptance_prob >= 0) & (info.acceptance_prob <= 1)).all()
    for value in (info.log_prob_choice, info.log_weight_increment, info.log_jacobian):
        assert torch.isfinite(value).all()


INVARIANT = [name for name in sorted(KERNELS) if "invariance" in CASES[name]["checks"]]
WEIGHTED = [name for name in sorted(KERNELS) if "weight" in CASES[name]["checks"]]


@pytest.mark.parametrize("name", INVARIANT)
def test_corrected_kernels_leave_the_target_invariant(name):
    assert KERNELS[name].invariant
    torch.manual_seed(0)
    state, infos = _run(name, sample_mixture(NUM_CHAINS), log_mixture, num_steps=10)
    assert mixture_z_scores(state.position).abs().max() < 4
    assert torch.stack([info.accepted for info in infos]).double().mean() > 0.05  # it moves


@pytest.mark.parametrize("name", WEIGHTED)
def test_importance_weight_is_unbiased_for_the_normalising_constant(name):
    torch.manual_seed(0)
    z0 = BASE.sample((4 * NUM_CHAINS,))
    state, infos = _run(name, z0, log_gamma)
    increments = torch.stack([info.log_weight_increment for info in infos]).sum(0)
    w = (log_gamma(state.position) - BASE.log_prob(z0) + increments).exp()
    assert abs(w.mean() - math.exp(LOG_Z)) < 4 * w.std() / math.sqrt(len(w))
    assert not torch.allclose(state.position, z0)
