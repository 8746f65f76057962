"""One recorded and compiled ELBO step: its inputs, outputs and the eager Pyro it stands for.

A :class:`Program` takes the step's parameters (the param store's unconstrained tensors), the
model's and guide's module buffers and the tensors of the arguments, and returns the loss, the
gradient of every parameter the loss depends on and the buffers after the step. The eager
helpers here compute the same quantities with Pyro's own ELBO code, for the first call and for
the check of a new program.
"""

__all__ = [
    "Program",
    "accumulate",
    "active",
    "active_grads",
    "apply",
    "host_reading_modules",
    "loss_and_grads",
    "loss_tensors",
    "record_program",
    "run_program",
    "stored",
]

import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

import pyro
import torch
from pyro import poutine
from pyro.infer import ELBO
from torch import Tensor

from pyroext.infer.checkpoint import preserved_rng_state
from pyroext.infer.compiled.backend import CompileStats, compile_graph
from pyroext.infer.compiled.capture import NotCompilable, record, tensor_leaves
from pyroext.infer.compiled.state import BufferSlots


class Program(NamedTuple):
    """A compiled ELBO step.

    Fields:
        run: The compiled graph.
        names: Param store names of its parameters.
        params: The tensors it was recorded with (for shapes and dtypes).
        used: Which parameters the loss depends on (they get gradients).
        sites: The sample sites the recording ran, in order.
        buffers: The module buffers it reads and updates.
    """

    run: Callable[..., list[Tensor]]
    names: tuple[str, ...]
    params: tuple[Tensor, ...]
    used: tuple[bool, ...]
    sites: tuple[str, ...]
    buffers: BufferSlots


def record_program(
    elbo: ELBO,
    model: Callable,
    guide: Callable,
    data: tuple[tuple, dict],
    grads: dict[Tensor, Tensor | None],
    backend: str,
    stats: CompileStats,
) -> Program:
    """Records and compiles the step whose eager gradients are ``grads`` (by parameter)."""
    args, kwargs = data
    store, buffers = pyro.get_param_store(), BufferSlots(model, guide)
    params = tuple(grads)
    used = tuple(grad is not None for grad in grads.values())
    active = [p for p, u in zip(params, used, strict=True) if u]

    def step_graph(*_: Tensor) -> list[Tensor]:
        loss, surrogate = loss_tensors(elbo, model, guide, args, kwargs)
        grads = torch.autograd.grad(surrogate, active) if active else ()
        return [loss, *grads, *buffers.read()]

    inputs = [*params, *buffers.read(), *tensor_leaves(args, kwargs)]
    with preserved_rng_state(), buffers.kept():
        start = time.perf_counter()
        recording = record(step_graph, inputs, host_reading_modules(elbo))
        stats.record_seconds += time.perf_counter() - start
        stats.graphs += 1
        run = compile_graph(recording.graph, inputs, backend, stats)
    names = tuple(store.param_name(p) for p in params)
    return Program(run, names, params, used, recording.sites, buffers)


def run_program(program: Program, params: list[Tensor], args: tuple, kwargs: dict) -> list[Tensor]:
    return program.run(*params, *program.buffers.read(), *tensor_leaves(args, kwargs))


def stored(program: Program) -> list[Tensor] | None:
    """The program's parameters as the param store holds them now (a loaded checkpoint
    replaces the tensors), or ``None`` when one is missing or has changed shape or dtype."""
    tensors = pyro.get_param_store()._params
    params = [tensors.get(name) for name in program.names]
    for param, recorded in zip(params, program.params, strict=True):
        if param is None or param.shape != recorded.shape or param.dtype != recorded.dtype:
            return None
    return params


def active(program: Program, params: Sequence[Tensor]) -> list[Tensor]:
    """The parameters that get gradients."""
    return [p for p, u in zip(params, program.used, strict=True) if u]


def apply(
    program: Program, params: list[Tensor], outputs: list[Tensor]
) -> tuple[Tensor, list[Tensor]]:
    """Accumulates a run's gradients into ``.grad`` and writes its buffers back."""
    wanted = active(program, params)
    loss, grads, buffers = outputs[0], outputs[1 : len(wanted) + 1], outputs[len(wanted) + 1 :]
    for param, grad in zip(wanted, grads, strict=True):
        param.grad = grad if param.grad is None else param.grad + grad
    program.buffers.write(buffers)
    return loss, params


def active_grads(
    program: Program, params: list[Tensor], grads: dict[Tensor, Tensor | None]
) -> list[Tensor]:
    """Eager gradients in the program's order, for the check against its outputs."""
    wanted = active(program, params)
    if any(grads.get(p) is None for p in wanted):
        raise NotCompilable(None, "the parameters the step differentiates change between calls")
    return [grads[p] for p in wanted]


def accumulate(grads: dict[Tensor, Tensor | None]) -> list[Tensor]:
    """Accumulates eager gradients into ``.grad``; returns the parameters."""
    for param, grad in grads.items():
        if grad is not None:
            param.grad = grad if param.grad is None else param.grad + grad
    return list(grads)


def loss_tensors(
    elbo: ELBO, model: Callable, guide: Callable, args: tuple, kwargs: dict
) -> tuple[Tensor, Tensor]:
    """The ELBO's loss and surrogate loss, averaged over particles, as tensors."""
    loss = surrogate = 0.0
    for model_trace, guide_trace in elbo._get_traces(model, guide, args, kwargs):
        particle_loss, particle_surrogate = elbo._differentiable_loss_particle(
            model_trace, guide_trace
        )
        loss = loss + particle_loss / elbo.num_particles
        surrogate = surrogate + particle_surrogate / elbo.num_particles
    if not isinstance(loss, Tensor):  # eager Pyro reads each term on the host
        loss = torch.as_tensor(loss, dtype=surrogate.dtype, device=surrogate.device)
    return loss.detach(), surrogate


def loss_and_grads(
    elbo: ELBO, model: Callable, guide: Callable, args: tuple, kwargs: dict
) -> tuple[Tensor, dict[Tensor, Tensor | None]]:
    """Eager Pyro's loss and its gradient for every parameter of the step (``None`` for those
    the loss does not depend on), without touching ``.grad``."""
    with poutine.trace(param_only=True) as capture:
        loss, surrogate = loss_tensors(elbo, model, guide, args, kwargs)
    params = [site["value"].unconstrained() for site in capture.trace.nodes.values()]
    grads = torch.autograd.grad(surrogate, params, allow_unused=True) if params else ()
    return loss, dict(zip(params, grads, strict=True))


def host_reading_modules(elbo: ELBO) -> list[str]:
    """Modules of the ELBO's code whose ``torch_item`` must stay on the device when recorded."""
    return sorted(
        {
            getattr(type(elbo), method).__module__
            for method in ("_differentiable_loss_particle", "differentiable_loss", "_get_traces")
        }
        | {"pyro.infer.elbo", "pyro.infer.util"}
    )
