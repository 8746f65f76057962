"""Recording a Pyro program once as a graph of aten operations.

:func:`record` runs a function under ``make_fx`` (torch's dispatcher-level tracer): Pyro's
handlers, plates and distributions run in Python once, and what reaches the dispatcher
(sampling, log densities, the backward pass of ``autograd.grad``) is kept as one graph whose
inputs are the tensors passed in, wherever the program reads them (the param store, a module's
weights, the arguments). A program whose graph would not hold for the next call is refused
with :class:`NotCompilable`, naming the site and the reason, instead of being baked wrong.
"""

__all__ = [
    "NotCompilable",
    "Recording",
    "record",
    "recording",
    "run_logged",
    "same_objects",
    "signature",
    "tensor_leaves",
]

import contextlib
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import pyro
import torch
from pyro.poutine.messenger import Messenger
from torch import Tensor
from torch.distributions import Distribution
from torch.fx import GraphModule
from torch.fx.experimental.proxy_tensor import make_fx
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from pyroext.infer.checkpoint import preserved_rng_state

DATA_DEPENDENT = "aten._local_scalar_dense"
HOST_READ = (
    "it reads a tensor's value on the host (a Python branch on a value, .item(), bool or "
    "float of a tensor), so another call could take another path"
)


class NotCompilable(Exception):
    """A program that one recorded graph cannot stand for. (Not a ``RuntimeError``: Pyro's
    trace re-raises those as new exceptions of the same type with only a message.)

    Attributes:
        site: The Pyro site at or after which the problem arose (``None`` before any site).
        reason: What the program does that a fixed graph cannot repeat.
    """

    def __init__(self, site: str | None, reason: str) -> None:
        super().__init__(site, reason)  # as args, so that torch can re-raise it by its type
        self.site, self.reason = site, reason

    def __str__(self) -> str:
        where = "" if self.site is None else f" at site {self.site!r}"
        return f"the program cannot be compiled{where}: {self.reason}"


class Recording(NamedTuple):
    """A recorded program.

    Fields:
        graph: The aten graph; it takes the flat inputs and returns the flat outputs.
        sites: Names of the sample sites the recording ran, in order (for the structure
            check).
    """

    graph: GraphModule
    sites: tuple[str, ...]


class SiteLog(Messenger):
    """Records the name of every sample site, and which are enumerated. (Parameters are left
    out: a fresh guide first reads them in the order it creates them.)"""

    def __init__(self) -> None:
        super().__init__()
        self.sites: list[str] = []
        self.enumerated: list[str] = []

    def _process_message(self, msg: Any) -> None:
        if msg["type"] != "sample":
            return
        self.sites.append(msg["name"])
        if msg["infer"].get("enumerate"):
            self.enumerated.append(msg["name"])

    @property
    def last(self) -> str | None:
        return self.sites[-1] if self.sites else None


def run_logged(fn: Callable[..., Any], *args: Any) -> tuple[Any, tuple[str, ...]]:
    """Runs ``fn`` eagerly and returns its result and the sites it ran."""
    with SiteLog() as log:
        result = fn(*args)
    return result, tuple(log.sites)


_RECORDING = [0]


def recording() -> bool:
    """Whether a recording is in progress (a compiled density must not nest inside one: the
    recording inlines the eager program instead)."""
    return _RECORDING[0] > 0


def record(
    fn: Callable[..., Sequence[Tensor]],
    inputs: Sequence[Tensor],
    patched_modules: Sequence[str] = (),
) -> Recording:
    """Records ``fn(*inputs)`` as one aten graph.

    The recording runs ``fn`` once for real, so it leaves every random generator as it found
    it; Pyro's validation is off while it runs (its checks read values on the host, and the
    eager first call has run them).

    Arguments:
        fn: Maps the flat tensor inputs to a flat sequence of output tensors.
        inputs: Example inputs; reads of these very tensors become the graph's inputs.
        patched_modules: Modules whose ``torch_item`` and ``warn_if_nan`` read the host; they
            are made to stay on the device while recording (Pyro's ELBOs call them per site).

    Raises:
        NotCompilable: For control flow on values, data-dependent shapes or enumeration.
    """
    log = SiteLog()

    def logged(*flat: Tensor) -> list[Tensor]:
        with log, _RefuseDynamicShapes(log):
            return list(fn(*flat))

    _RECORDING[0] += 1
    try:
        with preserved_rng_state(), _no_value_checks(), _on_device(patched_modules):
            graph = make_fx(logged, tracing_mode="real")(*inputs)
    except RuntimeError as error:
        if DATA_DEPENDENT in str(error) or "data-dependent" in str(error):
            raise NotCompilable(log.last, HOST_READ) from error
        raise
    finally:
        _RECORDING[0] -= 1
    if log.enumerated:
        raise NotCompilable(
            log.enumerated[0],
            "it enumerates a discrete site (infer={'enumerate': ...}); enumeration needs "
            "TraceEnum_ELBO, which runs eagerly",
        )
    return Recording(graph, tuple(log.sites))


class _RefuseDynamicShapes(TorchDispatchMode):
    """Stops the recording at the first operation whose result's shape depends on values, so
    that the error names the last site before it."""

    def __init__(self, log: SiteLog) -> None:
        super().__init__()
        self.log = log

    def __torch_dispatch__(
        self, func: Any, types: Any, args: tuple = (), kwargs: Any = None
    ) -> Any:
        if func is torch.ops.aten._local_scalar_dense.default:
            raise NotCompilable(self.log.last, HOST_READ)
        if _dynamic_shape(func, args):
            raise NotCompilable(
                self.log.last,
                f"{func} gives a result whose shape depends on the values (a boolean mask, "
                "nonzero, unique), which a fixed graph cannot repeat",
            )
        return func(*args, **(kwargs or {}))


def _dynamic_shape(func: Any, args: tuple) -> bool:
    tags = getattr(func, "tags", ())
    if torch.Tag.dynamic_output_shape not in tags and torch.Tag.data_dependent_output not in tags:
        return False
    if func in INDEXING:  # integer indices keep the shape; boolean masks do not
        indices = args[1] if len(args) > 1 else ()
        return any(
            isinstance(index, Tensor) and index.dtype in (torch.bool, torch.uint8)
            for index in indices
        )
    return True


INDEXING = (
    torch.ops.aten.index.Tensor,
    torch.ops.aten.index_put.default,
    torch.ops.aten.index_put_.default,
)


def _stay_on_device(value: Any) -> Any:
    return value.detach() if isinstance(value, Tensor) else value


def _no_nan_check(value: Any, *args: Any, **kwargs: Any) -> Any:
    return value  # run_svi's guard checks every loss at each sync instead


@contextlib.contextmanager
def _no_value_checks() -> Iterator[None]:
    """Pyro's validation off, including distributions built earlier with ``validate_args``
    (a model's stored priors): each check reads a value on the host."""
    check = Distribution._validate_sample
    Distribution._validate_sample = lambda self, value: None
    try:
        with pyro.validation_enabled(False):
            yield
    finally:
        Distribution._validate_sample = check


@contextlib.contextmanager
def _on_device(module_names: Sequence[str]) -> Iterator[None]:
    saved = []
    for name in module_names:
        module = sys.modules[name]
        for attribute, replacement in (
            ("torch_item", _stay_on_device),
            ("warn_if_nan", _no_nan_check),
        ):
            if hasattr(module, attribute):
                saved.append((module, attribute, getattr(module, attribute)))
                setattr(module, attribute, replacement)
    try:
        yield
    finally:
        for module, attribute, original in saved:
            setattr(module, attribute, original)


def signature(*trees: Any) -> tuple[Any, ...]:
    """What a recording depends on besides tensor values: the structure of the arguments, the
    shape, dtype, device and ``requires_grad`` of each tensor and every other leaf's value."""
    leaves, spec = tree_flatten(trees)
    return (
        str(spec),
        tuple(
            (tuple(leaf.shape), leaf.dtype, leaf.device, leaf.requires_grad)
            if isinstance(leaf, Tensor)
            else (type(leaf), _hashable(leaf))
            for leaf in leaves
        ),
    )


def same_objects(old: tuple[tuple, dict] | None, args: tuple, kwargs: dict) -> bool:
    """Whether a call passes the very objects of an earlier one (identity: a cheap guard for
    full-batch training, which passes the same tensors at every step)."""
    if old is None:
        return False
    old_args, old_kwargs = old
    return (
        len(old_args) == len(args)
        and old_kwargs.keys() == kwargs.keys()
        and all(a is b for a, b in zip(old_args, args, strict=True))
        and all(old_kwargs[key] is kwargs[key] for key in kwargs)
    )


def _hashable(value: Any) -> Any:
    try:
        hash(value)
    except TypeError:
        return id(value)
    return value


def tensor_leaves(args: tuple, kwargs: dict) -> list[Tensor]:
    """The tensors among a call's arguments, in pytree order: the data inputs of a recording.
    (The last call's are kept: full-batch training passes the same objects at every step.)"""
    last = _LAST_LEAVES[0]
    if last is not None and same_objects(last[0], args, kwargs):
        return last[1]
    leaves, _ = tree_flatten((args, kwargs))
    tensors = [leaf for leaf in leaves if isinstance(leaf, Tensor)]
    _LAST_LEAVES[0] = ((args, kwargs), tensors)
    return tensors


_LAST_LEAVES: list[tuple[tuple[tuple, dict], list[Tensor]] | None] = [None]
