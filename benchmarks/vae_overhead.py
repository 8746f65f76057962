"""Seconds per epoch of the pyroext VAE against a hand-written PyTorch VAE.

All use the same modules (784-200-200-50 MLP, tanh), the same dynamically binarised MNIST
DataLoader (batch 100, shuffled), Adam(lr=1e-3) and one reparameterised draw per image: the
PyTorch loop computes ``-(log p(x | z) + log p(z) - log q(z | x))`` scaled to the dataset
itself; pyroext runs ``run_svi`` with ``Trace_ELBO``, once with :class:`FusedOptim` (one
torch Adam), once with ``pyro.optim.Adam`` (one torch Adam per parameter) and once compiled
(``compile=True``: the whole step one inductor graph, torch's fused Adam; the compile time
is left out of s/epoch and printed apart). Timings
interleave the configurations, ``--repeats`` times, over ``--steps`` steps each (600 steps are
one MNIST epoch), and report the median.

    python benchmarks/vae_overhead.py --data-dir ../shared/data [--steps 600] [--device cpu]
        [--no-validation] [--batch-size 100]
"""

import argparse
import functools
import platform
import statistics
import time
from collections.abc import Callable, Iterator

import pyro
import torch
from torch.distributions import Bernoulli, Normal
from torch.utils.data import DataLoader

import pyroext
from pyroext.data import load_mnist
from pyroext.infer import FusedOptim, run_svi
from pyroext.models.vae import VAE, MLPDecoder, MLPEncoder, vae_loss

LATENT = 50


def make_vae(device: str) -> VAE:
    torch.manual_seed(0)
    return VAE(MLPEncoder(784, LATENT), MLPDecoder(LATENT, 784), LATENT).to(device)


def plain_torch(loader: DataLoader, steps: int, device: str) -> float:
    vae = make_vae(device)
    optim = torch.optim.Adam(vae.parameters(), lr=1e-3)
    scale = len(loader.dataset) / loader.batch_size
    for x, _ in _batches(loader, steps):
        x = x.to(device, non_blocking=True)
        loc, sd = vae.encoder(x)
        z = loc + sd * torch.randn_like(loc)
        log_lik = Bernoulli(logits=vae.decoder(z)).log_prob(x).sum()
        log_ratio = Normal(0.0, 1.0).log_prob(z).sum() - Normal(loc, sd).log_prob(z).sum()
        loss = -scale * (log_lik + log_ratio)
        optim.zero_grad()
        loss.backward()
        optim.step()
    return 0.0


def pyroext_vae(
    loader: DataLoader, steps: int, device: str, fused: bool = True, compile: bool = False
) -> float:
    """Trains for ``steps`` steps; returns the seconds spent compiling."""
    vae = make_vae(device)
    optim = FusedOptim(torch.optim.Adam, {"lr": 1e-3, "fused": compile or None})
    optim = optim if fused else pyro.optim.Adam({"lr": 1e-3})
    pyro.clear_param_store()
    result = run_svi(
        vae.model,
        vae.guide,
        data=loader,
        batch_args=lambda batch: (batch[0],),
        model_kwargs={"num_data": len(loader.dataset)},
        num_steps=steps,
        optim=optim,
        loss=vae_loss("trace"),
        device=device,
        progress=False,
        compile=compile,
    )
    return result.compile_time


def _batches(loader: DataLoader, steps: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    taken = 0
    while True:
        for batch in loader:
            if taken == steps:
                return
            taken += 1
            yield batch


def seconds(
    fn: Callable[[DataLoader, int, str], float], loader: DataLoader, args: argparse.Namespace
) -> tuple[float, float]:
    """Training seconds without compilation, and the compile seconds."""
    fn(loader, 20, args.device)  # warm-up: allocator, lazy set-up, inductor's kernel cache
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    compile_time = fn(loader, args.steps, args.device)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start - compile_time, compile_time


def main(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    train = load_mnist(args.data_dir, train=True)
    loader = DataLoader(train, batch_size=args.batch_size, shuffle=True, drop_last=True)
    configs = {
        "plain PyTorch": plain_torch,
        "pyroext run_svi, Trace_ELBO, FusedOptim(Adam)": pyroext_vae,
        "pyroext run_svi, Trace_ELBO, pyro.optim.Adam": functools.partial(
            pyroext_vae, fused=False
        ),
        "pyroext run_svi, compile=True": functools.partial(pyroext_vae, compile=True),
    }
    pyro.enable_validation(args.validation)
    times = {name: [] for name in configs}
    compile_times = {name: [] for name in configs}
    for _ in range(args.repeats):
        for name, fn in configs.items():
            train_time, compile_time = seconds(fn, loader, args)
            times[name].append(train_time)
            compile_times[name].append(compile_time)
    epoch = len(loader) / args.steps
    versions = f"torch {torch.__version__}, pyro {pyro.__version__}, pyroext {pyroext.__version__}"
    checks = "on" if args.validation else "off"
    print(
        f"# {platform.machine()}, {args.threads} threads, {args.device}, validation {checks}, "
        f"batch {args.batch_size}"
    )
    print(f"# {versions}")
    print(
        f"# {args.steps} steps x {args.repeats} repeats, scaled to one epoch ({len(loader)} steps)"
    )
    print("| implementation | s/epoch (median) | ratio to plain PyTorch | compile s (cached) |")
    print("|---|---|---|---|")
    base = statistics.median(times["plain PyTorch"])
    for name, values in times.items():
        median = statistics.median(values)
        compiled = statistics.median(compile_times[name])
        print(f"| {name} | {median * epoch:.2f} | {median / base:.3f} | {compiled:.1f} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--data-dir", required=True, help="folder holding MNIST/raw")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--batch-size",
        type=int,
        default=100,
        help="images per step (100 in the issue); larger batches show Pyro's fixed step cost",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--validation",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Pyro/torch distribution argument checks (on by default in Pyro)",
    )
    main(parser.parse_args())
