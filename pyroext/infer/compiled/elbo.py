"""Pyro ELBOs whose whole step (guide, model, loss and gradients) runs as one compiled graph.

The first call of a model, guide and argument signature runs eager Pyro (with validation, and
creating the parameters of a fresh guide), and records the step with
:func:`~pyroext.infer.compiled.capture.record` as a
:class:`~pyroext.infer.compiled.program.Program`. Before the program is used it is checked
against an eager step on the same random draws (the sites run, the loss, the gradients and the
buffers must agree); every later call runs the compiled graph alone, with the parameters,
buffers and tensor arguments as its inputs, and, under :func:`~pyroext.infer.run_svi` with a
:class:`~pyroext.infer.FusedOptim` over Adam, the optimiser's update in the same graph
(:mod:`~pyroext.infer.compiled.fused`). A program that one graph cannot stand for stops with
:class:`NotCompilable`, or, with ``strict=False``, goes on eagerly after one
:class:`CompileFallbackWarning` naming the site and the reason.

The parameters are those of the first step; a model or guide that creates parameters later,
or whose sites depend on Python state that changes between calls (a step counter), breaks the
assumption the graph rests on: train it with the eager ELBO.
"""

__all__ = [
    "CompileFallbackWarning",
    "CompiledELBO",
    "CompiledTraceMeanField_ELBO",
    "CompiledTrace_ELBO",
    "StepResult",
    "compiled_elbo",
]

import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import pyro
from pyro import poutine
from pyro.infer import ELBO, Trace_ELBO, TraceMeanField_ELBO
from pyro.poutine.runtime import _PYRO_STACK
from torch import Tensor
from torch.optim import Optimizer

from pyroext.checks import check_counts
from pyroext.infer.checkpoint import capture_rng_state, restore_rng_state
from pyroext.infer.compiled.backend import BACKENDS, CompileStats
from pyroext.infer.compiled.capture import NotCompilable, run_logged, same_objects, signature
from pyroext.infer.compiled.check import check_agrees, check_same_sites
from pyroext.infer.compiled.fused import FusedAdam
from pyroext.infer.compiled.program import (
    Program,
    accumulate,
    active_grads,
    apply,
    loss_and_grads,
    record_program,
    run_program,
    stored,
)
from pyroext.infer.compiled.state import BufferSlots


class CompileFallbackWarning(UserWarning):
    """A compiled ELBO went on with eager Pyro; the message names the site and the reason."""


class StepResult(NamedTuple):
    """One step of a compiled ELBO.

    Fields:
        loss: The loss, a device tensor.
        params: The unconstrained parameters of the step.
        compiled: Whether the compiled graph ran (else eager Pyro).
        updated: Whether the graph also applied the optimiser's update (then the parameters
            have no new gradients and the optimiser must not step).
    """

    loss: Tensor
    params: list[Tensor]
    compiled: bool
    updated: bool


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
        self._programs: dict[Any, Program | _Eager] = {}
        self._unchecked: set[Any] = set()
        self._last_call: tuple[Any, Any] | None = None
        self._fused = FusedAdam(backend, self.compile_stats)

    def loss_and_grads(
        self, model: Callable, guide: Callable, *args: Any, **kwargs: Any
    ) -> Tensor:
        """Accumulates the gradients into ``.grad`` of the parameters and returns the loss as a
        device tensor (no host sync)."""
        result = self._step(model, guide, args, kwargs, None, 1)
        if result.compiled and _PYRO_STACK:  # SVI's param capture must see what it steps
            store = pyro.get_param_store()
            for param in result.params:
                pyro.param(store.param_name(param))
        return result.loss

    def step(
        self,
        model: Callable,
        guide: Callable,
        *args: Any,
        optimizer: Callable[[list[Tensor]], Optimizer | None] | None = None,
        repeat: int = 1,
        **kwargs: Any,
    ) -> StepResult:
        """One step: the loss and the parameters. Their gradients are accumulated into
        ``.grad``, or, when ``optimizer`` gives the ``torch.optim.Adam`` that holds the step's
        parameters (after its first step), the update is applied inside the compiled graph
        (as :meth:`pyroext.infer.FusedOptim.prepare` does).

        ``repeat > 1`` runs that many steps with their updates in one graph (the loss is then
        ``(repeat,)``): one call instead of ``repeat``, for a compile time that grows with
        ``repeat`` (benchmarks/RESULTS.md records what it gives).

        Raises:
            ValueError: For ``repeat > 1`` where the update cannot be in the graph.
        """
        check_counts(repeat=repeat)
        result = self._step(model, guide, args, kwargs, optimizer, repeat)
        if repeat > 1 and not result.updated:
            raise ValueError(
                f"repeat={repeat} needs the optimiser's update in the graph: pass "
                "optimizer=FusedOptim(torch.optim.Adam, ...).prepare after its first step"
            )
        return result

    def _step(
        self,
        model: Callable,
        guide: Callable,
        args: tuple,
        kwargs: dict,
        optimizer: Callable[[list[Tensor]], Optimizer | None] | None,
        repeat: int,
    ) -> StepResult:
        key = self._key(model, guide, args, kwargs)
        program = self._programs.get(key)
        if isinstance(program, _Eager):
            return self._eager(model, guide, args, kwargs)
        params = stored(program) if program is not None else None
        if params is None:  # a new signature, or the param store was cleared or loaded
            early = self._first_step(key, model, guide, args, kwargs)
            if early is not None:
                return early
            program, params = self._programs[key], stored(self._programs[key])
        elif key in self._unchecked:
            early = self._check(key, program, params, model, guide, args, kwargs)
            if early is not None:
                return early
        call = (model, guide, args, kwargs)
        adam = optimizer(params) if optimizer is not None else None
        loss = self._fused.step(self, program, params, adam, call, repeat)
        if loss is not None:
            return StepResult(loss, params, True, True)
        if repeat > 1:
            return StepResult(program.params[0].new_zeros(0), params, True, False)
        return StepResult(
            *apply(program, params, run_program(program, params, args, kwargs)), True, False
        )

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
    ) -> StepResult | None:
        """An eager pass with Pyro's validation finds the parameters (creating those of a fresh
        guide), and the step is recorded. When the pass created parameters it is itself the
        step, drawing what eager Pyro's first step draws, and the program is checked at the
        next call; otherwise (a resumed run) its draws are undone, the program is checked now
        and runs (``None`` is returned), so that a resumed run draws what an uninterrupted one
        does and takes the same compiled steps."""
        store, before = pyro.get_param_store(), capture_rng_state()
        known, buffers = set(store.keys()), BufferSlots(model, guide)
        with buffers.kept():
            (loss, grads), sites = run_logged(loss_and_grads, self, model, guide, args, kwargs)
            stepped = buffers.read()
        fresh = not known.issuperset(store.keys())
        if fresh:
            buffers.write(stepped)
        else:
            restore_rng_state(before)
        try:
            program = record_program(
                self, model, guide, (args, kwargs), grads, self.backend, self.compile_stats
            )
            check_same_sites(program.sites, sites)
        except NotCompilable as error:
            self._fall_back(key, error)
            if fresh:
                return StepResult(loss, accumulate(grads), False, False)
            return self._eager(model, guide, args, kwargs)
        self._programs[key] = program
        if fresh:
            self._unchecked.add(key)
            return StepResult(loss, accumulate(grads), False, False)
        return self._check(key, program, list(program.params), model, guide, args, kwargs)

    def _check(
        self,
        key: Any,
        program: Program,
        params: list[Tensor],
        model: Callable,
        guide: Callable,
        args: tuple,
        kwargs: dict,
    ) -> StepResult | None:
        """Runs a new program and an eager step on the same draws, and undoes both: the sites
        run, the loss, the gradients and the buffers after the step must agree. Returns
        ``None`` when they do, else the eager step taken instead (``strict=False``)."""
        self._unchecked.discard(key)
        before = capture_rng_state()
        with program.buffers.kept():
            outputs = run_program(program, params, args, kwargs)
        restore_rng_state(before)
        with program.buffers.kept():
            (loss, grads), sites = run_logged(loss_and_grads, self, model, guide, args, kwargs)
            buffers = program.buffers.read()
        restore_rng_state(before)
        try:
            check_same_sites(program.sites, sites)
            check_agrees(outputs, [loss, *active_grads(program, params, grads), *buffers])
        except NotCompilable as error:
            self._fall_back(key, error)
            return self._eager(model, guide, args, kwargs)
        return None

    def _fall_back(self, key: Any, error: NotCompilable) -> None:
        if self.strict:
            raise error
        reason = str(error)
        self.compile_stats.fallbacks.append(reason)
        self._programs[key] = _Eager(reason)
        warnings.warn(
            f"{type(self).__name__}: {reason}; training goes on with eager Pyro",
            CompileFallbackWarning,
            stacklevel=6,
        )

    def _eager(self, model: Callable, guide: Callable, args: tuple, kwargs: dict) -> StepResult:
        """Pyro's own step: backward into ``.grad``."""

        def differentiate() -> Tensor:
            value = super(CompiledELBO, self).differentiable_loss(model, guide, *args, **kwargs)
            if value.requires_grad:
                value.backward()
            return value.detach()

        with poutine.trace(param_only=True) as capture:
            loss = differentiate()
        params = [site["value"].unconstrained() for site in capture.trace.nodes.values()]
        return StepResult(loss, params, False, False)


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
