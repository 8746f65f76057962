"""Seconds per epoch of pyroext's Bayes by backprop against a hand-written PyTorch loop.

Both train the same 784-400-400-10 ReLU network (``--hidden``) on MNIST (or the digits) with
a mean-field Gaussian over every weight and bias (``sigma = softplus(rho)``, starting at 0.01
around the network's default initialisation), Blundell et al.'s scale-mixture prior (pi 1/2,
sigma1 1, sigma2 e^-6), one weight draw per minibatch of 100, the Monte Carlo ELBO
``log p(y | w) * N / B + log p(w) - log q(w)`` and Adam(lr=1e-3). The PyTorch loop computes that
ELBO by hand; pyroext runs :func:`pyroext.infer.run_svi` with ``Trace_ELBO`` on
:class:`~pyroext.models.bnn.BayesianMLP` and
:class:`~pyroext.models.bnn.guide.AutoBayesByBackprop`. Timings interleave the two,
``--repeats`` times over ``--steps`` steps each, and report the median.

    python benchmarks/bnn_overhead.py --data mnist --data-dir ../shared/data [--steps 300]
        [--device cuda] [--quick]
"""

import argparse
import functools
import math
from collections.abc import Callable

import pyro
import torch
from _harness import Options, begin, cycle_batches, interleave, loop_seconds, print_comparison
from pyro.infer import Trace_ELBO
from torch import Tensor, nn
from torch.distributions import Categorical, Normal
from torch.nn.functional import softplus
from torch.utils.data import DataLoader, TensorDataset

from pyroext.data import load_bnn_data
from pyroext.infer import FusedOptim, run_svi
from pyroext.models.bnn import BayesianMLP, ScaleMixturePrior, relu_mlp
from pyroext.models.bnn.guide import AutoBayesByBackprop

INIT_SCALE = 0.01
PRIOR = ScaleMixturePrior()
WARMUP = 10  # allocator, lazy set-up
PLAIN = "plain PyTorch"


def network(widths: list[int]) -> nn.Sequential:
    """The ReLU MLP of ``widths``, seeded."""
    torch.manual_seed(0)
    return relu_mlp(widths)


def mixture_log_prior(w: Tensor) -> Tensor:
    """The scale-mixture prior's log density of ``w``, summed, as a hand-written loop has it."""
    sigmas = torch.tensor([PRIOR.sigma1, PRIOR.sigma2], device=w.device)
    weights = torch.tensor([math.log(PRIOR.pi), math.log(1 - PRIOR.pi)], device=w.device)
    return (Normal(0.0, sigmas).log_prob(w[..., None]) + weights).logsumexp(-1).sum()


def plain_torch(widths: list[int], loader: DataLoader, steps: int, device: str) -> None:
    """Bayes by backprop written by hand."""
    net = network(widths).to(device)
    locs = [p.detach().clone().requires_grad_() for p in net.parameters()]
    rho = math.log(math.expm1(INIT_SCALE))
    rhos = [torch.full_like(p, rho, requires_grad=True) for p in locs]
    optim = torch.optim.Adam(locs + rhos, lr=1e-3)
    scale = len(loader.dataset) / loader.batch_size
    for x, y in cycle_batches(loader, steps):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        sds = [softplus(r) for r in rhos]
        draws = [m + s * torch.randn_like(m) for m, s in zip(locs, sds, strict=True)]
        hidden = x
        for index in range(0, len(draws), 2):
            hidden = hidden @ draws[index].T + draws[index + 1]
            hidden = hidden.relu() if index + 2 < len(draws) else hidden
        log_lik = Categorical(logits=hidden).log_prob(y).sum() * scale
        log_prior = sum(mixture_log_prior(w) for w in draws)
        log_q = sum(
            Normal(m, s).log_prob(w).sum() for m, s, w in zip(locs, sds, draws, strict=True)
        )
        loss = log_q - log_prior - log_lik
        optim.zero_grad()
        loss.backward()
        optim.step()


def pyroext_bbb(widths: list[int], loader: DataLoader, steps: int, device: str) -> None:
    """The same through :class:`BayesianMLP`, :class:`AutoBayesByBackprop` and ``run_svi``."""
    model = BayesianMLP(network(widths), prior=PRIOR, likelihood="categorical").to(device)
    pyro.clear_param_store()
    guide = AutoBayesByBackprop(model, init_scale=INIT_SCALE)
    run_svi(
        model,
        guide,
        data=loader,
        model_kwargs={"num_data": len(loader.dataset)},
        num_steps=steps,
        optim=FusedOptim(torch.optim.Adam, {"lr": 1e-3}),
        loss=Trace_ELBO(),
        device=device,
        progress=False,
    )


def seconds(
    train: Callable[[list[int], DataLoader, int, str], None],
    widths: list[int],
    loader: DataLoader,
    args: argparse.Namespace,
) -> float:
    """Seconds of ``--steps`` steps of ``train`` after a warm-up."""
    return loop_seconds(
        lambda steps: train(widths, loader, steps, args.device),
        args.steps,
        warmup=WARMUP,
        device=args.device,
    )[0]


def main() -> None:
    options = Options(__doc__)
    options.data("mnist")
    options.add("--hidden", full="400,400", help="hidden widths")
    options.timing(steps=300, quick_steps=20)
    options.threads(1)
    options.device()
    options.validation()
    args = options.parse()
    data = load_bnn_data("classification", args.data, args.data_dir)
    widths = [data.x_train.shape[1], *map(int, args.hidden.split(",")), 10]
    loader = DataLoader(
        TensorDataset(data.x_train, data.y_train), batch_size=100, shuffle=True, drop_last=True
    )
    begin(
        args,
        f"{args.data} {'-'.join(map(str, widths))}, batch 100: {args.steps} steps x "
        f"{args.repeats} repeats, scaled to one epoch ({len(loader)} steps)",
    )
    configs = {PLAIN: plain_torch, "pyroext run_svi, Trace_ELBO": pyroext_bbb}
    contenders = {
        name: functools.partial(seconds, train, widths, loader, args)
        for name, train in configs.items()
    }
    epoch = len(loader) / args.steps
    samples = {
        name: [s * epoch for s in v] for name, v in interleave(contenders, args.repeats).items()
    }
    print_comparison(
        samples,
        {"ratio to plain PyTorch": PLAIN},
        label="implementation",
        unit="s/epoch",
        ratio_digits=3,
    )


if __name__ == "__main__":
    main()
