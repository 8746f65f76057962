"""When an MCMC-in-guide guide evaluates its target compiled, and the compiled density."""

__all__ = ["TARGET_COMPILE_AFTER", "CompiledTarget"]

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor

from pyroext.infer.compiled import CompiledLogDensity
from pyroext.infer.compiled.capture import recording

TARGET_COMPILE_AFTER = 2000
"""Training calls after which ``compile_target="auto"`` compiles the target: recording and
compiling it takes seconds, which the compiled Markov steps repay over thousands of calls."""


class CompiledTarget:
    """The target of a guide's Markov steps, eager or compiled.

    Arguments:
        mode: ``True`` (compile at the first call; a target one graph cannot stand for is an
            error), ``False`` (always eager) or ``"auto"`` (compile after
            :data:`TARGET_COMPILE_AFTER` training calls; a failure warns and stays eager).

    Raises:
        ValueError: For another mode.
    """

    def __init__(self, mode: bool | str) -> None:
        if not (isinstance(mode, bool) or mode == "auto"):
            raise ValueError(f"compile_target={mode!r} must be True, False or 'auto'")
        self.mode = mode
        self.calls = 0
        self.density: CompiledLogDensity | None = None

    def bind(
        self, log_joint_at: Callable[[Tensor, Any], Tensor], data: Any
    ) -> Callable[[Tensor], Tensor]:
        """The target at ``data``: compiled where the mode says so. Inside a recording of the
        whole step (a compiled ELBO) or a ``torch.jit`` trace it stays eager, so that the
        recording takes in the model itself."""
        if torch.is_grad_enabled():
            self.calls += 1
        if not self._compiles():
            return lambda z: log_joint_at(z, data)
        if self.density is None:
            self.density = CompiledLogDensity(log_joint_at, strict=self.mode is True)
        density = self.density
        return lambda z: density(z, data)

    @contextlib.contextmanager
    def eager(self) -> Iterator[None]:
        """Evaluates eagerly inside, whatever the mode: for one-off calls (health checks,
        exports) whose draw count would otherwise cost a compiled graph of its own."""
        mode, self.mode = self.mode, False
        try:
            yield
        finally:
            self.mode = mode

    def _compiles(self) -> bool:
        if self.mode is False or recording() or torch.jit.is_tracing():
            return False
        return self.mode is True or self.calls > TARGET_COMPILE_AFTER

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "density": None}  # compiled graphs do not pickle
