"""Seconds per epoch of the pyroext VAE against a hand-written PyTorch VAE.

All use the same modules (784-200-200-50 MLP, tanh), the same dynamically binarised MNIST
DataLoader (batch 100, shuffled), Adam(lr=1e-3) and one reparameterised draw per image: the
PyTorch loop computes ``-(log p(x | z) + log p(z) - log q(z | x))`` scaled to the dataset
itself; pyroext runs ``run_svi`` with ``Trace_ELBO``, once with :class:`FusedOptim` (one
torch Adam), once with ``pyro.optim.Adam`` (one torch Adam per parameter) and once compiled
(``compile=True``: the whole step one inductor graph, torch's fused Adam; the compile time
is left out of s/epoch and printed apart). Timings interleave the configurations,
``--repeats`` times, over ``--steps`` steps each (600 steps are one MNIST epoch), and report
the median. ``--quick`` trains on the embedded 8x8 digits instead of MNIST.

    python benchmarks/vae_overhead.py --data-dir ../shared/data [--steps 600] [--device cpu]
        [--no-validation] [--batch-size 100] [--quick]
"""

import argparse
import functools
from collections.abc import Callable

import pyro
import torch
from _harness import (
    Options,
    begin,
    cycle_batches,
    interleave,
    loop_seconds,
    median,
    print_comparison,
)
from torch.distributions import Bernoulli, Normal
from torch.utils.data import DataLoader, Dataset

from pyroext.data import load_vae_data
from pyroext.infer import FusedOptim, run_svi
from pyroext.models.vae import VAE, MLPDecoder, MLPEncoder, vae_loss

LATENT = 50
WARMUP = 20  # allocator, lazy set-up, inductor's kernel cache
PLAIN = "plain PyTorch"


def training_images(args: argparse.Namespace) -> Dataset:
    """The dynamically binarised training images of ``--data``."""
    return load_vae_data(args.data, args.data_dir).train


def make_vae(pixels: int, device: str | torch.device) -> VAE:
    """The 200-200 tanh MLP VAE with :data:`LATENT` latents, seeded."""
    torch.manual_seed(0)
    return VAE(MLPEncoder(pixels, LATENT), MLPDecoder(LATENT, pixels), LATENT).to(device)


def _pixels(loader: DataLoader) -> int:
    return loader.dataset[0][0].numel()


def plain_torch(loader: DataLoader, steps: int, device: str) -> float:
    """The VAE's ELBO by hand; returns 0 seconds of compiling."""
    vae = make_vae(_pixels(loader), device)
    optim = torch.optim.Adam(vae.parameters(), lr=1e-3)
    scale = len(loader.dataset) / loader.batch_size
    for x, _ in cycle_batches(loader, steps):
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
    vae = make_vae(_pixels(loader), device)
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


def seconds(
    train: Callable[[DataLoader, int, str], float], loader: DataLoader, args: argparse.Namespace
) -> tuple[float, float]:
    """Training seconds of ``--steps`` steps without compilation, and the compile seconds."""
    elapsed, compile_time = loop_seconds(
        lambda steps: train(loader, steps, args.device),
        args.steps,
        warmup=WARMUP,
        device=args.device,
    )
    return elapsed - compile_time, compile_time


def main() -> None:
    options = Options(__doc__)
    options.data("mnist")
    options.timing(steps=600, quick_steps=20)
    options.threads(1)
    options.add("--batch-size", full=100, type=int, help="images per step")
    options.device()
    options.validation()
    args = options.parse()
    loader = DataLoader(
        training_images(args), batch_size=args.batch_size, shuffle=True, drop_last=True
    )
    begin(
        args,
        f"VAE {_pixels(loader)}-200-200-{LATENT} on {args.data}, batch {args.batch_size}; "
        f"{args.steps} steps x {args.repeats} repeats, scaled to one epoch ({len(loader)} steps)",
    )
    configs = {
        PLAIN: plain_torch,
        "pyroext run_svi, Trace_ELBO, FusedOptim(Adam)": pyroext_vae,
        "pyroext run_svi, Trace_ELBO, pyro.optim.Adam": functools.partial(
            pyroext_vae, fused=False
        ),
        "pyroext run_svi, compile=True": functools.partial(pyroext_vae, compile=True),
    }
    runs = interleave(
        {name: functools.partial(seconds, fn, loader, args) for name, fn in configs.items()},
        args.repeats,
    )
    compile_s = {name: f"{median([c for _, c in v]):.1f}" for name, v in runs.items()}
    print_comparison(
        {name: [train for train, _ in values] for name, values in runs.items()},
        {"ratio to plain PyTorch": PLAIN},
        label="implementation",
        unit="s/epoch",
        ratio_digits=3,
        scale=len(loader) / args.steps,
        extra={"compile s (cached)": compile_s},
    )


if __name__ == "__main__":
    main()
