"""Process entry points for the data-parallel tests: each joins a gloo group through a file,
trains with ``run_svi(distributed=True)`` and saves what the test compares."""

import os
from pathlib import Path

import pyro
import torch
import torch.distributed as dist
from pyro.infer import Trace_ELBO
from pyro.infer.autoguide import AutoDelta
from tiny_vaes import tiny
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from pyroext.infer import FusedOptim, run_svi
from pyroext.models.bnn import BayesianMLP, GaussianPrior

NUM_DATA, FEATURES, BATCH = 64, 3, 8
SEED = 3


def regression_data() -> TensorDataset:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(NUM_DATA, FEATURES, generator=generator, dtype=torch.float64)
    y = x @ x.new_tensor([1.0, -2.0, 0.5]) + 0.1 * torch.randn(NUM_DATA, generator=generator)
    return TensorDataset(x, y)


def map_network() -> tuple[BayesianMLP, AutoDelta]:
    """A float64 BNN whose MAP guide makes the objective deterministic, so that a data-parallel
    run can be compared with a single process to rounding."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(FEATURES, 6), nn.Tanh(), nn.Linear(6, 1)).double()
    model = BayesianMLP(net, prior=GaussianPrior(1.0), noise_scale=0.5)
    return model, AutoDelta(model, init_loc_fn=model.init_to_network)


def fit_map(loader: DataLoader, steps: int, distributed: bool, **options: object) -> object:
    model, guide = map_network()
    return run_svi(
        model,
        guide,
        data=loader,
        model_kwargs={"num_data": NUM_DATA},
        num_steps=steps,
        optim=FusedOptim(torch.optim.Adam, {"lr": 0.05}),
        loss=Trace_ELBO(),
        seed=SEED,
        progress=False,
        distributed=distributed,
        **options,
    )


def reference_loader(batch_size: int) -> DataLoader:
    """One process's loader over the global batches that ``W`` processes of ``batch_size / W``
    images draw together: the same epoch permutation, unsplit."""
    dataset = regression_data()
    sampler = DistributedSampler(dataset, num_replicas=1, rank=0, seed=SEED, drop_last=True)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=True)


def join(rank: int, world_size: int, folder: str) -> None:
    init = f"file://{Path(folder) / 'rendezvous'}"
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world_size)


def leave() -> None:
    """Leaves the group (if the runner has not) and ends the process at once. Left to the
    interpreter's shutdown, gloo's objects are sometimes destroyed with a live thread, which
    aborts the process (SIGABRT, "terminate called without an active exception") after its
    work is done and saved: seen in about 1 of 30 runs of these workers."""
    if dist.is_initialized():
        dist.destroy_process_group()
    os._exit(0)


def map_worker(rank: int, world_size: int, folder: str, steps: int, compile: bool = False) -> None:
    """Trains the MAP network on this rank's share, checkpointing into ``folder/rank<r>``."""
    join(rank, world_size, folder)
    torch.set_num_threads(1)
    pyro.clear_param_store()
    loader = DataLoader(regression_data(), batch_size=BATCH, shuffle=True, drop_last=True)
    checkpoint = Path(folder) / f"rank{rank}" / "checkpoint.pt"
    result = fit_map(
        loader, steps, True, checkpoint=checkpoint, checkpoint_every=steps, compile=compile
    )
    params = {k: v.detach().clone() for k, v in pyro.get_param_store().items()}
    saved = {"params": params, "losses": result.losses, "compile_time": result.compile_time}
    torch.save(saved, Path(folder) / f"out{rank}.pt")
    leave()


def nan_worker(rank: int, world_size: int, folder: str, nan_step: int, validate: bool) -> None:
    """Rank 1's model adds a NaN log-factor from step ``nan_step`` on: a NaN loss without Pyro's
    validation, a ValueError on rank 1 alone with it. Every rank records how it stopped."""
    join(rank, world_size, folder)
    pyro.enable_validation(validate)
    pyro.clear_param_store()
    model, guide = map_network()
    calls = {"count": 0}

    def poisoned(x: torch.Tensor, y: torch.Tensor, num_data: int) -> torch.Tensor:
        calls["count"] += 1
        if rank == 1 and calls["count"] > nan_step:  # call 1 is the warm-up
            pyro.factor("poison", x.new_tensor(torch.nan))
        return model(x, y, num_data)

    loader = DataLoader(regression_data(), batch_size=BATCH, shuffle=True, drop_last=True)
    try:
        run_svi(
            poisoned,
            guide,
            data=loader,
            model_kwargs={"num_data": NUM_DATA},
            num_steps=50,
            checkpoint=Path(folder) / "checkpoint.pt",
            checkpoint_every=2,
            seed=SEED,
            progress=False,
            distributed=True,
        )
    except Exception as error:  # noqa: BLE001 (the test reads what each rank stopped with)
        notes = "\n".join(getattr(error, "__notes__", []))
        text = f"{type(error).__name__}: {error}\n{notes}"
        (Path(folder) / f"error{rank}.txt").write_text(text)
    leave()


def mcmc_vae_worker(rank: int, world_size: int, folder: str, kind: str) -> None:
    """Trains a tiny Monte Carlo VAE (per-image MCMC in the guide) on this rank's share."""
    from pyroext.models.vae.mcvae import LangevinVAE
    from pyroext.models.vae.metvae import MetVAE

    join(rank, world_size, folder)
    torch.set_num_threads(1)
    pyro.clear_param_store()
    vae = tiny({"langevin": LangevinVAE, "metflow": MetVAE}[kind])
    probs = torch.full((64, 4), 0.3, dtype=torch.float64)
    images = torch.bernoulli(probs, generator=torch.Generator().manual_seed(0))
    loader = DataLoader(TensorDataset(images), batch_size=8, shuffle=True, drop_last=True)
    result = run_svi(
        vae.model,
        vae.guide,
        data=loader,
        batch_args=lambda batch: (batch[0],),
        model_kwargs={"num_data": 64},
        num_steps=40,
        optim=FusedOptim(torch.optim.Adam, {"lr": 0.01}),
        seed=SEED,
        progress=False,
        distributed=True,
    )
    params = {k: v.detach().clone() for k, v in pyro.get_param_store().items()}
    torch.save({"params": params, "losses": result.losses}, Path(folder) / f"out{rank}.pt")
    leave()
