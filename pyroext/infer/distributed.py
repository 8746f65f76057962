"""Data-parallel SVI over ``torch.distributed``: one process per device, launched by
``torchrun``, each drawing its own minibatches, with gradients averaged across processes.

Gradients are averaged by an all-reduce in the optimiser (:class:`AllReduceOptim`) rather than
by wrapping an ELBO module in ``DistributedDataParallel``. DDP reduces only the parameters of
the module it wraps, fixed when it is wrapped, and hooks them through that module's
``forward``. Pyro's parameters live in the param store instead: autoguides create theirs on
the first call, ``pyro.param`` sites need not belong to any module, and pyroext's
:class:`~pyroext.infer.TensorSVI` differentiates ``ELBO.differentiable_loss`` directly. The
optimiser is the one place that sees every parameter of a step, whatever created it, so
averaging there works for every guide and ELBO, MCMC-in-guide kernels included. The cost is
that communication does not overlap the backward pass; it is one all-reduce per dtype per
step over all gradients flattened together.

Each process's loss uses the model's own minibatch scaling (``num_data / batch_size``) and is
therefore an unbiased estimate of the full-data ELBO; the average of ``W`` of them is the
estimate from a global batch ``W`` times larger, so ``batch_size`` is per process.

References:
    Li et al. (2020). PyTorch Distributed: Experiences on Accelerating Data Parallel
    Training. https://arxiv.org/abs/2006.15704
"""

__all__ = [
    "AllReduceOptim",
    "broadcast_parameters",
    "gather_losses",
    "init_distributed",
    "is_main_process",
    "launched_by_torchrun",
    "shard_loader",
]

import datetime
import os
from collections.abc import Iterable
from typing import Any

import pyro
import torch
import torch.distributed as dist
from pyro.optim import PyroOptim
from torch import Tensor
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

from pyroext.infer.device import resolve_device

TIMEOUT = datetime.timedelta(minutes=10)
"""How long a process waits for the others at a collective before it fails."""


def launched_by_torchrun() -> bool:
    """Whether this process is one of several started by ``torchrun`` (``WORLD_SIZE`` set)."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def init_distributed(device: str | torch.device | None = "cpu") -> torch.device:
    """Joins the process group ``torchrun`` describes in the environment, if any.

    The backend is NCCL for CUDA and gloo for the CPU; on CUDA each process takes the GPU of
    its ``LOCAL_RANK``. Outside ``torchrun`` (or if the group exists already) nothing is joined.

    Arguments:
        device: ``"cpu"`` or ``"cuda"`` (any index is replaced by ``LOCAL_RANK``).

    Returns:
        This process's device.

    Raises:
        ValueError: If ``device`` is invalid or names CUDA where there is none.
    """
    resolved = resolve_device(device)
    if not launched_by_torchrun() or dist.is_initialized():
        return resolved
    if resolved.type == "cuda":
        resolved = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(resolved)
    backend = "nccl" if resolved.type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=TIMEOUT, device_id=_device_id(resolved))
    return resolved


def is_main_process() -> bool:
    """True outside a process group and on rank 0: the process that writes files and logs."""
    return not dist.is_initialized() or dist.get_rank() == 0


def shard_loader(loader: DataLoader, seed: int = 0) -> DataLoader:
    """A copy of ``loader`` whose sampler gives this process its own share of every epoch.

    A shuffling loader gets ``DistributedSampler(shuffle=True, seed=seed)``, whose epoch
    permutation is the same on every process (a function of ``seed`` and the epoch), each
    process taking every ``W``-th index of it; a sequential loader is split the same way in
    order. Batch size, collation and workers are kept, so the global batch is ``W`` times the
    loader's. A loader that already has a ``DistributedSampler`` is returned as it is.

    Arguments:
        loader: A map-style ``DataLoader``.
        seed: Seed of the shared epoch permutations.

    Returns:
        The sharded loader.

    Raises:
        ValueError: Outside a process group.
        TypeError: If ``loader`` is not a ``DataLoader`` or has a custom sampler.
    """
    if not dist.is_initialized():
        raise ValueError(
            "sharding data needs a torch.distributed process group: launch with torchrun "
            "(or `pyroext fit ... --nproc-per-node N`) and call init_distributed(device) first"
        )
    if not isinstance(loader, DataLoader):
        raise TypeError(f"data must be a torch DataLoader to be sharded, got {type(loader)}")
    if isinstance(loader.sampler, DistributedSampler):
        return loader
    shuffle = isinstance(loader.sampler, RandomSampler)
    if not shuffle and type(loader.sampler).__name__ != "SequentialSampler":
        raise TypeError("data's sampler must be sequential or random to be sharded")
    sampler = DistributedSampler(loader.dataset, shuffle=shuffle, seed=seed, drop_last=True)
    return DataLoader(
        loader.dataset,
        batch_size=loader.batch_size,
        sampler=sampler,
        drop_last=loader.drop_last,
        collate_fn=loader.collate_fn,
        num_workers=loader.num_workers,
        pin_memory=loader.pin_memory,
    )


def broadcast_parameters(modules: Iterable[Any]) -> None:
    """Copies rank 0's param store, and the buffers of any ``nn.Module`` in ``modules``, to
    every process, so that all start from the same point whatever their seeds.

    Arguments:
        modules: Model and guide: modules, or methods of modules (as ``vae.model``).
    """
    store = pyro.get_param_store()
    for name in sorted(store.keys()):
        dist.broadcast(store.get_param(name).unconstrained().data, src=0)
    for fn in modules:
        module = getattr(fn, "__self__", fn)
        if isinstance(module, torch.nn.Module):
            for buffer in module.buffers():
                dist.broadcast(buffer.data, src=0)


def gather_losses(losses: Tensor) -> Tensor:
    """Every process's losses of the same steps, shape ``(W, steps)``.

    Arguments:
        losses: This process's losses, shape ``(steps,)``, on its device.

    Returns:
        All processes' losses, rank by rank, on the same device.
    """
    gathered = [torch.empty_like(losses) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, losses)
    return torch.stack(gathered)


class AllReduceOptim(PyroOptim):
    """Wraps a Pyro optimiser so that each step first averages gradients across processes.

    Parameters are ordered by their param-store name, which every process shares, and the
    gradients of each dtype are flattened into one buffer with one flag per parameter saying
    whether the process has a gradient for it. After the sum over processes, a parameter that
    no process has a gradient for keeps ``grad=None`` (the inner optimiser then skips it, as
    in a single process); the others get the sum divided by the world size.

    Every process must step the same parameters (true whenever the model's and guide's
    parameters do not depend on the data drawn).

    Arguments:
        optim: Any Pyro optimiser, e.g. :class:`~pyroext.infer.FusedOptim`.
    """

    def __init__(self, optim: PyroOptim) -> None:
        self.optim = optim

    def __call__(self, params: Iterable[Tensor], *args: Any, **kwargs: Any) -> None:
        """Averages the gradients of ``params`` over processes, then steps them."""
        ordered = sorted(params, key=pyro.get_param_store().param_name)
        for dtype in {param.dtype for param in ordered}:
            _average_gradients([param for param in ordered if param.dtype == dtype])
        self.optim(ordered, *args, **kwargs)

    def get_state(self) -> dict[str, Any]:
        """The inner optimiser's state (identical on every process)."""
        return self.optim.get_state()

    def set_state(self, state_dict: dict[str, Any]) -> None:
        """Restores the inner optimiser's state."""
        self.optim.set_state(state_dict)


def _average_gradients(params: list[Tensor]) -> None:
    missing = [p.grad is None for p in params]
    grads = [torch.zeros_like(p) if m else p.grad for p, m in zip(params, missing, strict=True)]
    # One flag per parameter, sent by every process so that all buffers have one length; read
    # back (a host sync) only by a process that lacks a gradient, since a process that has
    # them all knows every parameter gets one.
    first = params[0]
    flags = (
        first.new_tensor([not m for m in missing]) if any(missing) else first.new_ones(len(params))
    )
    flat = torch.cat([*(g.reshape(-1) for g in grads), flags])
    dist.all_reduce(flat.div_(dist.get_world_size()))
    anyone = flat[-len(params) :].gt(0).tolist() if any(missing) else [True] * len(params)
    offset = 0
    for param, has_grad in zip(params, anyone, strict=True):
        if has_grad:
            param.grad = flat[offset : offset + param.numel()].view_as(param)
        offset += param.numel()


def _device_id(device: torch.device) -> torch.device | None:
    return device if device.type == "cuda" else None
