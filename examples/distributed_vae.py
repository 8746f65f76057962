"""A VAE on the embedded digits, trained data-parallel: run it under torchrun.

    torchrun --standalone --nproc-per-node 2 examples/distributed_vae.py --steps 300
    torchrun --standalone --nproc-per-node 4 examples/distributed_vae.py --device cuda

Each process joins the group ``torchrun`` describes (:func:`pyroext.infer.init_distributed`:
NCCL and one GPU per process on CUDA, gloo on the CPU), and ``run_svi(distributed=True)``
shards the DataLoader, starts every process from rank 0's parameters, averages gradients
and lets only rank 0 write the checkpoint and print.
"""

import argparse

import pyro
import torch
from torch.utils.data import DataLoader

from pyroext.data import load_vae_data
from pyroext.infer import FusedOptim, init_distributed, is_main_process, run_svi
from pyroext.models.vae import VAE, MLPDecoder, MLPEncoder


def main(args: argparse.Namespace) -> None:
    device = init_distributed(args.device)
    dataset = load_vae_data("digits")
    pyro.set_rng_seed(0)
    vae = VAE(MLPEncoder(64, 8, (64,)), MLPDecoder(8, 64, (64,)), 8).to(device)
    loader = DataLoader(dataset.train, batch_size=50, shuffle=True, drop_last=True)
    result = run_svi(
        vae.model,
        vae.guide,
        data=loader,
        batch_args=lambda batch: (batch[0],),
        model_kwargs={"num_data": len(dataset.train)},
        num_steps=args.steps,
        optim=FusedOptim(torch.optim.Adam, {"lr": 1e-2}),
        device=device,
        seed=0,
        progress=False,
        checkpoint=args.checkpoint,
        distributed=True,
    )
    if is_main_process():
        world = torch.distributed.get_world_size()
        first, last = result.losses[:10].mean(), result.losses[-10:].mean()
        print(f"{world} processes, {args.steps} steps: loss {first:.1f} -> {last:.1f}")
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--checkpoint", default=None, help="checkpoint file (rank 0 writes)")
    main(parser.parse_args())
