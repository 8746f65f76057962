"""An endless, resumable stream of minibatches over any iterable of batches."""

__all__ = ["BatchStream"]

from collections.abc import Iterable, Iterator
from typing import Any

from pyroext.infer.checkpoint import capture_rng_state, restore_rng_state


class BatchStream:
    """Cycles over ``loader`` epoch after epoch and can resume mid-epoch exactly.

    A shuffling ``DataLoader`` draws its permutation from torch's global generator when an
    epoch's iterator is created, so the stream records the generator state at that moment;
    resuming replays the permutation from it and skips the batches already used.
    ``sampler.set_epoch`` is called each epoch (as ``DistributedSampler`` requires).

    Arguments:
        loader: A re-iterable source of batches, e.g. a ``torch.utils.data.DataLoader``.
    """

    def __init__(self, loader: Iterable[Any]) -> None:
        self.loader = loader
        self.epoch = 0
        self.index = 0
        self._rng_at_epoch_start: dict[str, Any] | None = None
        self._iterator: Iterator[Any] | None = None

    def next(self) -> Any:
        """Returns the next batch, starting a new epoch when the current one is exhausted."""
        if self._iterator is None:
            self._start_epoch()
        try:
            batch = next(self._iterator)
        except StopIteration:
            if self.index == 0:
                raise ValueError("data yielded no batches; it must not be empty") from None
            self.epoch, self.index = self.epoch + 1, 0
            self._start_epoch()
            batch = next(self._iterator)
        self.index += 1
        return batch

    def state(self) -> dict[str, Any]:
        """Position in the stream, for a checkpoint."""
        return {"epoch": self.epoch, "index": self.index, "rng": self._rng_at_epoch_start}

    def restore(self, state: dict[str, Any]) -> None:
        """Moves to a saved position; the caller restores the current RNG state afterwards."""
        self.epoch, self.index = state["epoch"], 0
        if state["rng"] is None:
            return
        restore_rng_state(state["rng"])
        self._start_epoch()
        for _ in range(state["index"]):
            next(self._iterator)
        self.index = state["index"]

    def _start_epoch(self) -> None:
        sampler = getattr(self.loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(self.epoch)
        self._rng_at_epoch_start = capture_rng_state()
        self._iterator = iter(self.loader)
