"""Markov kernels for MCMC-in-guide variational families, as small pure functions.

Every kernel is a pair ``init(position, target, **params) -> State`` and ``step(state, target,
**params) -> (State, Info)`` with one shared :class:`Info` (see :mod:`pyroext.kernels.base`);
:data:`KERNELS` lists them by name, and one runner per family (:mod:`pyroext.kernels.chains`)
runs ``K`` steps with the bookkeeping a guide's extended-space density needs.
"""

__all__ = [
    "KERNELS",
    "AnnealedTarget",
    "Chain",
    "ConditionalCouplingFlow",
    "HamiltonianState",
    "Info",
    "LangevinState",
    "MarkovKernel",
    "MetFlowState",
    "dais_step",
    "fixed_reverse_logits",
    "gaussian_momentum_log_prob",
    "hamiltonian_chain",
    "hamiltonian_init",
    "hmc_step",
    "langevin_chain",
    "langevin_init",
    "leapfrog",
    "log_acceptance",
    "mala_step",
    "metflow_chain",
    "metflow_init",
    "metflow_step",
    "stack_infos",
    "ula_step",
    "value_and_grad",
    "whitened_moves",
]

from pyroext.kernels.acceptance import log_acceptance
from pyroext.kernels.annealing import AnnealedTarget
from pyroext.kernels.autodiff import value_and_grad
from pyroext.kernels.base import Info, MarkovKernel, stack_infos
from pyroext.kernels.chains import Chain, hamiltonian_chain, langevin_chain, metflow_chain
from pyroext.kernels.coupling import ConditionalCouplingFlow, whitened_moves
from pyroext.kernels.hamiltonian import (
    DAIS,
    HMC,
    HamiltonianState,
    dais_step,
    gaussian_momentum_log_prob,
    hamiltonian_init,
    hmc_step,
    leapfrog,
)
from pyroext.kernels.langevin import MALA, ULA, LangevinState, langevin_init, mala_step, ula_step
from pyroext.kernels.metflow import (
    METFLOW,
    MetFlowState,
    fixed_reverse_logits,
    metflow_init,
    metflow_step,
)

KERNELS: dict[str, MarkovKernel] = {
    "dais": DAIS,
    "hmc": HMC,
    "mala": MALA,
    "metflow": METFLOW,
    "ula": ULA,
}
