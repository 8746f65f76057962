"""Per-step cost of pyroext's SVI runner against Pyro's own loop and a hand-written PyTorch ELBO.

Model: Bayesian linear regression with known noise on the diabetes data (442 x 10), mean-field
Gaussian guide, one particle, Adam(lr=0.01). Every configuration runs in this process on the
same data; the table reports the median ms/step over repeats and ratios against Pyro's
``SVI.step`` loop and against plain PyTorch.

    python benchmarks/runner_overhead.py [--steps 2000] [--repeats 3] [--device cpu]
"""

import argparse
import functools
import platform
import statistics
import time
from collections.abc import Callable

import pyro
import torch
from pyro.infer import SVI, JitTrace_ELBO, Trace_ELBO
from pyro.infer.autoguide import AutoNormal

import pyroext
from pyroext.data import load_diabetes
from pyroext.infer import run_svi
from pyroext.models.linear_regression import model_known_noise

NOISE = 0.7


def plain_torch(x: torch.Tensor, y: torch.Tensor, steps: int) -> None:
    """Reparameterised mean-field ELBO written by hand: the floor any framework pays."""
    dim = x.shape[1] + 1
    loc = torch.zeros(dim, device=x.device, requires_grad=True)
    raw_scale = torch.full((dim,), -2.0, device=x.device, requires_grad=True)
    optim = torch.optim.Adam([loc, raw_scale], lr=0.01)
    prior = torch.distributions.Normal(0.0, 1.0)
    for _ in range(steps):
        q = torch.distributions.Normal(loc, torch.nn.functional.softplus(raw_scale))
        theta = q.rsample()
        mean = x @ theta[:-1] + theta[-1]
        log_lik = torch.distributions.Normal(mean, NOISE).log_prob(y).sum()
        loss = q.log_prob(theta).sum() - prior.log_prob(theta).sum() - log_lik
        optim.zero_grad()
        loss.backward()
        optim.step()


def pyro_loop(x: torch.Tensor, y: torch.Tensor, steps: int, jit: bool = False) -> None:
    model = functools.partial(model_known_noise, noise_scale=NOISE)
    svi = SVI(model, AutoNormal(model), pyro.optim.Adam({"lr": 0.01}), _elbo(jit))
    for _ in range(steps):
        svi.step(x, y)


def pyroext_runner(x: torch.Tensor, y: torch.Tensor, steps: int, jit: bool = False) -> None:
    model = functools.partial(model_known_noise, noise_scale=NOISE)
    run_svi(
        model,
        AutoNormal(model),
        x,
        y,
        num_steps=steps,
        loss=_elbo(jit),
        progress=False,
        optim=pyro.optim.Adam({"lr": 0.01}),
    )


def _elbo(jit: bool) -> Trace_ELBO:
    return JitTrace_ELBO() if jit else Trace_ELBO()


def time_per_step(fn: Callable[..., None], x: torch.Tensor, y: torch.Tensor, steps: int) -> float:
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    fn(x, y, 50)  # warm-up: allocator, JIT tracing, lazy guide set-up
    pyro.clear_param_store()
    if x.is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn(x, y, steps)
    if x.is_cuda:
        torch.cuda.synchronize()
    return 1000 * (time.perf_counter() - start) / steps


def main(args: argparse.Namespace) -> None:
    data = load_diabetes()
    x, y = data.x.to(args.device), data.y.to(args.device)
    configs = {
        "plain PyTorch": plain_torch,
        "Pyro SVI.step": pyro_loop,
        "pyroext run_svi": pyroext_runner,
        "Pyro SVI.step, JIT": functools.partial(pyro_loop, jit=True),
        "pyroext run_svi, JIT": functools.partial(pyroext_runner, jit=True),
    }
    times = {name: [] for name in configs}
    for _ in range(args.repeats):  # interleaved so that machine noise hits every config alike
        for name, fn in configs.items():
            times[name].append(time_per_step(fn, x, y, args.steps))
    machine = f"{platform.machine()}, {torch.get_num_threads()} threads, device {args.device}"
    versions = f"torch {torch.__version__}, pyro {pyro.__version__}, pyroext {pyroext.__version__}"
    print(f"# {machine}; {versions}; {args.steps} steps x {args.repeats} repeats")
    print("| configuration | ms/step (median) | vs Pyro SVI.step | vs plain PyTorch |")
    print("|---|---|---|---|")
    pyro_ms = statistics.median(times["Pyro SVI.step"])
    torch_ms = statistics.median(times["plain PyTorch"])
    for name, values in times.items():
        ms = statistics.median(values)
        print(f"| {name} | {ms:.3f} | {ms / pyro_ms:.2f} | {ms / torch_ms:.2f} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    main(parser.parse_args())
