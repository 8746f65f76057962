"""Pyro ELBOs whose whole step (guide, model, loss and gradients) runs as one compiled graph.

The first call of a model, guide and argument signature runs eager Pyro (with validation, and
creating the parameters); the second records the step with
:func:`~pyroext.infer.compiled.capture.record`, compiles it, runs it and checks it against an
eager step with the same random draws (loss, gradients and the sites run must agree); every
later call runs the compiled graph alone, with the parameters and tensor arguments as its
inputs. A program that one graph cannot stand for stops with :class:`NotCompilable`, or, with
``strict=False``, goes on eagerly after one :class:`CompileFallbackWarning` naming the site
and the reason.

The parameters are those of the first step; a model or guide that creates parameters later,
or whose sites depend on Python state that changes between calls (a step counter), breaks the
assumption the graph rests on: train it with the eager ELBO.
"""

__all__ = [
    "CompileFallbackWarning",
    "CompiledELBO",
    "CompiledTraceMeanField_ELBO",
    "CompiledTrace_ELBO",
    "compiled_elbo",
]

import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import pyro
import torch
from pyro import poutine
from pyro.infer import ELBO, Trace_ELBO, TraceMeanField_ELBO
from pyro.poutine.runtime import _PYRO_STACK
from torch import Tensor

from pyroext.infer.checkpoint import capture_rng_state, preserved_rng_state, restore_rng_state
from pyroext.infer.compiled.backend import BACKENDS, CompileStats, compile_graph
from pyroext.infer.compiled.capture import (
    NotCompilable,
    record,
    run_logged,
    same_objects,
    signature,
    tensor_leaves,
)
from pyroext.infer.compiled.check import check_agrees, check_same_sites
from pyroext.infer.compiled.state import BufferSlots


class CompileFallbackWarning(UserWarning):
    """A compiled ELBO went on with eager Pyro; the message names the site and the reason."""


class _Program(NamedTuple):
    run: Callable[..., list[Tensor]]
    names: tuple[str, ...]
    params: tuple[Tensor, ...]
    used: tuple[bool, ...]
    sites: tuple[str, ...]
    buffers: BufferSlots


class _Eager(NamedTuple):
    reason: str


class CompiledELBO:
    """Mixin that compiles the step of a Pyro ELBO; see the module docstring.

    Use :class:`CompiledTrace_ELBO` or :class:`CompiledTraceMeanField_ELBO` in place of Pyro's
    ``Trace_ELBO`` or ``TraceMeanField_ELBO``, with Pyro's ``SVI`` or with
    ``pyroext.infer.run_svi`` (which takes ``compile=True`` for the same).

    Arguments:
        args: The ELBO's own arguments (``num_particles``, ``vectorize_particles``, ...).
        backend: ``"inductor"`` (fused kernels) or ``"eager"`` (the recorded graph run op by
            op: no compile time).
        strict: Raise :class:`NotCompilable` for a program that cannot be compiled; with
            ``False``, warn once and go on eagerly.
        kwargs: The ELBO's own keyword arguments.

    Attributes:
        compile_stats: Recording and compile seconds, graphs and fall-backs
            (:class:`~pyroext.infer.compiled.backend.CompileStats`).

    Example:
        >>> svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 0.01}),
        ...                      CompiledTrace_ELBO(num_particles=8, vectorize_particles=True))
    """

    def __init__(
        self, *args: Any, backend: str = "inductor", strict: bool = True, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self._setup_compilation(backend, strict)

    def _setup_compilation(self, backend: str, strict: bool) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend={backend!r} must be one of {', '.join(BACKENDS)}")
        self.backend, self.strict = backend, strict
        self.compile_stats = CompileStats()
        self._programs: dict[Any, _Program | _Eager] = {}
        self._unchecked: set[Any] = set()
        self._last_call: tuple[Any, Any] | None = None

    def loss_and_grads(
        self, model: Callable, guide: Callable, *args: Any, **kwargs: Any
    ) -> Tensor:
        """Accumulates the gradients into ``.grad`` of the parameters and returns the loss as a
        device tensor (no host sync)."""
        loss, params, compiled = self._step(model, guide, args, kwargs)
        if compiled and _PYRO_STACK:
            store = pyro.get_param_store()
            for param in params:
                pyro.param(
                    store.param_name(param)
                )  # so that SVI's param capture sees the parameters it steps
        return loss

    def step(
        self, model: Callable, guide: Callable, *args: Any, **kwargs: Any
    ) -> tuple[Tensor, Sequence[Tensor]]:
        """One gradient evaluation: returns the loss and the unconstrained parameters whose
        ``.grad`` received their gradients."""
        loss, params, _ = self._step(model, guide, args, kwargs)
        return loss, params

    def _step(
        self, model: Callable, guide: Callable, args: tuple, kwargs: dict
    ) -> tuple[Tensor, Sequence[Tensor], bool]:
        key = self._key(model, guide, args, kwargs)
        program = self._programs.get(key)
        if isinstance(program, _Eager):
            return (*_eager_step(self, model, guide, args, kwargs)[:2], False)
        params = _stored(program) if program is not None else None
        if params is None:  # a new signature, or the param store was cleared or loaded
            return self._first_step(key, model, guide, args, kwargs)
        if key in self._unchecked:
            return self._checked_step(key, program, params, model, guide, args, kwargs)
        return (*_apply(program, params, _run(program, params, args, kwargs)), True)

    def _key(self, model: Callable, guide: Callable, args: tuple, kwargs: dict) -> Any:
        # the same argument objects as the last call (full-batch training) keep its key
        last = self._last_call
        if last is not None and same_objects(last[0], (model, guide, *args), kwargs):
            return last[1]
        key = id(model), id(guide), signature(args, kwargs)
        self._last_call = ((model, guide, *args), kwargs), key
        return key

    def _first_step(
        self, key: Any, model: Callable, guide: Callable, args: tuple, kwargs: dict
    ) -> tuple[Tensor, Sequence[Tensor], bool]:
        """An eager pass with Pyro's validation finds the parameters (creating those of a fresh
        guide); the step is recorded and compiled. When the pass created parameters it is
        itself the step, drawing what eager Pyro's first step draws, and the program is checked
        at the next call; otherwise (a resumed run) its draws are undone and the program runs
        at once, so that a resumed run draws what an uninterrupted one does."""
        store, before = pyro.get_param_store(), capture_rng_state()
        known, buffers = set(store.keys()), BufferSlots(model, guide)
        with buffers.kept():
            (loss, grads), sites = run_logged(_loss_and_grads, self, model, guide, args, kwargs)
            stepped = buffers.read()
        fresh = not known.issuperset(store.keys())
        if fresh:
            buffers.write(stepped)
        else:
            restore_rng_state(before)
        try:
            program = self._record(model, guide, args, kwargs, grads)
            check_same_sites(program.sites, sites)
        except NotCompilable as error:
            if self.strict:
                raise
            self._programs[key] = self._fall_back(str(error))
            if not fresh:
                return (*_eager_step(self, model, guide, args, kwargs)[:2], False)
            return loss, _accumulate(grads), False
        self._programs[key] = program
        if fresh:
            self._unchecked.add(key)
            return loss, _accumulate(grads), False
        return self._checked_step(key, program, list(program.params), model, guide, args, kwargs)

    def _fall_back(self, reason: str) -> _Eager:
        self.compile_stats.fallbacks.append(reason)
        warnings.warn(
            f"{type(self).__name__}: {reason}; training goes on with eager Pyro",
            CompileFallbackWarning,
            stacklevel=6,
        )
        return _Eager(reason)

    def _record(
        self,
        model: Callable,
        guide: Callable,
        args: tuple,
        kwargs: dict,
        grads: dict[Tensor, Tensor | None],
    ) -> _Program:
        store, buffers = pyro.get_param_store(), BufferSlots(model, guide)
        params = tuple(grads)
        used = tuple(grad is not None for grad in grads.values())
        active = [p for p, u in zip(params, used, strict=True) if u]

        def step_graph(*_: Tensor) -> list[Tensor]:
            loss, surrogate = _loss_tensors(self, model, guide, args, kwargs)
            grads = torch.autograd.grad(surrogate, active) if active else ()
            return [loss, *grads, *buffers.read()]

        inputs = [*params, *buffers.read(), *tensor_leaves(args, kwargs)]
        with preserved_rng_state(), buffers.kept():
            start = time.perf_counter()
            recording = record(step_graph, inputs, _host_reading_modules(self))
            self.compile_stats.record_seconds += time.perf_counter() - start
            self.compile_stats.graphs += 1
            run = compile_graph(recording.graph, inputs, self.backend, self.compile_stats)
        names = tuple(store.param_name(p) for p in params)
        return _Program(run, names, params, used, recording.sites, buffers)

    def _checked_step(
        self,
        key: Any,
        program: _Program,
        params: list[Tensor],
        model: Callable,
        guide: Callable,
        args: tuple,
        kwargs: dict,
    ) -> tuple[Tensor, Sequence[Tensor], bool]:
        """Runs a new program and checks it against eager Pyro on the same random draws: the
        sites run, the loss, the gradients and the buffers after the step must agree."""
        self._unchecked.discard(key)
        before = capture_rng_state()
        outputs = _run(program, params, args, kwargs)
        after = capture_rng_state()
        restore_rng_state(before)
        with program.buffers.kept():
            (loss, grads), sites = run_logged(_loss_and_grads, self, model, guide, args, kwargs)
            buffers = program.buffers.read()
        restore_rng_state(after)
        try:
            check_same_sites(program.sites, sites)
            check_agrees(outputs, [loss, *_active_grads(program, params, grads), *buffers])
        except NotCompilable as error:
            if self.strict:
                raise
            self._programs[key] = self._fall_back(str(error))
            restore_rng_state(before)
            return (*_eager_step(self, model, guide, args, kwargs)[:2], False)
        return (*_apply(program, params, outputs), True)


def _run(program: _Program, params: list[Tensor], args: tuple, kwargs: dict) -> list[Tensor]:
    return program.run(*params, *program.buffers.read(), *tensor_leaves(args, kwargs))


def _active_grads(
    program: _Program, params: list[Tensor], grads: dict[Tensor, Tensor | None]
) -> list[Tensor]:
    active = [p for p, u in zip(params, program.used, strict=True) if u]
    if any(grads.get(p) is None for p in active):
        raise NotCompilable(None, "the parameters the step differentiates change between calls")
    return [grads[p] for p in active]


def _accumulate(grads: dict[Tensor, Tensor | None]) -> list[Tensor]:
    for param, grad in grads.items():
        if grad is not None:
            param.grad = grad if param.grad is None else param.grad + grad
    return list(grads)


def _stored(program: _Program) -> list[Tensor] | None:
    """The program's parameters as the param store holds them now (a loaded checkpoint
    replaces the tensors), or ``None`` when one is missing or has changed shape or dtype."""
    stored = pyro.get_param_store()._params
    params = [stored.get(name) for name in program.names]
    for param, recorded in zip(params, program.params, strict=True):
        if param is None or param.shape != recorded.shape or param.dtype != recorded.dtype:
            return None
    return params


def _apply(
    program: _Program, params: list[Tensor], outputs: list[Tensor]
) -> tuple[Tensor, Sequence[Tensor]]:
    active = [p for p, u in zip(params, program.used, strict=True) if u]
    loss, grads, buffers = outputs[0], outputs[1 : len(active) + 1], outputs[len(active) + 1 :]
    for param, grad in zip(active, grads, strict=True):
        param.grad = grad if param.grad is None else param.grad + grad
    program.buffers.write(buffers)
    return loss, params


def _loss_tensors(
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


def _loss_and_grads(
    elbo: ELBO, model: Callable, guide: Callable, args: tuple, kwargs: dict
) -> tuple[Tensor, dict[Tensor, Tensor | None]]:
    """Eager Pyro's loss and its gradient for every parameter of the step (``None`` for those
    the loss does not depend on), without touching ``.grad``."""
    with poutine.trace(param_only=True) as capture:
        loss, surrogate = _loss_tensors(elbo, model, guide, args, kwargs)
    params = [site["value"].unconstrained() for site in capture.trace.nodes.values()]
    grads = torch.autograd.grad(surrogate, params, allow_unused=True) if params else ()
    return loss, dict(zip(params, grads, strict=True))


def _eager_step(
    elbo: CompiledELBO, model: Callable, guide: Callable, args: tuple, kwargs: dict
) -> tuple[Tensor, list[Tensor], tuple[str, ...]]:
    """Pyro's own step: the loss, the parameters it differentiated and the sites it ran."""

    def differentiate() -> Tensor:
        value = super(CompiledELBO, elbo).differentiable_loss(model, guide, *args, **kwargs)
        if value.requires_grad:
            value.backward()
        return value.detach()

    with poutine.trace(param_only=True) as capture:
        loss, sites = run_logged(differentiate)
    return loss, [site["value"].unconstrained() for site in capture.trace.nodes.values()], sites


def _host_reading_modules(elbo: ELBO) -> list[str]:
    return sorted(
        {
            getattr(type(elbo), method).__module__
            for method in ("_differentiable_loss_particle", "differentiable_loss", "_get_traces")
        }
        | {"pyro.infer.elbo", "pyro.infer.util"}
    )


class CompiledTrace_ELBO(CompiledELBO, Trace_ELBO):
    """:class:`~pyro.infer.Trace_ELBO` with its step compiled (see :class:`CompiledELBO`)."""


class CompiledTraceMeanField_ELBO(CompiledELBO, TraceMeanField_ELBO):
    """:class:`~pyro.infer.TraceMeanField_ELBO` with its step compiled (see
    :class:`CompiledELBO`)."""


COMPILED = {Trace_ELBO: CompiledTrace_ELBO, TraceMeanField_ELBO: CompiledTraceMeanField_ELBO}


def compiled_elbo(loss: ELBO, strict: bool = True, backend: str = "inductor") -> ELBO:
    """The compiled counterpart of a Pyro ELBO, with the same options.

    Arguments:
        loss: A ``Trace_ELBO`` or ``TraceMeanField_ELBO`` (or an already compiled ELBO, which is
            returned as it is).
        strict: See :class:`CompiledELBO`; with ``False`` an ELBO that has no compiled
            counterpart is returned as it is, with a :class:`CompileFallbackWarning`.
        backend: See :class:`CompiledELBO`.

    Raises:
        NotCompilable: With ``strict``, for an ELBO without a compiled counterpart.
    """
    if isinstance(loss, CompiledELBO):
        return loss
    compiled = COMPILED.get(type(loss))
    if compiled is None:
        reason = (
            f"{type(loss).__name__} has no compiled counterpart (compiled: "
            f"{', '.join(c.__name__ for c in COMPILED)}; enumeration and graph-structured "
            "estimators run eagerly)"
        )
        if strict:
            raise NotCompilable(None, reason)
        warnings.warn(f"{reason}; training goes on with eager Pyro", CompileFallbackWarning, 2)
        return loss
    copy = compiled.__new__(compiled)
    copy.__dict__.update(vars(loss))  # the options as the ELBO resolved them
    copy._setup_compilation(backend, strict)
    return copy
