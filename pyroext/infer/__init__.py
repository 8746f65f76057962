"""Training with Pyro's SVI engine: the runner, checkpoints, a fused optimiser and guide
serialisation."""

__all__ = [
    "Convergence",
    "FusedOptim",
    "NonFiniteLossError",
    "SVIResult",
    "TensorSVI",
    "load_guide",
    "run_svi",
    "save_guide",
    "warm_up",
]

from pyroext.infer.convergence import Convergence
from pyroext.infer.optim import FusedOptim
from pyroext.infer.runner import NonFiniteLossError, SVIResult, run_svi
from pyroext.infer.serialization import load_guide, save_guide, warm_up
from pyroext.infer.step import TensorSVI
