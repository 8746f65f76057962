"""Training runs to be killed: a small model that writes a checkpoint after every step and
resumes from it when it exists, run by ``tests/reliability/test_sigkill_resume.py``.

Importing torch and pyroext takes seconds, so this process imports them once and then forks
one process per run (before any torch operation, so forking is safe). It reads commands on
stdin and answers on stdout, one line each:

- ``run CHECKPOINT NUM_STEPS LOSSES_OUT PAUSE_AT``: forks a run and answers ``pid PID``;
  the run prints ``training PID`` when it starts and, if not killed, saves the loss history
  to ``LOSSES_OUT`` (``.npy``). With ``PAUSE_AT`` = n > 0, the run's n-th ``fsync`` prints
  ``paused PID`` and waits to be killed: odd calls sync a checkpoint's temporary file before
  its rename, even ones the folder after it, so the kill lands in the middle of a write.
- ``wait PID``: reaps the run (a killed process lingers until reaped, and would count as a
  live writer) and answers ``exit STATUS`` (``-9`` when killed by SIGKILL).
"""

import os
import sys
import time
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.infer.autoguide import AutoNormal

from pyroext.infer import run_svi

BULK = 100_000
"""Elements of a parameter that only makes the checkpoint larger (3 x 400 kB with Adam's
moments), so that writing it takes a while."""


def model(x: torch.Tensor, y: torch.Tensor | None = None) -> None:
    bulk = pyro.param("bulk", torch.zeros(BULK))
    w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([x.shape[1]]).to_event(1))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("obs", dist.Normal(x @ w + bulk[0], 0.5), obs=y)


def _say(line: str) -> None:
    """Writes one answer in one ``write`` call: the server and its runs share the pipe, and
    ``print`` under ``PYTHONUNBUFFERED`` writes the text and its newline separately, so two
    writers' lines could interleave."""
    os.write(sys.stdout.fileno(), f"{line}\n".encode())


def _pause_at(call: int) -> None:
    real, calls = os.fsync, [0]

    def fsync(handle: int) -> None:
        calls[0] += 1
        if calls[0] == call:
            _say(f"paused {os.getpid()}")
            time.sleep(600)
        real(handle)

    os.fsync = fsync


def train(checkpoint: str, num_steps: int, out: str, pause_at: int) -> None:
    torch.set_num_threads(1)
    if pause_at > 0:
        _pause_at(pause_at)
    generator = torch.Generator().manual_seed(5)
    x = torch.randn(50, 3, generator=generator)
    y = x @ torch.tensor([1.0, -2.0, 0.5]) + 0.5 * torch.randn(50, generator=generator)
    _say(f"training {os.getpid()}")
    result = run_svi(
        model,
        AutoNormal(model),
        x,
        y,
        num_steps=num_steps,
        checkpoint=checkpoint,
        checkpoint_every=1,
        resume=Path(checkpoint).exists(),
        seed=0,
        progress=False,
    )
    np.save(out, result.losses)


def serve() -> None:
    for line in sys.stdin:
        command, *args = line.split()
        if command == "run":
            pid = os.fork()
            if pid == 0:
                status = 1
                try:
                    train(args[0], int(args[1]), args[2], int(args[3]))
                    status = 0
                finally:
                    os._exit(status)
            _say(f"pid {pid}")
        elif command == "wait":
            _, status = os.waitpid(int(args[0]), 0)
            _say(f"exit {os.waitstatus_to_exitcode(status)}")


if __name__ == "__main__":
    serve()
