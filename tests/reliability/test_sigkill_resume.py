"""SIGKILL at random moments, and in the middle of checkpoint writes, never loses or damages
the checkpoint, and the run resumed after the last kill has the uninterrupted run's loss
history bit for bit (see ``tests/helpers/sigkill_worker.py`` for the runs)."""

import os
import queue
import random
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from pyroext.infer.checkpoint import load_checkpoint

WORKER = Path(__file__).parents[1] / "helpers" / "sigkill_worker.py"
KILLS = 12
ENDLESS = 100_000
"""Steps a killed run is asked for: it never finishes before its kill, however fast."""
MORE_STEPS = 10
"""Steps the last, uninterrupted resumed run adds to what the kills left."""
DELAYS_S = (0.0, 0.4)
"""Bounds of the random wait between a run's start and its kill, for even kills; odd ones
land in a checkpoint write chosen at random (see ``PAUSE_AT``)."""
PAUSE_AT = (1, 8)
"""Bounds of the fsync call at which an odd kill lands (odd: before the rename)."""
TIMEOUT_S = 120


class Worker:
    """The forking server of ``sigkill_worker.py``, with its answers read on a thread so that
    a dead or stuck server fails the test instead of hanging it."""

    def __init__(self) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        self.process = subprocess.Popen(
            [sys.executable, str(WORKER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line.strip())
        self.lines.put("closed")

    def send(self, line: str) -> None:
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def expect(self, *prefixes: str) -> dict[str, str]:
        """Waits for one line starting with each prefix, in any order."""
        found: dict[str, str] = {}
        while len(found) < len(prefixes):
            try:
                line = self.lines.get(timeout=TIMEOUT_S)
            except queue.Empty:
                pytest.fail(f"no answer {prefixes} from the worker in {TIMEOUT_S} s")
            assert line != "closed", "the worker died"
            key, _, value = line.partition(" ")
            assert key in prefixes, line
            found[key] = value
        return found

    def start(self, checkpoint: Path, out: Path, num_steps: int, pause_at: int = 0) -> int:
        self.send(f"run {checkpoint} {num_steps} {out} {pause_at}")
        # the child may reach its pause before the server reports its pid: one wait for all
        answers = self.expect("pid", "training", *(("paused",) if pause_at else ()))
        assert answers["pid"] == answers["training"]
        if pause_at:
            assert answers["paused"] == answers["pid"]
        return int(answers["pid"])

    def wait(self, pid: int) -> int:
        self.send(f"wait {pid}")
        return int(self.expect("exit")["exit"])


@pytest.fixture
def worker() -> Iterator[Worker]:
    started = Worker()
    yield started
    started.process.stdin.close()
    try:
        started.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        started.process.kill()


def _check_after_kill(checkpoint: Path, last_step: int | None) -> int | None:
    """The step the checkpoint holds, once it is shown to load and to be sound."""
    if not checkpoint.exists():
        assert last_step is None, "a checkpoint that existed is gone"
        return None
    state = load_checkpoint(checkpoint)
    step = state["step"]
    assert last_step is None or step >= last_step
    assert len(state["losses"]) == step and np.isfinite(state["losses"]).all()
    assert all(torch.isfinite(p).all() for p in state["param_store"]["params"].values())
    return step


@pytest.mark.slow
def test_sigkill_never_loses_the_checkpoint_and_resuming_matches(
    worker: Worker, tmp_path: Path
) -> None:
    rng = random.Random(20)
    checkpoint, out = tmp_path / "killed" / "checkpoint.pt", tmp_path / "killed.npy"
    step, mid_write = None, 0
    for kill in range(KILLS):
        pause_at = rng.randint(*PAUSE_AT) if kill % 2 else 0
        pid = worker.start(checkpoint, out, ENDLESS, pause_at)
        if not pause_at:
            threading.Event().wait(rng.uniform(*DELAYS_S))
        os.kill(pid, signal.SIGKILL)
        assert worker.wait(pid) == -signal.SIGKILL
        orphaned = any(checkpoint.parent.glob(".checkpoint.pt.*.tmp"))
        assert orphaned or pause_at % 2 == 0  # a kill before the rename leaves its temporary
        mid_write += orphaned
        step = _check_after_kill(checkpoint, step)
    assert mid_write >= 2 and step is not None
    num_steps = step + MORE_STEPS
    assert worker.wait(worker.start(checkpoint, out, num_steps)) == 0
    reference, whole = tmp_path / "whole" / "checkpoint.pt", tmp_path / "whole.npy"
    assert worker.wait(worker.start(reference, whole, num_steps)) == 0
    resumed, uninterrupted = np.load(out), np.load(whole)
    assert len(resumed) == num_steps and resumed.tobytes() == uninterrupted.tobytes()
    assert load_checkpoint(checkpoint)["step"] == num_steps
    assert sorted(p.name for p in checkpoint.parent.iterdir()) == ["checkpoint.pt"]
