"""Images per second of the MNIST VAE trained data-parallel with ``run_svi(distributed=True)``
against the plain runner.

The VAE and data are those of ``vae_overhead.py`` (784-200-200-50 tanh MLP, dynamically
binarised MNIST, ``Trace_ELBO``, ``FusedOptim(Adam)``, batch ``--batch-size`` per process).
Rows: the plain runner in this process; then, through ``torchrun --standalone``, world sizes
``--worlds`` (gloo on the CPU, NCCL on CUDA, one GPU per process). Each configuration runs 20
warm-up steps, then ``--steps`` timed steps; images/s counts the images of all processes.
Every process uses ``--threads`` torch threads. Configurations are interleaved ``--repeats``
times and the median is reported. ``--quick`` trains on the embedded 8x8 digits; a world size
that cannot start (no process group here) is reported on stderr and left out of the table.

    python benchmarks/distributed_throughput.py --data-dir ../shared/data [--worlds 1,2]
    python benchmarks/distributed_throughput.py --data-dir ../shared/data --device cuda --worlds 1
"""

import argparse
import functools
import json
import subprocess
import sys
import time
from pathlib import Path

import pyro
import torch
from _harness import Options, begin, fmt, interleave, pin_threads, print_comparison
from torch.utils.data import DataLoader
from vae_overhead import LATENT, make_vae, training_images

from pyroext.infer import FusedOptim, init_distributed, is_main_process, run_svi

WARM_UP = 20
PLAIN = "plain runner (no process group)"
FORWARDED = ("data", "data_dir", "device", "steps", "batch_size", "threads")


def images_per_second(args: argparse.Namespace, distributed: bool) -> float:
    """Images per second of all processes over ``--steps`` steps after :data:`WARM_UP`."""
    device = init_distributed(args.device) if distributed else torch.device(args.device)
    train = training_images(args)
    vae = make_vae(train[0][0].numel(), device)
    loader = DataLoader(train, batch_size=args.batch_size, shuffle=True, drop_last=True)
    optim = FusedOptim(torch.optim.Adam, {"lr": 1e-3})
    pyro.clear_param_store()

    def train_steps(steps: int) -> float:
        start = time.perf_counter()
        run_svi(
            vae.model,
            vae.guide,
            data=loader,
            batch_args=lambda batch: (batch[0],),
            model_kwargs={"num_data": len(train)},
            num_steps=steps,
            optim=optim,
            device=device,
            seed=0,
            progress=False,
            distributed=distributed,
        )
        return time.perf_counter() - start  # run_svi reads its losses back: the device is idle

    train_steps(WARM_UP)
    seconds = train_steps(args.steps)
    world = torch.distributed.get_world_size() if distributed else 1
    return world * args.batch_size * args.steps / seconds


def worker(args: argparse.Namespace) -> None:
    """One ``torchrun`` process; rank 0 prints the rate as a JSON line."""
    pin_threads(args.threads)
    rate = images_per_second(args, distributed=True)
    if is_main_process():
        print(json.dumps({"images_per_second": rate}), flush=True)


def launch(args: argparse.Namespace, world: int) -> float:
    """Images per second of ``world`` processes started by ``torchrun --standalone``."""
    forwarded = [f"--{key.replace('_', '-')}={getattr(args, key)}" for key in FORWARDED]
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={world}",
        str(Path(__file__).resolve()),
        "--worker",
        *(flag for flag in forwarded if not flag.endswith("=None")),
    ]
    run = subprocess.run(command, check=False, capture_output=True, text=True)
    if run.returncode:
        raise RuntimeError(f"torchrun exited with {run.returncode}:\n{run.stderr[-2000:]}")
    result = next(line for line in run.stdout.splitlines() if line.startswith("{"))
    return json.loads(result)["images_per_second"]


def main(args: argparse.Namespace) -> None:
    begin(
        args,
        f"VAE {LATENT} latents on {args.data}, batch {args.batch_size} per process, "
        f"{args.steps} timed steps after {WARM_UP}; {args.threads} torch thread(s) per process",
    )
    backend = "NCCL" if torch.device(args.device).type == "cuda" else "gloo"
    contenders = {PLAIN: functools.partial(images_per_second, args, distributed=False)}
    for world in map(int, args.worlds.split(",")):
        name = f"distributed, {world} process(es), {backend}"
        contenders[name] = functools.partial(launch, args, world)
    rates = interleave(contenders, args.repeats)
    every = {name: ", ".join(map(fmt, values)) for name, values in rates.items()}
    print_comparison(
        rates,
        {"ratio to plain runner": PLAIN},
        label="configuration",
        unit="images/s",
        ratio_digits=3,
        best=max,
        extra={"all repeats": every},
    )


def parse_args() -> argparse.Namespace:
    """Command-line options, including the hidden ``--worker`` of the started processes."""
    options = Options(__doc__)
    options.data("mnist")
    options.device()
    options.timing(steps=300, quick_steps=20)
    options.add("--batch-size", full=100, type=int, help="images per step and process")
    options.threads(1)
    options.add("--worlds", full="1,2", help="comma-separated world sizes")
    options.parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return options.parse()


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.worker:
        worker(arguments)
    else:
        main(arguments)
