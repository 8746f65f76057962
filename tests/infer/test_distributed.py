"""Data-parallel SVI on two gloo processes: equal to one process on the same global batches,
checkpoints that resume in one process, NaN on one rank stopping all, MCMC-in-guide VAEs."""

import subprocess
import sys
import time
from pathlib import Path

import distributed_workers as workers
import numpy as np
import pandas as pd
import pyro
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DataLoader, TensorDataset

from pyroext.cli import main
from pyroext.infer import AllReduceOptim, FusedOptim, run_svi, shard_loader
from pyroext.infer.checkpoint import load_checkpoint

WORLD = 2
TIMEOUT_S = 120


def spawn(fn: object, folder: Path, *args: object) -> None:
    """Runs ``fn(rank, WORLD, folder, *args)`` in two processes; fails if they hang."""
    context = mp.start_processes(
        fn, args=(WORLD, str(folder), *args), nprocs=WORLD, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + TIMEOUT_S
    while not context.join(timeout=max(deadline - time.monotonic(), 0)):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"processes still running after {TIMEOUT_S} s")


def load(folder: Path, rank: int) -> dict:
    return torch.load(folder / f"out{rank}.pt", weights_only=False)


def reference_params(steps: int, **options: object) -> tuple[dict, np.ndarray]:
    pyro.clear_param_store()
    loader = workers.reference_loader(WORLD * workers.BATCH)
    result = workers.fit_map(loader, steps, False, **options)
    params = {k: v.detach().clone() for k, v in pyro.get_param_store().items()}
    return params, result.losses


@pytest.fixture(scope="module")
def map_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("map")
    spawn(workers.map_worker, folder, 6)
    return folder


def test_two_processes_equal_one_process_on_the_same_global_batches(map_run: Path) -> None:
    params, losses = reference_params(6)
    for rank in range(WORLD):
        out = load(map_run, rank)
        assert out["params"].keys() == params.keys()
        for name, value in params.items():
            torch.testing.assert_close(out["params"][name], value, rtol=1e-10, atol=1e-12)
        # the recorded loss is the mean of the two processes' estimates of the full-data loss
        np.testing.assert_allclose(out["losses"], losses, rtol=1e-10)
    first, second = load(map_run, 0)["params"], load(map_run, 1)["params"]
    assert all(torch.equal(first[name], second[name]) for name in first)
    pyro.clear_param_store()
    _, guide = workers.map_network()
    guide(*workers.regression_data().tensors)
    initial = {k: v.detach().clone() for k, v in pyro.get_param_store().items()}
    assert not any(torch.allclose(initial[k], params[k]) for k in params)  # it trained


def test_compiled_steps_train_the_same_under_data_parallelism(tmp_path: Path) -> None:
    spawn(workers.map_worker, tmp_path, 6, True)
    params, losses = reference_params(6)  # one process, eager
    for rank in range(WORLD):
        out = load(tmp_path, rank)
        assert out["compile_time"] > 0
        for name, value in params.items():
            torch.testing.assert_close(out["params"][name], value, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(out["losses"], losses, rtol=1e-10)


def test_only_rank_zero_checkpoints_and_its_checkpoint_resumes_in_one_process(
    map_run: Path,
) -> None:
    assert (map_run / "rank0" / "checkpoint.pt").exists()
    assert not (map_run / "rank1" / "checkpoint.pt").exists()
    uninterrupted, losses = reference_params(12)
    pyro.clear_param_store()
    loader = workers.reference_loader(WORLD * workers.BATCH)
    checkpoint = map_run / "rank0" / "checkpoint.pt"
    result = workers.fit_map(loader, 12, False, checkpoint=checkpoint, resume=True)
    for name, value in uninterrupted.items():
        torch.testing.assert_close(pyro.param(name).detach(), value, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(result.losses, losses, rtol=1e-10)


def test_nan_loss_on_one_rank_stops_every_rank_at_that_step(tmp_path: Path) -> None:
    spawn(workers.nan_worker, tmp_path, 3, False)
    for rank in range(WORLD):
        message = (tmp_path / f"error{rank}.txt").read_text()
        assert message.startswith("NonFiniteLossError: loss is nan at step 3 on rank 1 (last")
        assert "at step 2)" in message and "is intact" in message
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["step"] == 2 and np.isfinite(state["losses"]).all()
    assert all(torch.isfinite(p).all() for p in state["param_store"]["params"].values())


def test_error_on_one_rank_stops_the_other_without_waiting_for_the_timeout(
    tmp_path: Path,
) -> None:
    start = time.monotonic()
    spawn(workers.nan_worker, tmp_path, 3, True)
    assert time.monotonic() - start < 60  # the collective timeout is 10 minutes
    failed = (tmp_path / "error1.txt").read_text()
    assert failed.startswith("ValueError: Expected parameter log_factor")
    assert "rank 1 of 2 failed and left the process group" in failed
    assert "step 3 failed; rank 0 writes the checkpoints" in failed
    other = (tmp_path / "error0.txt").read_text()
    assert "Connection closed by peer" in other and "rank 0 of 2 failed" in other


@pytest.mark.parametrize("kind", ["langevin", "metflow"])
def test_mcmc_in_guide_vaes_train_unchanged_under_data_parallelism(
    tmp_path: Path, kind: str
) -> None:
    spawn(workers.mcmc_vae_worker, tmp_path, kind)
    first, second = load(tmp_path, 0), load(tmp_path, 1)
    # Different draws on each rank, identical parameters: only the all-reduce can do that.
    assert first["params"].keys() == second["params"].keys() and len(first["params"]) > 0
    assert all(torch.equal(first["params"][k], second["params"][k]) for k in first["params"])
    np.testing.assert_array_equal(first["losses"], second["losses"])
    assert np.isfinite(first["losses"]).all()
    assert first["losses"][-10:].mean() < first["losses"][:10].mean()


def test_distributed_run_needs_a_process_group_and_data() -> None:
    model, guide = workers.map_network()
    loader = DataLoader(workers.regression_data(), batch_size=8)
    with pytest.raises(ValueError, match="distributed=True needs a torch.distributed"):
        run_svi(model, guide, data=loader, num_steps=1, distributed=True)
    with pytest.raises(ValueError, match="sharding data needs a torch.distributed process"):
        shard_loader(loader)


def test_all_reduce_optim_in_a_group_of_one_keeps_gradients_and_missing_ones(
    tmp_path: Path,
) -> None:
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1
    )
    try:
        pyro.clear_param_store()
        with_grad = pyro.param("a", torch.tensor([1.0, 2.0])).unconstrained()
        without = pyro.param("b", torch.tensor([3.0])).unconstrained()
        with_grad.grad = torch.tensor([0.5, -0.25])
        optim = AllReduceOptim(FusedOptim(torch.optim.SGD, {"lr": 1.0}))
        optim([without, with_grad])
        torch.testing.assert_close(with_grad.detach(), torch.tensor([0.5, 2.25]))
        assert without.grad is None and without.item() == 3.0
        assert optim.get_state().keys() == {"a", "b"}
        dataset = TensorDataset(torch.arange(10.0))
        sharded = shard_loader(DataLoader(dataset, batch_size=4, shuffle=True), seed=5)
        assert shard_loader(sharded) is sharded and sharded.batch_size == 4
        with pytest.raises(TypeError, match="data must be a torch DataLoader"):
            shard_loader([1, 2, 3])  # type: ignore[arg-type]
        assert sorted(torch.cat([b[0] for b in sharded]).tolist()) == list(np.arange(10.0))
    finally:
        dist.destroy_process_group()


def test_cli_trains_on_two_processes_and_only_rank_zero_reports(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bnn"
    argv = ["fit", "bnn", "--task", "regression", "--hidden", "5", "--steps", "6"]
    status = main([*argv, "--nproc-per-node", "2", "--out", str(out), "--no-progress"])
    assert status == 0
    printed = capfd.readouterr().out
    assert printed.count("outputs in") == 1
    summary = pd.read_csv(out / "summary.csv", index_col=0)["value"]
    # 354 training rows, 100 per process and step: one epoch is one step of the two processes
    assert summary["epochs"] == 6.0 and summary["num_weights"] == 10 * 5 + 5 + 5 + 1
    assert len(pd.read_csv(out / "losses.csv")) == 6


def test_cli_refuses_processes_for_models_without_data_parallelism(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "gmm", "--nproc-per-node", "2"])
    assert exit_info.value.code == 2
    assert "--nproc-per-node (torchrun) does not apply to model 'gmm'" in capsys.readouterr().err


def test_the_torchrun_example_trains_on_two_processes(tmp_path: Path) -> None:
    example = Path(__file__).parents[2] / "examples" / "distributed_vae.py"
    checkpoint = tmp_path / "checkpoint.pt"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc-per-node=2", str(example), "--steps", "20"]
    result = subprocess.run(
        [*command, "--checkpoint", str(checkpoint)],
        capture_output=True,
        text=True,
        check=True,
        timeout=TIMEOUT_S,
    )
    assert result.stdout.count("2 processes, 20 steps: loss") == 1
    assert load_checkpoint(checkpoint)["step"] == 20
