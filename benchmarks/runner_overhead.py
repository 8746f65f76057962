"""Per-step cost of pyroext's SVI runner against Pyro's own loop and a hand-written PyTorch ELBO.

Model: Bayesian linear regression with known noise on the diabetes data (442 x 10), mean-field
Gaussian guide, one particle, Adam(lr=0.01). Every configuration runs in this process on the
same data; the table reports ms/step over interleaved repeats and ratios of the medians
against Pyro's ``SVI.step`` loop and against plain PyTorch.

    python benchmarks/runner_overhead.py [--steps 2000] [--repeats 3] [--device cpu] [--quick]
"""

import functools
from collections.abc import Callable

import pyro
import torch
from _harness import Options, begin, interleave, loop_seconds, print_comparison
from pyro.infer import SVI, JitTrace_ELBO, Trace_ELBO
from pyro.infer.autoguide import AutoNormal

from pyroext.data import load_diabetes
from pyroext.infer import run_svi
from pyroext.models.linear_regression import model_known_noise

NOISE = 0.7
WARMUP = 50  # allocator, JIT tracing, lazy guide set-up
PYRO, TORCH = "Pyro SVI.step", "plain PyTorch"


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
    """Pyro's own ``SVI.step`` in a Python loop."""
    model = functools.partial(model_known_noise, noise_scale=NOISE)
    svi = SVI(model, AutoNormal(model), pyro.optim.Adam({"lr": 0.01}), _elbo(jit))
    for _ in range(steps):
        svi.step(x, y)


def pyroext_runner(x: torch.Tensor, y: torch.Tensor, steps: int, jit: bool = False) -> None:
    """The same model, guide and optimiser through :func:`pyroext.infer.run_svi`."""
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


def ms_per_step(
    train: Callable[[torch.Tensor, torch.Tensor, int], None],
    x: torch.Tensor,
    y: torch.Tensor,
    steps: int,
) -> float:
    """ms/step of ``train(x, y, steps)`` from a fresh param store, after a warm-up run."""

    def loop(n: int) -> None:
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        train(x, y, n)

    seconds, _ = loop_seconds(loop, steps, warmup=WARMUP, device=str(x.device))
    return 1000 * seconds / steps


def main() -> None:
    options = Options(__doc__)
    options.timing(steps=2000, quick_steps=50)
    options.threads(2)
    options.device()
    args = options.parse()
    begin(args, f"{args.steps} steps x {args.repeats} repeats, interleaved; diabetes 442 x 10")
    data = load_diabetes()
    x, y = data.x.to(args.device), data.y.to(args.device)
    configs = {
        TORCH: plain_torch,
        PYRO: pyro_loop,
        "pyroext run_svi": pyroext_runner,
        "Pyro SVI.step, JIT": functools.partial(pyro_loop, jit=True),
        "pyroext run_svi, JIT": functools.partial(pyroext_runner, jit=True),
    }
    contenders = {
        name: functools.partial(ms_per_step, train, x, y, args.steps)
        for name, train in configs.items()
    }
    samples = interleave(contenders, args.repeats)
    baselines = {f"vs {PYRO}": PYRO, f"vs {TORCH}": TORCH}
    print_comparison(samples, baselines, label="configuration", unit="ms/step")


if __name__ == "__main__":
    main()
