"""The SVI runner every pyroext model and the CLI train with."""

__all__ = ["COMPILE_MIN_STEPS", "NonFiniteLossError", "SVIResult", "run_svi"]

import os
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import pyro
import torch
import torch.distributed as dist
from pyro.infer import Trace_ELBO
from pyro.infer.elbo import ELBO
from pyro.optim import PyroOptim

from pyroext.checks import check_counts
from pyroext.infer.batches import BatchStream
from pyroext.infer.checkpoint import check_writable, save_checkpoint
from pyroext.infer.compiled import CompiledELBO, compiled_elbo
from pyroext.infer.compiled.elbo import COMPILED
from pyroext.infer.convergence import Convergence
from pyroext.infer.device import resolve_device, to_device
from pyroext.infer.distributed import (
    AllReduceOptim,
    broadcast_parameters,
    gather_losses,
    is_main_process,
    shard_loader,
)
from pyroext.infer.guard import NonFiniteLossError, NonFiniteParameterError, non_finite_state
from pyroext.infer.optim import FusedOptim
from pyroext.infer.progress import TrainingProgress, final_health
from pyroext.infer.result import SVIResult
from pyroext.infer.resume import load_for_resume, restore_training, training_state
from pyroext.infer.serialization import warm_up
from pyroext.infer.step import TensorSVI

COMPILE_MIN_STEPS = 2000
"""Steps from which ``compile="auto"`` compiles: recording and compiling take seconds (a few
on a small model, tens on an MCMC guide), which a compiled step repays only over thousands of
steps (benchmarks/compiled_svi.py)."""


def run_svi(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    *args: Any,
    num_steps: int,
    loss: ELBO | None = None,
    optim: PyroOptim | None = None,
    data: Iterable[Any] | None = None,
    batch_args: Callable[[Any], tuple[Any, ...]] | None = None,
    model_kwargs: dict[str, Any] | None = None,
    device: str | torch.device | None = None,
    seed: int | None = None,
    progress: bool = True,
    display_every: int = 100,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 500,
    resume: bool = False,
    convergence: Convergence | None = None,
    distributed: bool = False,
    compile: bool | str = False,
) -> SVIResult:
    """Trains a guide with :class:`pyro.infer.SVI` on full-batch data or a stream of batches.

    Losses stay on the device and are synced to the host once per ``display_every`` steps (and
    before a checkpoint), where the NaN/inf guard, progress bar and convergence rule look at
    them. A non-finite loss stops training with :class:`NonFiniteLossError`, and a
    non-finite parameter or optimiser state (from a non-finite gradient, say, while the loss
    is still finite) with :class:`NonFiniteParameterError`; checkpoints are written only after
    both checks, so the last one on disk always holds finite state.

    Arguments:
        model: A Pyro model.
        guide: A Pyro or pyroext guide.
        args: Model arguments for every step; with ``data``, they follow each batch's arguments.
        num_steps: Total optimiser steps, counting those before a resume (>= 1).
        loss: Any Pyro ELBO; ``Trace_ELBO()`` by default.
        optim: A Pyro optimiser; ``pyro.optim.Adam({"lr": 0.01})`` by default.
        data: Optional re-iterable of batches (e.g. a DataLoader), cycled over epochs.
        batch_args: Turns a batch into leading model arguments; by default a tuple or list is
            unpacked and anything else is passed as one argument.
        model_kwargs: Keyword arguments for model and guide.
        device: ``"cpu"``, ``"cuda"``, a ``torch.device``, or ``None`` to follow the inputs.
        seed: Seeds Pyro's generators before training (ignored when resuming).
        progress: Show a tqdm bar with step, smoothed ELBO and steps/s, and for MCMC-in-guide
            guides their acceptance and step size per step (:mod:`pyroext.infer.progress`).
        display_every: Steps between host syncs (>= 1).
        checkpoint: File to save training state to every ``checkpoint_every`` steps and at
            the end.
        checkpoint_every: Steps between checkpoints (>= 1).
        resume: Continue from ``checkpoint``; the run then matches an uninterrupted one.
            Networks registered with ``pyro.module`` inside the model or guide must pass
            ``update_module_params=True``: the restored param store then becomes their weights
            (otherwise they keep fresh weights that the optimiser never steps).
        convergence: Optional early-stopping rule on the smoothed loss.
        distributed: Data-parallel training in the process group joined by
            :func:`~pyroext.infer.distributed.init_distributed` (see
            :mod:`pyroext.infer.distributed`): ``data`` (a ``DataLoader``, ``batch_size`` per
            process) is sharded, parameters start from rank 0's, process ``r`` then draws with
            seed ``seed + r``, gradients are averaged, the recorded loss of a step is the mean
            over processes, and only rank 0 writes the checkpoint and shows progress. A
            non-finite loss on any process stops every process at the same step.
        compile: ``True`` runs every step as one compiled graph
            (:class:`~pyroext.infer.compiled.CompiledELBO`: ``Trace_ELBO`` and
            ``TraceMeanField_ELBO``, with the same draws as eager Pyro) and raises
            :class:`~pyroext.infer.compiled.NotCompilable` for a program one graph cannot
            stand for; ``"auto"`` compiles runs of at least :data:`COMPILE_MIN_STEPS` steps and
            goes on eagerly, with a warning naming the site and reason, where compiling fails
            (an ELBO without a compiled counterpart, such as ``TraceEnum_ELBO``, stays eager).

    Returns:
        An :class:`SVIResult`.

    Raises:
        ValueError: For invalid options, before any training step, and for a checkpoint that
            does not fit the run (naming the file and the mismatch) or already holds more
            than ``num_steps`` steps.
        NonFiniteLossError: When a loss is NaN or infinite.
        NonFiniteParameterError: When a parameter or optimiser state is NaN or infinite.
    """
    _validate(num_steps, display_every, checkpoint, checkpoint_every, resume, convergence)
    loss, optim = _engine(loss, optim, compile, num_steps)
    if distributed:
        _validate_distributed(data)
        data = shard_loader(data, seed or 0)
        optim = AllReduceOptim(optim)
    device = resolve_device(device, args, model_kwargs)
    args, model_kwargs = to_device(args, device), to_device(model_kwargs or {}, device)
    for module in (model, guide):
        if isinstance(module, torch.nn.Module):
            module.to(device)
    loop = _Loop(
        svi=TensorSVI(model, guide, optim, loss),
        stream=BatchStream(data) if data is not None else None,
        make_args=_argument_builder(args, batch_args, device),
        model_kwargs=model_kwargs,
        checkpoint=checkpoint,
        distributed=distributed,
    )
    if resume:
        loop.resume(device, num_steps)
    else:
        if seed is not None:
            pyro.set_rng_seed(seed)
        if distributed:
            loop.start_together(seed)
    progress = progress and is_main_process()
    return loop.run(num_steps, display_every, checkpoint_every, convergence, progress)


def _engine(
    loss: ELBO | None, optim: PyroOptim | None, compile: bool | str, num_steps: int
) -> tuple[ELBO, PyroOptim]:
    """The ELBO and optimiser of a run: compiled ones where ``compile`` asks for them."""
    if not (isinstance(compile, bool) or compile == "auto"):
        raise ValueError(f"compile={compile!r} must be True, False or 'auto'")
    loss = loss or Trace_ELBO()
    # "auto" leaves alone what would not compile anyway (TraceEnum_ELBO, say) without a word
    compilable = isinstance(loss, CompiledELBO) or type(loss) in COMPILED
    if compile is True or (compile == "auto" and compilable and num_steps >= COMPILE_MIN_STEPS):
        loss = compiled_elbo(loss, strict=compile is True)
        if optim is None:  # one fused Adam kernel, not one torch optimiser per parameter
            optim = FusedOptim(torch.optim.Adam, {"lr": 0.01, "fused": True})
    return loss, optim or pyro.optim.Adam({"lr": 0.01})


def _validate(
    num_steps: int,
    display_every: int,
    checkpoint: Any,
    checkpoint_every: int,
    resume: bool,
    convergence: Convergence | None,
) -> None:
    check_counts(
        num_steps=num_steps, display_every=display_every, checkpoint_every=checkpoint_every
    )
    if resume and checkpoint is None:
        raise ValueError("resume=True needs checkpoint=<path of the checkpoint to resume>")
    if checkpoint is not None:
        check_writable(checkpoint, "checkpoint")
    if convergence is not None:
        convergence.validate()


def _validate_distributed(data: Any) -> None:
    if not dist.is_initialized():
        raise ValueError(
            "distributed=True needs a torch.distributed process group: launch with torchrun "
            "and call pyroext.infer.init_distributed(device) first"
        )
    if data is None:
        raise ValueError("distributed=True needs data= (a DataLoader that each process shards)")


def _leave_group(error: Exception) -> None:
    """Leaves the process group after a failed step, so that the other processes fail at
    their next collective (at once with gloo, or when torchrun stops them) instead of waiting
    for this one until the timeout. Syncing losses first is not possible: the others may be
    in a different collective."""
    rank, world = dist.get_rank(), dist.get_world_size()
    error.add_note(
        f"pyroext.run_svi: rank {rank} of {world} failed and left the process group; an error "
        "'Connection closed by peer' on one rank means another failed first: see its error"
    )
    dist.destroy_process_group()


def _argument_builder(
    args: tuple[Any, ...], batch_args: Callable[[Any], tuple[Any, ...]] | None, device: Any
) -> Callable[[Any], tuple[Any, ...]]:
    def unpack(batch: Any) -> tuple[Any, ...]:
        return tuple(batch) if isinstance(batch, tuple | list) else (batch,)

    def build(batch: Any) -> tuple[Any, ...]:
        if batch is None:
            return args
        return (*to_device((batch_args or unpack)(batch), device), *args)

    return build


class _Loop:
    """Mutable training state of one :func:`run_svi` call."""

    def __init__(
        self,
        svi: TensorSVI,
        stream: BatchStream | None,
        make_args: Callable[[Any], tuple[Any, ...]],
        model_kwargs: dict[str, Any],
        checkpoint: str | os.PathLike | None,
        distributed: bool = False,
    ) -> None:
        self.svi, self.stream, self.make_args = svi, stream, make_args
        self.model_kwargs, self.checkpoint = model_kwargs, checkpoint
        self.distributed = distributed
        self.losses = np.empty(0)
        self.pending: list[torch.Tensor] = []
        self.last_args: tuple[Any, ...] | None = None
        self.step = 0
        self.saved_step: int | None = None  # the step the checkpoint file holds
        self.checked_step = 0  # the last step after which all state was finite

    def next_args(self) -> tuple[Any, ...]:
        return self.make_args(self.stream.next() if self.stream else None)

    def resume(self, device: torch.device, num_steps: int) -> None:
        state = load_for_resume(self.checkpoint, num_steps)
        first_args = self._first_args()
        restore_training(
            self.svi, self.stream, state, first_args, self.model_kwargs, device, self.checkpoint
        )
        self.losses, self.step = np.asarray(state["losses"], dtype=float), state["step"]
        self.saved_step = self.checked_step = self.step

    def start_together(self, seed: int | None) -> None:
        """Creates the lazily built parameters, copies rank 0's to every process and gives
        each process its own random stream."""
        first_args = self._first_args()
        warm_up(self.svi.model, *first_args, **self.model_kwargs)
        warm_up(self.svi.guide, *first_args, **self.model_kwargs)
        broadcast_parameters((self.svi.model, self.svi.guide))
        base = torch.initial_seed() if seed is None else seed
        pyro.set_rng_seed(base + dist.get_rank())

    def _first_args(self) -> tuple[Any, ...]:
        if self.stream is None:
            return self.make_args(None)
        return self.make_args(next(iter(self.stream.loader)))

    def run(
        self,
        num_steps: int,
        display_every: int,
        checkpoint_every: int,
        convergence: Convergence | None,
        progress: bool,
    ) -> SVIResult:
        start, reason = time.perf_counter(), "max_steps"
        bar = TrainingProgress(num_steps, self.step, progress, self.svi.guide)
        with bar:
            while self.step < num_steps:
                self._guarded_step()
                at_checkpoint = self.checkpoint is not None and (
                    self.step % checkpoint_every == 0 or self.step == num_steps
                )
                if self.step % display_every and not at_checkpoint and self.step < num_steps:
                    continue
                self._sync(bar)
                if at_checkpoint:
                    self._save()
                if convergence is not None and convergence.reached(self.losses):
                    reason = "converged"
                    break
        change = convergence.relative_change(self.losses) if convergence else None
        wall_time = time.perf_counter() - start
        health = (
            final_health(self.svi.guide, self.last_args, self.model_kwargs)
            if is_main_process()
            else None
        )
        compiled = self._compile_time()
        return SVIResult(self.losses, self.step, wall_time, reason, change, compiled, health)

    def _compile_time(self) -> float:
        loss = self.svi.elbo
        return loss.compile_stats.total_seconds if isinstance(loss, CompiledELBO) else 0.0

    def _guarded_step(self) -> None:
        try:
            args = self.last_args = self.next_args()
            self.pending.append(self.svi.step_tensor(*args, **self.model_kwargs))
        except Exception as error:
            saved = self._saved()
            if self.distributed:
                _leave_group(error)
            else:
                self._sync(None)  # a NaN that preceded the crash is the better explanation
            saved = saved or "no checkpoint was written"
            error.add_note(f"pyroext.run_svi: step {self.step + 1} failed; {saved}")
            raise
        self.step += 1

    def _save(self) -> None:
        state = training_state(self)  # a collective when distributed: every rank takes part
        if is_main_process():
            save_checkpoint(self.checkpoint, state)
        self.saved_step = self.step

    def _sync(self, bar: Any) -> None:
        if not self.pending:
            return
        values = torch.stack([v.reshape(()) for v in self.pending])
        by_rank = gather_losses(values) if self.distributed else values[None]
        by_rank = by_rank.to("cpu", torch.float64).numpy()
        first_step = len(self.losses) + 1
        self.losses = np.concatenate([self.losses, by_rank.mean(0)])
        self.pending.clear()
        bad = np.argwhere(~np.isfinite(by_rank.T))  # (step, rank) pairs, earliest first
        if len(bad):
            index, rank = (int(i) for i in bad[0])
            raise NonFiniteLossError(
                first_step + index,
                by_rank[rank, index],
                self.losses,
                self._saved(),
                rank if self.distributed else None,
            )
        self._check_state()
        if bar is not None:
            bar.update(self.step, self.losses, self.last_args, self.model_kwargs)

    def _check_state(self) -> None:
        """Stops on a non-finite parameter, module state or optimiser state: a finite loss is
        computed before the update, so it misses a non-finite gradient or an overflow."""
        found = non_finite_state(self.svi)
        if found is not None:
            raise NonFiniteParameterError(*found, self.step, self.checked_step, self._saved())
        self.checked_step = self.step

    def _saved(self) -> str | None:
        """What the checkpoint file holds now, for error messages."""
        if self.checkpoint is None:
            return None
        writer = "rank 0 writes the checkpoints" if not is_main_process() else ""
        if self.saved_step is not None:
            intact = f"checkpoint {str(self.checkpoint)!r} is intact (step {self.saved_step})"
            return f"{writer}; {intact}" if writer else intact
        if writer:
            return writer
        if os.path.exists(self.checkpoint):
            return f"checkpoint {str(self.checkpoint)!r} was not written by this run"
        return "no checkpoint was written"
