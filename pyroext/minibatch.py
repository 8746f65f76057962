"""Minibatch training shared by the jobs that stream data (the VAE and the BNN): where the run
is placed, seeded and, under ``torchrun``, sharded, each decided here once.
"""

__all__ = ["MinibatchConfig", "MinibatchResult", "start_run", "train_minibatch"]

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import pyro
import torch
from pyro.infer import ELBO
from torch.utils.data import DataLoader, Dataset

from pyroext.checks import check_counts, check_learning_rate
from pyroext.infer import FusedOptim, SVIResult, init_distributed, run_svi, shard_loader
from pyroext.infer.device import resolve_device
from pyroext.jobs import RunConfig, option
from pyroext.runs import RunDir


@dataclasses.dataclass(frozen=True, kw_only=True)
class MinibatchConfig(RunConfig):
    """Options of minibatch training: its length, batches, learning rate, data parallelism."""

    epochs: int | None = option(None, "passes over the training data (default: the dataset's)")
    steps: int | None = option(None, "optimiser steps instead of --epochs")
    batch_size: int = option(100, "training points per step (per process when distributed)")
    lr_init: float = option(1e-3, "Adam learning rate")
    distributed: bool = option(False, "train data-parallel under torchrun", cli=False)

    def __post_init__(self) -> None:
        check_counts(epochs=self.epochs, steps=self.steps, batch_size=self.batch_size)
        check_learning_rate(self.lr_init)


class MinibatchResult(NamedTuple):
    """What :func:`train_minibatch` ran: the runner's result, epochs and time per epoch."""

    result: SVIResult
    epochs: float
    seconds_per_epoch: float


def start_run(config: MinibatchConfig) -> torch.device:
    """The run's device, joining ``torchrun``'s process group for a distributed run, with
    Pyro's generators seeded and its param store cleared for building model and guide."""
    device = (
        init_distributed(config.device) if config.distributed else resolve_device(config.device)
    )
    pyro.set_rng_seed(config.seed)
    pyro.clear_param_store()
    return device


def train_minibatch(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    data: Dataset,
    config: MinibatchConfig,
    *,
    device: torch.device,
    loss: ELBO,
    default_epochs: int,
    batch_args: Callable[[Any], tuple[Any, ...]] | None = None,
) -> MinibatchResult:
    """Trains with Adam (one fused update) on shuffled minibatches of ``data``.

    The model and guide take the batch and ``num_data`` (the training set's size, which
    scales a batch's log-likelihood to the whole set).

    Arguments:
        model: The Pyro model.
        guide: Its guide.
        data: The training set.
        config: The run's options; the checkpoint is kept in its ``out`` folder.
        device: The run's device (:func:`start_run`).
        loss: The ELBO.
        default_epochs: Epochs when ``config`` gives neither epochs nor steps.
        batch_args: Turns a batch into model arguments (default: the batch's tensors).

    Returns:
        A :class:`MinibatchResult`.
    """
    batch_size = min(config.batch_size, len(data))
    loader = DataLoader(data, batch_size=batch_size, shuffle=True, drop_last=True)
    if config.distributed:  # an epoch's steps are counted on this process's share
        loader = shard_loader(loader, config.seed)
    total_steps = config.steps or len(loader) * (config.epochs or default_epochs)
    result = run_svi(
        model,
        guide,
        data=loader,
        batch_args=batch_args,
        model_kwargs={"num_data": len(data)},
        num_steps=total_steps,
        optim=FusedOptim(torch.optim.Adam, {"lr": config.lr_init}),
        loss=loss,
        device=device,
        seed=config.seed,
        progress=config.progress,
        compile=config.compile,
        checkpoint=None if config.out is None else RunDir(config.out).checkpoint,
        resume=config.resume,
        distributed=config.distributed,
    )
    epochs = total_steps / len(loader)
    return MinibatchResult(result, epochs, result.wall_time / epochs)
