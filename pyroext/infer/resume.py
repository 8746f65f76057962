"""What a checkpoint holds, and how a fresh process is put back into that state."""

__all__ = ["load_for_resume", "restore_training", "training_state"]

import os
from typing import Any

import pyro
import torch
import torch.distributed as dist
from pyro import poutine
from pyro.poutine.messenger import Messenger
from pyro.poutine.runtime import Message

from pyroext.infer.batches import BatchStream
from pyroext.infer.checkpoint import (
    capture_rng_state,
    load_checkpoint,
    preserved_rng_state,
    restore_rng_state,
)
from pyroext.infer.step import TensorSVI

CHECKPOINT_FORMAT = 2
"""Version of what :func:`training_state` holds (2: the guide class was added)."""


def training_state(loop: Any) -> dict[str, Any]:
    """Collects the state of a training loop for :func:`~pyroext.infer.checkpoint.save_checkpoint`.

    Arguments:
        loop: The runner's loop, with ``svi``, ``stream``, ``losses``, ``step`` and
            ``distributed``.

    Returns:
        Step, loss history, param store, model and guide state dicts, optimiser state, batch
        position and every RNG state (for a data-parallel loop, every process's: gathering
        them is a collective that all processes must enter).
    """
    svi = loop.svi
    return {
        "format": CHECKPOINT_FORMAT,
        "guide_class": _class_name(svi.guide),
        "step": loop.step,
        "losses": loop.losses.copy(),
        "param_store": pyro.get_param_store().get_state(),
        "modules": {
            name: module.state_dict()
            for name, module in (("model", svi.model), ("guide", svi.guide))
            if isinstance(module, torch.nn.Module)
        },
        "optim": svi.optim.get_state(),
        "batches": loop.stream.state() if loop.stream is not None else None,
        "rng": capture_rng_state(),
        "rng_by_rank": _gather_rng() if loop.distributed else None,
    }


def load_for_resume(path: str | os.PathLike, num_steps: int) -> dict[str, Any]:
    """Loads a checkpoint to resume a run of ``num_steps`` steps from.

    Arguments:
        path: The checkpoint file.
        num_steps: Steps the resumed run is to reach in total.

    Returns:
        The checkpoint's state.

    Raises:
        ValueError: If the file is no valid checkpoint (see
            :func:`~pyroext.infer.checkpoint.load_checkpoint`), or holds more steps than
            ``num_steps`` (the run would otherwise return more steps than asked for).
    """
    state = load_checkpoint(path)
    step = state.get("step") if isinstance(state, dict) else None
    if isinstance(step, int) and step > num_steps:
        raise ValueError(
            f"checkpoint={str(path)!r} already holds {step} steps and num_steps={num_steps} "
            f"is fewer; pass num_steps >= {step} to train on, or train afresh without resume"
        )
    return state


def restore_training(
    svi: TensorSVI,
    stream: BatchStream | None,
    state: dict[str, Any],
    first_args: tuple[Any, ...],
    model_kwargs: dict[str, Any],
    device: torch.device,
    path: str | os.PathLike | None = None,
) -> None:
    """Puts freshly built model, guide, optimiser and batch stream into a checkpointed state.

    Arguments:
        svi: The SVI object of the resumed run (fresh guide and optimiser).
        stream: Its batch stream, if training on batches.
        state: A checkpoint from :func:`training_state`.
        first_args: Model arguments used once to create lazily built parameters.
        model_kwargs: Model keyword arguments, likewise.
        device: Where parameters live in the resumed run.
        path: The checkpoint's file, to name in error messages.

    Raises:
        ValueError: If the checkpoint was written by an incompatible pyroext version, or for
            another guide class, other parameter names or shapes (naming the file and the
            mismatch); the param store is then left as it was.
    """
    name = "the checkpoint" if path is None else f"checkpoint={str(path)!r}"
    _check_origin(svi, state, name)
    store = pyro.get_param_store()
    before = store.get_state()
    try:
        _restore_parameters(svi, state, first_args, model_kwargs, device, name)
    except ValueError:
        store.clear()
        store.set_state(before)
        raise
    svi.optim.set_state(state["optim"])
    if stream is not None and state["batches"] is not None:
        stream.restore(state["batches"])
    restore_rng_state(_own_rng(state))


def _check_origin(svi: TensorSVI, state: dict[str, Any], name: str) -> None:
    """Refuses a checkpoint of another pyroext version or another guide class."""
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        found = state.get("format") if isinstance(state, dict) else None
        raise ValueError(
            f"{name} holds training state of format {found}, this pyroext version resumes "
            f"format {CHECKPOINT_FORMAT}; resume with the version that wrote it or train afresh"
        )
    saved, current = state.get("guide_class"), _class_name(svi.guide)
    if saved is not None and current is not None and saved != current:
        raise ValueError(
            f"{name} was written by a run with a {saved} guide, this run's guide is a "
            f"{current}; resume with the guide it was trained with, or train afresh"
        )


def _restore_parameters(
    svi: TensorSVI,
    state: dict[str, Any],
    first_args: tuple[Any, ...],
    model_kwargs: dict[str, Any],
    device: torch.device,
    name: str,
) -> None:
    params = state["param_store"]["params"]
    state["param_store"]["params"] = {k: _on_device(v, device) for k, v in params.items()}
    # Restored before the warm-up so that lazily built modules adopt these very tensors
    # (PyroModule takes an existing param-store entry by name); loading after the warm-up
    # would leave two tensors per name and the optimiser state on the wrong one.
    pyro.get_param_store().set_state(state["param_store"])
    fresh: dict[str, torch.Size | None] = {}
    for role in ("model", "guide"):
        _warm_up_recording(getattr(svi, role), first_args, model_kwargs, fresh, role, name)
    _check_parameters(set(params), fresh, name)
    for role, module_state in state["modules"].items():
        try:
            getattr(svi, role).load_state_dict(module_state)
        except RuntimeError as error:
            gist = " ".join(str(error).split())[:300]
            raise ValueError(f"{name} does not fit this run's {role}: {gist}") from None


def _warm_up_recording(
    fn: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    fresh: dict[str, torch.Size | None],
    role: str,
    name: str,
) -> None:
    """:func:`~pyroext.infer.serialization.warm_up`, recording the parameters ``fn`` uses."""
    try:
        # the recorder goes inside the block, which would hide the param statements from it
        with preserved_rng_state(), poutine.block(), _FreshShapes(fresh):
            fn(*args, **kwargs)
    except (ValueError, RuntimeError, IndexError) as error:
        gist = " ".join(str(error).split())[:300]
        raise ValueError(
            f"this run's {role} fails with the parameters of {name} (was it written for "
            f"another model or guide?): {type(error).__name__}: {gist}"
        ) from error


class _FreshShapes(Messenger):
    """Records the shape each param statement's initial value would give, and so which
    parameters the model and guide use."""

    def __init__(self, shapes: dict[str, torch.Size | None]) -> None:
        super().__init__()
        self.shapes = shapes

    def _postprocess_message(self, msg: Message) -> None:
        if msg["type"] != "param":
            return
        init = msg["args"][1] if len(msg["args"]) > 1 else None
        shape = init.shape if isinstance(init, torch.Tensor) else None
        if self.shapes.get(msg["name"]) is None:
            self.shapes[msg["name"]] = shape


def _check_parameters(saved: set[str], fresh: dict[str, torch.Size | None], name: str) -> None:
    """Refuses a checkpoint that lacks parameters this run uses or gives them other shapes."""
    store = pyro.get_param_store()
    lacking = sorted(set(fresh) - saved)
    shapes = [
        f"{param!r} has shape {tuple(store[param].shape)} there, {tuple(shape)} in this run"
        for param, shape in sorted(fresh.items())
        if param in saved and shape is not None and store[param].shape != shape
    ]
    if not lacking and not shapes:
        return
    unused = sorted(saved - set(fresh))
    problems = [f"it lacks parameter(s) {_names(lacking)} of this run"] if lacking else []
    problems += [f"parameter {text}" for text in shapes[:5]]
    if unused:
        problems.append(f"it holds parameter(s) {_names(unused)} this run does not use")
    raise ValueError(
        f"{name} was written for another model or guide: {'; '.join(problems)}; resume with "
        "the model and guide it was trained with, or train afresh"
    )


def _names(names: list[str], most: int = 5) -> str:
    shown = ", ".join(repr(n) for n in names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def _class_name(fn: Any) -> str | None:
    """The class of a guide that is a module (functions carry no class worth comparing)."""
    if not isinstance(fn, torch.nn.Module):
        return None
    return f"{type(fn).__module__}.{type(fn).__qualname__}"


def _gather_rng() -> list[dict[str, Any]]:
    states: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(states, capture_rng_state())
    return states


def _own_rng(state: dict[str, Any]) -> dict[str, Any]:
    """This process's generators from a checkpoint: its own rank's when the checkpoint came
    from a process group of the same size, otherwise rank 0's."""
    by_rank = state.get("rng_by_rank")
    if dist.is_initialized() and by_rank is not None and len(by_rank) == dist.get_world_size():
        return by_rank[dist.get_rank()]
    return state["rng"]


def _on_device(param: torch.Tensor, device: torch.device) -> torch.Tensor:
    if param.device == device:
        return param
    return torch.nn.Parameter(param.detach().to(device), requires_grad=param.requires_grad)
