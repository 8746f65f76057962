"""Seconds per epoch of pyroext's Bayes by backprop against a hand-written PyTorch loop
(issue 7).

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
        [--device cuda]
"""

import argparse
import datetime
import itertools
import math
import platform
import statistics
import time
from collections.abc import Callable, Iterator

import pyro
import torch
from pyro.infer import Trace_ELBO
from torch import Tensor, nn
from torch.distributions import Categorical, Normal
from torch.nn.functional import softplus
from torch.utils.data import DataLoader, TensorDataset

import pyroext
from pyroext.data import load_bnn_data
from pyroext.infer import FusedOptim, run_svi
from pyroext.models.bnn import BayesianMLP, ScaleMixturePrior, relu_mlp
from pyroext.models.bnn.guide import AutoBayesByBackprop

INIT_SCALE = 0.01
PRIOR = ScaleMixturePrior()


def network(widths: list[int]) -> nn.Sequential:
    torch.manual_seed(0)
    return relu_mlp(widths)


def mixture_log_prior(w: Tensor) -> Tensor:
    sigmas = torch.tensor([PRIOR.sigma1, PRIOR.sigma2], device=w.device)
    weights = torch.tensor([math.log(PRIOR.pi), math.log(1 - PRIOR.pi)], device=w.device)
    return (Normal(0.0, sigmas).log_prob(w[..., None]) + weights).logsumexp(-1).sum()


def plain_torch(widths: list[int], loader: DataLoader, steps: int, device: str) -> None:
    net = network(widths).to(device)
    locs = [p.detach().clone().requires_grad_() for p in net.parameters()]
    rho = math.log(math.expm1(INIT_SCALE))
    rhos = [torch.full_like(p, rho, requires_grad=True) for p in locs]
    optim = torch.optim.Adam(locs + rhos, lr=1e-3)
    scale = len(loader.dataset) / loader.batch_size
    for x, y in _batches(loader, steps):
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


def _batches(loader: DataLoader, steps: int) -> Iterator[tuple[Tensor, Tensor]]:
    batches = itertools.chain.from_iterable(itertools.repeat(loader))
    return itertools.islice(batches, steps)


def seconds(
    fn: Callable[[list[int], DataLoader, int, str], None],
    widths: list[int],
    loader: DataLoader,
    args: argparse.Namespace,
) -> float:
    fn(widths, loader, 10, args.device)  # warm-up: allocator, lazy set-up
    _synchronize(args.device)
    start = time.perf_counter()
    fn(widths, loader, args.steps, args.device)
    _synchronize(args.device)
    return time.perf_counter() - start


def _synchronize(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def main(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    pyro.enable_validation(args.validation)
    data = load_bnn_data("classification", args.data, args.data_dir)
    widths = [data.x_train.shape[1], *map(int, args.hidden.split(",")), 10]
    loader = DataLoader(
        TensorDataset(data.x_train, data.y_train), batch_size=100, shuffle=True, drop_last=True
    )
    configs = {"plain PyTorch": plain_torch, "pyroext run_svi, Trace_ELBO": pyroext_bbb}
    times: dict[str, list[float]] = {name: [] for name in configs}
    for _ in range(args.repeats):
        for name, fn in configs.items():
            times[name].append(seconds(fn, widths, loader, args))
    print(
        f"# {datetime.date.today()}, {_machine(args.device)}, {args.threads} threads, validation "
        f"{'on' if args.validation else 'off'}; torch {torch.__version__}, pyro "
        f"{pyro.__version__}, pyroext {pyroext.__version__}"
    )
    print(
        f"# {args.data} {'-'.join(map(str, widths))}, batch 100: {args.steps} steps x "
        f"{args.repeats} repeats, scaled to one epoch ({len(loader)} steps)"
    )
    print("| implementation | s/epoch (median) | ratio to plain PyTorch |")
    print("|---|---|---|")
    base = statistics.median(times["plain PyTorch"])
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {median * len(loader) / args.steps:.2f} | {median / base:.3f} |")


def _machine(device: str) -> str:
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.machine()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--data", default="mnist", choices=("digits", "mnist"))
    parser.add_argument("--data-dir", default=None, help="folder holding MNIST/raw")
    parser.add_argument("--hidden", default="400,400")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--validation",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Pyro/torch distribution argument checks (on by default in Pyro)",
    )
    main(parser.parse_args())
