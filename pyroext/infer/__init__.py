"""Training with Pyro's SVI engine: the runner, checkpoints, a fused optimiser, data
parallelism over torch.distributed and guide serialisation."""

__all__ = [
    "AllReduceOptim",
    "Convergence",
    "FusedOptim",
    "NonFiniteLossError",
    "NonFiniteParameterError",
    "SVIResult",
    "TensorSVI",
    "compile_log_density",
    "init_distributed",
    "is_main_process",
    "load_guide",
    "run_svi",
    "save_guide",
    "shard_loader",
    "warm_up",
]

from pyroext.infer.compiled import compile_log_density
from pyroext.infer.convergence import Convergence
from pyroext.infer.distributed import (
    AllReduceOptim,
    init_distributed,
    is_main_process,
    shard_loader,
)
from pyroext.infer.guard import NonFiniteParameterError
from pyroext.infer.optim import FusedOptim
from pyroext.infer.result import SVIResult
from pyroext.infer.runner import NonFiniteLossError, run_svi
from pyroext.infer.serialization import load_guide, save_guide, warm_up
from pyroext.infer.step import TensorSVI
