"""Module buffers that a step reads and updates: the state a compiled step carries.

A running statistic kept in a buffer (the score baseline of
:class:`~pyroext.guides.AutoMetFlow`, a batch norm's running moments) is read by the step and
replaced or updated in place by it. A recorded graph would read it as a constant and drop the
update; instead the buffers are inputs of the graph, their values after the step are outputs,
and the runner writes those back, so the compiled step carries the state as eager Pyro does.
"""

__all__ = ["BufferSlots"]

import contextlib
from collections.abc import Iterator
from typing import Any

from torch import Tensor, nn


class BufferSlots:
    """Every buffer of the modules among ``roots``, addressed by (module, name).

    Arguments:
        roots: The model and guide (those that are ``nn.Module`` contribute their buffers).
    """

    def __init__(self, *roots: Any) -> None:
        self.slots = [
            (module, name)
            for root in roots
            if isinstance(root, nn.Module)
            for module in root.modules()
            for name, buffer in module._buffers.items()
            if buffer is not None
        ]

    def read(self) -> list[Tensor]:
        """The buffers' current tensors."""
        return [module._buffers[name] for module, name in self.slots]

    def write(self, values: list[Tensor]) -> None:
        """Makes ``values`` the buffers' tensors."""
        for (module, name), value in zip(self.slots, values, strict=True):
            module._buffers[name] = value

    @contextlib.contextmanager
    def kept(self) -> Iterator[None]:
        """Leaves the buffers as they were, whatever runs inside (in place or by assignment)."""
        saved = [value.clone() for value in self.read()]
        try:
            yield
        finally:
            for (module, name), value in zip(self.slots, saved, strict=True):
                module._buffers[name] = value
