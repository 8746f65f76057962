"""The optimiser's update inside the compiled step: loss, gradients and Adam as one graph.

With the ELBO step compiled, stepping torch's Adam afterwards costs about as much as the step
itself (its per-group Python and argument checks, even with its fused kernel). When the runner
steps a :class:`~pyroext.infer.FusedOptim` over ``torch.optim.Adam``, the update is recorded
into the step: the graph updates the parameters and the optimiser's own state tensors in
place, so checkpoints, ``get_state`` and a later eager step see the same state. The update is
torch's single-tensor Adam written out (the step count as a float of the parameter's dtype),
so it follows the eager optimiser to rounding.

Several steps can be recorded into one graph (``steps_per_call`` of a compiled ELBO): each
step's update is in place, so the next step's Pyro program reads the updated parameters, and
the random draws follow one another as in separate calls.
"""

__all__ = ["FusedAdam"]

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import torch
from pyro.infer import ELBO
from torch import Tensor
from torch.optim import Adam, Optimizer

from pyroext.infer.checkpoint import preserved_rng_state
from pyroext.infer.compiled.backend import CompileStats, compile_graph
from pyroext.infer.compiled.capture import record, tensor_leaves
from pyroext.infer.compiled.program import Program, active, host_reading_modules, loss_tensors

# A learning-rate schedule changes the baked hyperparameters at every step: after this many
# recordings the update goes back to the optimiser's own step.
MAX_RECORDINGS = 4
STATE = ("exp_avg", "exp_avg_sq", "step")


class FusedAdam:
    """Compiled steps that include ``torch.optim.Adam``'s update, one per program and set of
    hyperparameters.

    Arguments:
        backend: ``"inductor"`` or ``"eager"``.
        stats: Where recording and compile seconds are added.
    """

    def __init__(self, backend: str, stats: CompileStats) -> None:
        self.backend, self.stats = backend, stats
        self._graphs: dict[Any, Callable[..., list[Tensor]]] = {}
        self._given_up = False
        self._layout: tuple[Any, _Layout | None] | None = None

    def step(
        self,
        elbo: ELBO,
        program: Program,
        params: list[Tensor],
        optimizer: Optimizer | None,
        call: tuple[Callable, Callable, tuple, dict],
        repeat: int = 1,
    ) -> Tensor | None:
        """Runs ``repeat`` steps with their updates in one graph and returns their losses
        (``(repeat,)``, or the loss itself for one step); ``None`` (nothing done) where the
        update cannot be fused: another optimiser or options, or before its state exists."""
        layout = None if self._given_up else self._layout_of(optimizer, active(program, params))
        if layout is None:
            return None
        key = (id(program), layout.hyperparameters(), repeat)
        graph = self._graphs.get(key) or self._record(key, elbo, program, params, layout, call)
        if graph is None:
            return None
        outputs = graph(*_inputs(program, params, layout, call))
        program.buffers.write(outputs[repeat:])
        return outputs[0] if repeat == 1 else torch.stack(outputs[:repeat])

    def _record(
        self,
        key: Any,
        elbo: ELBO,
        program: Program,
        params: list[Tensor],
        layout: "_Layout",
        call: tuple[Callable, Callable, tuple, dict],
    ) -> Callable[..., list[Tensor]] | None:
        if len(self._graphs) >= MAX_RECORDINGS:
            self._given_up = True
            return None
        model, guide, args, kwargs = call
        wanted, (_, hyper, repeat), states = active(program, params), key, layout.states

        def fused_steps(*_: Tensor) -> list[Tensor]:
            losses = []
            for _ in range(repeat):  # the updates are in place: the next step reads them
                loss, surrogate = loss_tensors(elbo, model, guide, args, kwargs)
                grads = torch.autograd.grad(surrogate, wanted) if wanted else ()
                with torch.no_grad():
                    for param, grad, state, options in zip(
                        wanted, grads, states, hyper, strict=True
                    ):
                        adam_(param, grad, state, options)
                losses.append(loss)
            return [*losses, *program.buffers.read()]

        inputs = _inputs(program, params, layout, call)
        with preserved_rng_state(), program.buffers.kept(), _restored(inputs):
            start = time.perf_counter()
            recording = record(fused_steps, inputs, host_reading_modules(elbo))
            self.stats.record_seconds += time.perf_counter() - start
            self.stats.graphs += 1
            graph = compile_graph(recording.graph, inputs, self.backend, self.stats)
        self._graphs[key] = graph
        return graph

    def _layout_of(self, optimizer: Optimizer | None, params: list[Tensor]) -> "_Layout | None":
        # the state tensors persist (updated in place); load_state_dict replaces the dict
        key = id(optimizer), id(getattr(optimizer, "state", None)), tuple(map(id, params))
        if self._layout is None or self._layout[0] != key:
            self._layout = key, _Layout.of(optimizer, params)
        return self._layout[1]


class AdamHyperparameters(NamedTuple):
    """The options of one parameter group of ``torch.optim.Adam``.

    Fields:
        lr: Learning rate.
        beta1: Decay rate of the first-moment estimate.
        beta2: Decay rate of the second-moment estimate.
        eps: Added to the denominator for numerical stability.
        weight_decay: L2 penalty, added to the gradient.
    """

    lr: float
    beta1: float
    beta2: float
    eps: float
    weight_decay: float


class _Layout(NamedTuple):
    """Where the optimiser keeps each parameter's group and state."""

    groups: list[dict[str, Any]]
    states: list[tuple[Tensor, Tensor, Tensor]]

    @classmethod
    def of(cls, optimizer: Optimizer | None, params: list[Tensor]) -> "_Layout | None":
        """``None`` if the update cannot be fused: another optimiser or options, or a
        parameter without state yet."""
        if type(optimizer) is not Adam:
            return None
        by_param = {id(p): group for group in optimizer.param_groups for p in group["params"]}
        groups = [by_param.get(id(p)) for p in params]
        state = optimizer.state
        if any(g is None or not _plain(g) for g in groups) or any(
            "exp_avg" not in state.get(p, {}) for p in params
        ):
            return None
        return cls(groups, [tuple(state[p][k] for k in STATE) for p in params])

    def hyperparameters(self) -> tuple[AdamHyperparameters, ...]:
        """Each parameter's hyperparameters, read at every step (a schedule changes them)."""
        return tuple(
            AdamHyperparameters(g["lr"], *g["betas"], g["eps"], g["weight_decay"])
            for g in self.groups
        )


def _inputs(
    program: Program,
    params: list[Tensor],
    layout: _Layout,
    call: tuple[Callable, Callable, tuple, dict],
) -> list[Tensor]:
    buffers, data = program.buffers.read(), tensor_leaves(call[2], call[3])
    return [
        *params,
        *buffers,
        *data,
        *(t for k in range(3) for t in (s[k] for s in layout.states)),
    ]


def _plain(group: dict[str, Any]) -> bool:
    return not (
        group["amsgrad"]
        or group["maximize"]
        or group.get("differentiable")
        or group.get("capturable")
        or group.get("decoupled_weight_decay")
        or isinstance(group["lr"], Tensor)
    )


@contextlib.contextmanager
def _restored(tensors: list[Tensor]) -> Iterator[None]:
    """Puts back the values of ``tensors`` that recording and compiling updated in place."""
    saved = [t.detach().clone() for t in tensors]
    try:
        yield
    finally:
        with torch.no_grad():
            torch._foreach_copy_(tensors, saved)


def adam_(
    param: Tensor,
    grad: Tensor,
    state: tuple[Tensor, Tensor, Tensor],
    options: AdamHyperparameters,
) -> None:
    """torch.optim.Adam's single-tensor update of one parameter, in place.

    Arguments:
        param: The parameter, updated in place.
        grad: Its gradient.
        state: The optimiser's ``(exp_avg, exp_avg_sq, step)`` of the parameter, updated in
            place.
        options: The hyperparameters of the parameter's group.
    """
    exp_avg, exp_avg_sq, step = state
    lr, beta1, beta2, eps, weight_decay = options
    step.add_(1)
    count = step.to(param.dtype)  # torch's Adam takes the step count as a Python float
    if weight_decay:
        grad = grad.add(param, alpha=weight_decay)
    exp_avg.lerp_(grad, 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    bias_correction1 = 1 - torch.pow(beta1, count)
    bias_correction2 = 1 - torch.pow(beta2, count)
    denom = (exp_avg_sq.sqrt() / bias_correction2.sqrt()).add_(eps)
    param.sub_(lr / bias_correction1 * exp_avg / denom)
