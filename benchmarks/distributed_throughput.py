"""Images per second of the MNIST VAE trained data-parallel with ``run_svi(distributed=True)``
against the plain runner (issue 8).

The VAE and data are those of ``vae_overhead.py`` (784-200-200-50 tanh MLP, dynamically
binarised MNIST, ``Trace_ELBO``, ``FusedOptim(Adam)``, batch ``--batch-size`` per process).
Rows: the plain runner in this process; then, through ``torchrun --standalone``, world sizes
``--worlds`` (gloo on the CPU, NCCL on CUDA, one GPU per process). Each configuration runs 20
warm-up steps, then ``--steps`` timed steps; images/s counts the images of all processes.
Every process uses ``--threads`` torch threads. Configurations are interleaved ``--repeats``
times and the median is reported.

    python benchmarks/distributed_throughput.py --data-dir ../shared/data [--worlds 1,2]
    python benchmarks/distributed_throughput.py --data-dir ../shared/data --device cuda --worlds 1
"""

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pyro
import torch
from torch.utils.data import DataLoader

import pyroext
from pyroext.data import load_mnist
from pyroext.infer import FusedOptim, init_distributed, is_main_process, run_svi
from pyroext.models.vae import VAE, MLPDecoder, MLPEncoder

LATENT, WARM_UP = 50, 20


def images_per_second(args: argparse.Namespace, distributed: bool) -> float:
    device = init_distributed(args.device) if distributed else torch.device(args.device)
    torch.manual_seed(0)
    vae = VAE(MLPEncoder(784, LATENT), MLPDecoder(LATENT, 784), LATENT).to(device)
    train = load_mnist(args.data_dir, train=True)
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
    torch.set_num_threads(args.threads)
    rate = images_per_second(args, distributed=True)
    if is_main_process():
        print(json.dumps({"images_per_second": rate}), flush=True)


def launch(args: argparse.Namespace, world: int) -> float:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={world}",
        str(Path(__file__).resolve()),
        "--worker",
        *(f"--{key.replace('_', '-')}={value}" for key, value in _forwarded(args).items()),
    ]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    result = next(line for line in output.splitlines() if line.startswith("{"))
    return json.loads(result)["images_per_second"]


def _forwarded(args: argparse.Namespace) -> dict[str, object]:
    keys = ("data_dir", "device", "steps", "batch_size", "threads")
    return {key: getattr(args, key) for key in keys}


def main(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    backend = "NCCL" if args.device.startswith("cuda") else "gloo"
    plain = "plain runner (no process group)"
    rates: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        rates.setdefault(plain, []).append(images_per_second(args, distributed=False))
        for world in map(int, args.worlds.split(",")):
            name = f"distributed, {world} process(es), {backend}"
            rates.setdefault(name, []).append(launch(args, world))
    machine = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    print(
        f"# {platform.machine()}, {machine}, {args.threads} torch thread(s) per process; "
        f"torch {torch.__version__}, pyro {pyro.__version__}, pyroext {pyroext.__version__}"
    )
    print(
        f"# VAE 784-200-200-50, batch {args.batch_size} per process, {args.steps} timed steps, "
        f"median of {args.repeats} interleaved repeats"
    )
    print("| configuration | images/s | ratio to plain runner | all repeats |")
    print("|---|---|---|---|")
    base = statistics.median(rates[plain])
    for name, values in rates.items():
        rate = statistics.median(values)
        runs = ", ".join(f"{value:.0f}" for value in values)
        print(f"| {name} | {rate:.0f} | {rate / base:.3f} | {runs} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--data-dir", required=True, help="folder holding MNIST/raw")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--worlds", default="1,2", help="comma-separated world sizes")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.worker:
        worker(arguments)
    else:
        main(arguments)
