"""What a checkpoint holds, and how a fresh process is put back into that state."""

__all__ = ["restore_training", "training_state"]

from typing import Any

import pyro
import torch
import torch.distributed as dist

from pyroext.infer.batches import BatchStream
from pyroext.infer.checkpoint import capture_rng_state, restore_rng_state
from pyroext.infer.serialization import warm_up
from pyroext.infer.step import TensorSVI

CHECKPOINT_FORMAT = 1


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


def restore_training(
    svi: TensorSVI,
    stream: BatchStream | None,
    state: dict[str, Any],
    first_args: tuple[Any, ...],
    model_kwargs: dict[str, Any],
    device: torch.device,
) -> None:
    """Puts freshly built model, guide, optimiser and batch stream into a checkpointed state.

    Arguments:
        svi: The SVI object of the resumed run (fresh guide and optimiser).
        stream: Its batch stream, if training on batches.
        state: A checkpoint from :func:`training_state`.
        first_args: Model arguments used once to create lazily built parameters.
        model_kwargs: Model keyword arguments, likewise.
        device: Where parameters live in the resumed run.

    Raises:
        ValueError: If the checkpoint was written by an incompatible pyroext version.
    """
    if state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"checkpoint format {state.get('format')} != {CHECKPOINT_FORMAT}")
    params = state["param_store"]["params"]
    state["param_store"]["params"] = {k: _on_device(v, device) for k, v in params.items()}
    # Restored before the warm-up so that lazily built modules adopt these very tensors
    # (PyroModule takes an existing param-store entry by name); loading after the warm-up
    # would leave two tensors per name and the optimiser state on the wrong one.
    pyro.get_param_store().set_state(state["param_store"])
    warm_up(svi.model, *first_args, **model_kwargs)
    warm_up(svi.guide, *first_args, **model_kwargs)
    for name, module_state in state["modules"].items():
        getattr(svi, name).load_state_dict(module_state)
    svi.optim.set_state(state["optim"])
    if stream is not None and state["batches"] is not None:
        stream.restore(state["batches"])
    restore_rng_state(_own_rng(state))


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
