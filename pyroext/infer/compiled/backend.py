"""Compiling a recorded graph with inductor, and what compilation cost.

Random operations in the graph call torch's own generators (inductor's ``fallback_random``),
so a compiled program draws exactly the numbers the eager one would, in the same order: its
trajectory follows eager Pyro with the same seed, and checkpoints resume it bit for bit. On
CUDA the compiled graph is replayed as a CUDA graph (inductor's ``triton.cudagraphs``, what
``mode="reduce-overhead"`` turns on), so a small step is not bound by kernel launches.

Inductor caches compiled kernels on disk (``TORCHINDUCTOR_CACHE_DIR``, by default under the
system's temporary directory), so a second run of the same program in the same environment
compiles in a fraction of the first run's time.
"""

__all__ = ["CompileStats", "compile_graph"]

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor
from torch.fx import GraphModule

BACKENDS = ("inductor", "eager")


@dataclass
class CompileStats:
    """Seconds spent making compiled programs, apart from running them.

    Attributes:
        record_seconds: Recording graphs (``make_fx``), all recordings together.
        compile_seconds: Compiling them (inductor's first call), all together.
        graphs: How many graphs were recorded (one per argument signature).
        fallbacks: Reasons for every fall-back to eager Pyro.
    """

    record_seconds: float = 0.0
    compile_seconds: float = 0.0
    graphs: int = 0
    fallbacks: list[str] = field(default_factory=list)

    @property
    def total_seconds(self) -> float:
        return self.record_seconds + self.compile_seconds


def compile_graph(
    graph: GraphModule,
    example: Sequence[Tensor],
    backend: str,
    stats: CompileStats,
) -> Callable[..., list[Tensor]]:
    """Compiles ``graph`` for inputs like ``example`` and runs it once on them to do so.

    Arguments:
        graph: A recorded aten graph.
        example: Inputs to compile for; the call that compiles draws as a call would, so run
            it under :func:`~pyroext.infer.checkpoint.preserved_rng_state` to keep the stream.
        backend: ``"inductor"`` (fused kernels) or ``"eager"`` (the recorded aten operations one
            by one: no compile time, and none of Pyro's Python).
        stats: Where the compile time is added.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} must be one of {', '.join(BACKENDS)}")
    if backend == "eager":
        return _without_grad(graph, clone=False)
    # Imported at the first compilation: importing inductor takes about two seconds, which
    # every program importing pyroext would otherwise pay.
    from torch._inductor.compile_fx import compile_fx

    cuda = any(t.device.type == "cuda" for t in example)
    patches = {"fallback_random": True, "triton.cudagraphs": cuda}
    start = time.perf_counter()
    # compile_fx, not torch.compile: the recording is already an aten graph, and the guards
    # that torch.compile would evaluate at every call cost as much as a small step itself;
    # pyroext's own signature guards the recording instead.
    with torch.no_grad():  # an inference graph: the recording holds the backward pass
        compiled = compile_fx(graph, list(example), config_patches=patches)
    # a CUDA graph replay overwrites its outputs: a loss kept until the next sync is copied
    run = _without_grad(compiled, clone=cuda)
    run(*example)
    stats.compile_seconds += time.perf_counter() - start
    return run


def _without_grad(graph: Callable[..., list[Tensor]], clone: bool) -> Callable[..., list[Tensor]]:
    # The graph holds its own backward pass; autograd would only add a second one.
    def run(*inputs: Tensor) -> list[Tensor]:
        with torch.no_grad():
            outputs = graph(*inputs)
        return [t.clone() for t in outputs] if clone else outputs

    return run
