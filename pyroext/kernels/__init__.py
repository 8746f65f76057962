"""Markov kernels for MCMC-in-guide variational families, as small pure functions.

Each kernel takes a state and returns ``(new_state, info)``: the info holds what the guide's
extended-space density needs (pathwise log-Jacobians, log-probabilities of the discrete
choices, log-weight increments) and per-step diagnostics (acceptance probabilities).
"""

__all__ = [
    "ConditionalCouplingFlow",
    "DAISInfo",
    "DAISState",
    "HMCInfo",
    "LangevinInfo",
    "LangevinState",
    "MetFlowInfo",
    "MetFlowState",
    "dais_step",
    "gaussian_momentum_log_prob",
    "hmc_step",
    "leapfrog",
    "log_acceptance",
    "mala_step",
    "metflow_step",
    "ula_step",
    "value_and_grad",
]

from pyroext.kernels.acceptance import log_acceptance
from pyroext.kernels.autodiff import value_and_grad
from pyroext.kernels.coupling import ConditionalCouplingFlow
from pyroext.kernels.hamiltonian import (
    DAISInfo,
    DAISState,
    HMCInfo,
    dais_step,
    gaussian_momentum_log_prob,
    hmc_step,
    leapfrog,
)
from pyroext.kernels.langevin import LangevinInfo, LangevinState, mala_step, ula_step
from pyroext.kernels.metflow import MetFlowInfo, MetFlowState, metflow_step
