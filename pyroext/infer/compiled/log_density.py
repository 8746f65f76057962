"""A log density over a batch of positions, compiled with its first and second derivatives.

An MCMC-in-guide guide evaluates the model's log joint at every Markov step, and each eager
evaluation runs Pyro's handlers and distributions in Python. :class:`CompiledLogDensity`
records the density once per shape (with :func:`~pyroext.infer.compiled.capture.record`) and
then runs three compiled graphs as autograd functions: the density, its vector-Jacobian
product (the gradient a Hamiltonian or Langevin step takes) and the derivative of that
product (what the ELBO differentiates through those steps). Each graph is checked against
eager autograd at its first use; Pyro's validation runs in the eager first call only.
"""

__all__ = ["CompiledLogDensity", "compile_log_density"]

import time
import warnings
from collections.abc import Callable
from typing import Any

import pyro
import torch
from torch import Tensor
from torch.autograd.function import once_differentiable
from torch.utils._pytree import tree_flatten, tree_unflatten

from pyroext.infer.checkpoint import preserved_rng_state
from pyroext.infer.compiled.backend import BACKENDS, CompileStats, compile_graph
from pyroext.infer.compiled.capture import (
    NotCompilable,
    record,
    same_objects,
    signature,
    tensor_leaves,
)
from pyroext.infer.compiled.check import check_agrees
from pyroext.infer.compiled.elbo import CompileFallbackWarning

Density = Callable[[Tensor, Any], Tensor]


class CompiledLogDensity:
    """``log_density(z, data)`` for positions ``z`` ``(B, D)``, compiled per signature.

    The first call of each shape of ``z`` and ``data`` runs eagerly (with Pyro's validation)
    and records the density; later calls run compiled graphs whose inputs are ``z``, the
    parameters the density reads (model parameters, such as a decoder's) and the tensors of
    ``data``. Results are differentiable twice with respect to ``z`` and those parameters.

    Arguments:
        log_density: The eager density: maps positions ``(B, D)`` and the data to ``(B,)``;
            its structure must depend on shapes only.
        data: Data used when a call passes none.
        backend: ``"inductor"`` or ``"eager"`` (see
            :func:`~pyroext.infer.compiled.backend.compile_graph`).
        strict: Raise :class:`~pyroext.infer.compiled.NotCompilable` for a density one graph
            cannot stand for; with ``False`` warn once and evaluate it eagerly.

    Attributes:
        compile_stats: Recording and compile seconds, and fall-backs.
    """

    def __init__(
        self,
        log_density: Density,
        data: Any = None,
        backend: str = "inductor",
        strict: bool = True,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend={backend!r} must be one of {', '.join(BACKENDS)}")
        self.log_density, self.data = log_density, data
        self.backend, self.strict = backend, strict
        self.compile_stats = CompileStats()
        self._graphs: dict[Any, _Graphs | str] = {}
        self._last: tuple[Any, Any] | None = None

    def __call__(self, z: Tensor, data: Any = None) -> Tensor:
        """The log density at ``z`` ``(B, D)``, ``(B,)``."""
        data = self.data if data is None else data
        graphs = self._lookup(z, data)
        if graphs is None:
            return self.log_density(z, data)
        params = graphs.stored_params()
        inputs = (z, *params, *tensor_leaves((data,), {}))
        if torch.is_grad_enabled() and any(t.requires_grad for t in (z, *params)):
            return _Density.apply(graphs, len(params), *inputs)
        return graphs.run("value", inputs)[0]

    def value_and_grad(self, z: Tensor, data: Any = None) -> tuple[Tensor, Tensor]:
        """The density and its gradient with respect to ``z``; the gradient keeps its graph
        when gradients are enabled (as :func:`pyroext.kernels.value_and_grad`)."""
        from pyroext.kernels import value_and_grad

        return value_and_grad(lambda point: self(point, data), z)

    def _lookup(self, z: Tensor, data: Any) -> "_Graphs | None":
        key = self._key(z, data)
        graphs = self._graphs.get(key)
        if graphs is None:
            self._graphs[key] = self._build(z, data)
            return None  # the first call of a signature is eager: Pyro validates it
        return graphs if isinstance(graphs, _Graphs) else None

    def _key(self, z: Tensor, data: Any) -> Any:
        last = self._last
        meta = (z.shape, z.dtype, z.device, z.requires_grad)
        if last is not None and last[1][0] == meta and same_objects(last[0], (data,), {}):
            return last[1]
        key = (meta, signature(data))
        self._last = ((data,), {}), key
        return key

    def _build(self, z: Tensor, data: Any) -> "_Graphs | str":
        try:
            return _Graphs(self, z, data)
        except NotCompilable as error:
            if self.strict:
                raise
            reason = str(error)
            self.compile_stats.fallbacks.append(reason)
            warnings.warn(
                f"compiled log density: {reason}; it is evaluated eagerly",
                CompileFallbackWarning,
                stacklevel=5,
            )
            return reason


class _Graphs:
    """The graphs of one signature, each recorded, compiled and checked at its first use."""

    def __init__(self, owner: CompiledLogDensity, z: Tensor, data: Any) -> None:
        self.owner = owner
        self.leaves, self.spec = tree_flatten(data)
        with preserved_rng_state(), torch.no_grad():
            expected = owner.log_density(z.detach(), data)
        self.names, self.params = self._parameters_read(z, data)
        self.compiled: dict[str, Callable[..., list[Tensor]]] = {}
        inputs = (z.detach(), *self.params, *tensor_leaves((data,), {}))
        check_agrees(self.run("value", inputs), [expected])

    def _parameters_read(self, z: Tensor, data: Any) -> tuple[tuple, tuple]:
        """The param store's parameters that the density reads. (A guide evaluates its model
        blocked, so its param sites do not reach a trace: the recording shows them instead.)"""
        names, params = (
            tuple(pyro.get_param_store()._params),
            tuple(pyro.get_param_store()._params.values()),
        )
        self.names, self.params = names, params
        inputs = [z.detach(), *params, *tensor_leaves((data,), {})]
        with torch.no_grad():
            graph = record(_value_graph(self, len(params)), inputs).graph
        placeholders = [node for node in graph.graph.nodes if node.op == "placeholder"]
        read = [bool(node.users) for node in placeholders[1 : len(params) + 1]]
        return (
            tuple(n for n, r in zip(names, read, strict=True) if r),
            tuple(p for p, r in zip(params, read, strict=True) if r),
        )

    def stored_params(self) -> list[Tensor]:
        store = pyro.get_param_store()._params
        return [
            store.get(name, param) for name, param in zip(self.names, self.params, strict=True)
        ]

    def density(self, z: Tensor, tensors: tuple[Tensor, ...]) -> Tensor:
        """The eager density with the data's tensors replaced by ``tensors``."""
        replacements = iter(tensors)
        leaves = [next(replacements) if isinstance(v, Tensor) else v for v in self.leaves]
        return self.owner.log_density(z, tree_unflatten(leaves, self.spec))

    def run(self, kind: str, inputs: tuple[Tensor, ...]) -> list[Tensor]:
        if kind not in self.compiled:
            with torch.enable_grad():  # inside an autograd function's forward or backward
                self.compiled[kind] = self._compile(kind, inputs)
        return self.compiled[kind](*inputs)

    def _compile(self, kind: str, inputs: tuple[Tensor, ...]) -> Callable[..., list[Tensor]]:
        function = GRAPHS[kind](self, len(self.params))
        # positions (and cotangents) are passed in; parameters must stay the store's tensors,
        # which the density reads and the recording maps to its inputs by identity
        free = 1 if kind == "value" else 2
        example = [t.detach() if i < free else t for i, t in enumerate(inputs)]
        stats = self.owner.compile_stats
        with preserved_rng_state():
            start = time.perf_counter()
            recording = record(function, example)
            stats.record_seconds += time.perf_counter() - start
            stats.graphs += 1
            run = compile_graph(recording.graph, example, self.owner.backend, stats)
        if kind != "value":
            check_agrees(run(*example), function(*example))
        return run


def _gradients(
    value: Tensor, wrt: list[Tensor], cotangent: Tensor | None, create_graph: bool = False
) -> list[Tensor]:
    """``d <value, cotangent> / d wrt``, with zeros for what does not require or get one."""
    needs = [t for t in wrt if t.requires_grad]
    found = iter(
        torch.autograd.grad(value, needs, cotangent, allow_unused=True, create_graph=create_graph)
        if needs
        else ()
    )
    grads = [next(found) if t.requires_grad else None for t in wrt]
    return [torch.zeros_like(t) if g is None else g for t, g in zip(wrt, grads, strict=True)]


def _value_graph(graphs: _Graphs, n: int) -> Callable[..., list[Tensor]]:
    def value(z: Tensor, *rest: Tensor) -> list[Tensor]:
        return [graphs.density(z, rest[n:])]

    return value


def _vjp_graph(graphs: _Graphs, n: int) -> Callable[..., list[Tensor]]:
    def vjp(z: Tensor, cotangent: Tensor, *rest: Tensor) -> list[Tensor]:
        point = z.detach().requires_grad_()
        value = graphs.density(point, rest[n:])
        return _gradients(value, [point, *rest[:n]], cotangent)

    return vjp


def _second_graph(graphs: _Graphs, n: int) -> Callable[..., list[Tensor]]:
    def second(z: Tensor, cotangent: Tensor, *rest: Tensor) -> list[Tensor]:
        params, data, outer = rest[:n], rest[n : len(rest) - n - 1], rest[len(rest) - n - 1 :]
        point, weights = z.detach().requires_grad_(), cotangent.detach().requires_grad_()
        value = graphs.density(point, data)
        first = _gradients(value, [point, *params], weights, create_graph=True)
        total = sum((f * o).sum() for f, o in zip(first, outer, strict=True))
        return _gradients(total, [point, weights, *params], None)

    return second


GRAPHS = {"value": _value_graph, "vjp": _vjp_graph, "second": _second_graph}


class _Density(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, graphs: _Graphs, n: int, z: Tensor, *rest: Tensor) -> Tensor:
        ctx.graphs, ctx.n = graphs, n
        ctx.save_for_backward(z, *rest)
        return graphs.run("value", (z, *rest))[0]

    @staticmethod
    def backward(ctx: Any, cotangent: Tensor) -> tuple[Tensor | None, ...]:
        z, *rest = ctx.saved_tensors
        dz, *dparams = _VectorJacobian.apply(ctx.graphs, ctx.n, z, cotangent, *rest)
        return (None, None, dz, *dparams, *[None] * (len(rest) - ctx.n))


class _VectorJacobian(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, graphs: _Graphs, n: int, z: Tensor, cotangent: Tensor, *rest: Tensor
    ) -> tuple[Tensor, ...]:
        ctx.graphs, ctx.n = graphs, n
        ctx.save_for_backward(z, cotangent, *rest)
        return tuple(graphs.run("vjp", (z, cotangent, *rest)))

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, *outer: Tensor) -> tuple[Tensor | None, ...]:
        z, cotangent, *rest = ctx.saved_tensors
        dz, dcotangent, *dparams = ctx.graphs.run("second", (z, cotangent, *rest, *outer))
        return (None, None, dz, dcotangent, *dparams, *[None] * (len(rest) - ctx.n))


def compile_log_density(
    model: Callable[..., Any],
    *args: Any,
    backend: str = "inductor",
    strict: bool = True,
    **kwargs: Any,
) -> CompiledLogDensity:
    """The model's log joint over its flat unconstrained latents, compiled.

    ``log p(x, T(z)) + log|det dT/dz|``, with ``T`` the map from the unconstrained space to
    the latents' supports (the layout of Pyro's ``AutoContinuous`` guides), batched over chains
    ``z`` of shape ``(B, D)``: the target an MCMC-in-guide guide moves its draws with. The
    result is differentiable twice (a Hamiltonian step's gradient and the ELBO through it).

    Arguments:
        model: A Pyro model with continuous latents.
        args: The model's arguments (its data).
        backend: ``"inductor"`` or ``"eager"``.
        strict: See :class:`CompiledLogDensity`.
        kwargs: The model's keyword arguments.

    Returns:
        A :class:`CompiledLogDensity` with the data bound; ``latent_dim`` is ``D``.

    Example:
        >>> log_density = compile_log_density(model, x, y)
        >>> z = torch.zeros(16, log_density.latent_dim, requires_grad=True)
        >>> value, grad = log_density.value_and_grad(z)
    """
    from pyroext.guides.log_joint import ModelLogJoint  # pyroext.guides imports this package

    target = ModelLogJoint(model)
    with preserved_rng_state():
        target._setup_prototype(*args, **kwargs)
    density = CompiledLogDensity(target._log_joint_at, (args, kwargs), backend, strict)
    density.latent_dim = target.latent_dim
    return density
