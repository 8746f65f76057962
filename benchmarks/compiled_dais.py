"""Per-step cost of AutoDAIS, compiled and eager, against NumPyro's AutoDAIS.

``AutoDAIS(K=8)`` (``--K``), NumPyro's and pyroext's, each with its other defaults, Adam lr
0.005, on a correlated Gaussian regression (N=200, D=5, design columns correlated 0.9, known
noise) and on Neal's funnel (d=10): NumPyro's jitted ``svi.update`` loop, pyroext eager
(``TensorSVI`` with ``Trace_ELBO``) and pyroext compiled (``CompiledTrace_ELBO``). Without
NumPyro its column is left out.

    python benchmarks/compiled_dais.py [--steps 300] [--repeats 3] [--quick]
"""

import functools
import math
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from _compiled import (
    COMPILED,
    NOISE,
    NUMPYRO_LOOP,
    Problem,
    jax_modules,
    numpyro_loop,
    options,
    per_step,
    pyroext_step,
    regression_data,
    session,
    with_numpyro,
)
from _harness import Table, fmt, ratio
from torch import Tensor

LR = 0.005
TARGETS = ("regression", "funnel")
FUNNEL_DIM = 10
EAGER = "pyroext eager (TensorSVI + Trace_ELBO)"
CONTENDERS = {
    NUMPYRO_LOOP: numpyro_loop,
    EAGER: functools.partial(pyroext_step, compiled=False),
    COMPILED: pyroext_step,
}


def correlated_model(x: Tensor, y: Tensor) -> None:
    """``w ~ N(0, 1)^D``, ``y ~ N(x w, NOISE)``: a Gaussian posterior, correlated through x."""
    w = pyro.sample("w", dist.Normal(x.new_zeros(x.shape[1]), 1.0).to_event(1))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("y", dist.Normal(x @ w, NOISE), obs=y)


def numpyro_correlated_model(x: Any, y: Any) -> None:
    """:func:`correlated_model` in NumPyro."""
    nx = jax_modules()
    w = nx.numpyro.sample("w", nx.dist.Normal(nx.jnp.zeros(x.shape[1]), 1.0).to_event(1))
    with nx.numpyro.plate("data", x.shape[0]):
        nx.numpyro.sample("y", nx.dist.Normal(x @ w, NOISE), obs=y)


def funnel_model() -> None:
    """Neal's funnel: ``v ~ N(0, 3^2)``, ``x_i ~ N(0, exp(v / 2)^2)`` for 9 coordinates."""
    v = pyro.sample("v", dist.Normal(torch.tensor(0.0), 3.0))
    pyro.sample("x", dist.Normal(torch.zeros(FUNNEL_DIM - 1), (v / 2).exp()).to_event(1))


def numpyro_funnel_model() -> None:
    """:func:`funnel_model` in NumPyro."""
    nx = jax_modules()
    v = nx.numpyro.sample("v", nx.dist.Normal(0.0, 3.0))
    scale = nx.jnp.exp(v / 2)
    nx.numpyro.sample("x", nx.dist.Normal(nx.jnp.zeros(FUNNEL_DIM - 1), scale).to_event(1))


def targets(k: int) -> dict[str, tuple[str, Problem]]:
    """The two targets by their option names: row label and problem, for ``AutoDAIS(K=k)``."""
    data = regression_data(200, 5, correlation=0.9)
    guide = ("AutoDAIS", LR, (("K", k),))
    regression = Problem(correlated_model, numpyro_correlated_model, data, *guide)
    funnel = Problem(funnel_model, numpyro_funnel_model, (), *guide)
    return {
        "regression": ("correlated regression, N=200, D=5", regression),
        "funnel": (f"Neal's funnel, d={FUNNEL_DIM}", funnel),
    }


def main() -> None:
    parser = options(__doc__, steps=300, quick_steps=20)
    parser.add(
        "--models",
        full=list(TARGETS),
        quick=TARGETS[1:],
        nargs="+",
        choices=TARGETS,
        help="targets",
    )
    parser.add("--K", full=8, quick=2, type=int, help="annealing steps of AutoDAIS")
    args = parser.parse()
    with session(args, f"AutoDAIS(K={args.K}), Adam lr {LR}; ms/step, {args.steps} steps"):
        contenders = with_numpyro(CONTENDERS)
        table = Table("model", *contenders, "compiled / NumPyro", "eager / compiled")
        problems = targets(args.K)
        for label, problem in (problems[name] for name in args.models):
            times = per_step(contenders, problem, args.steps, args.repeats)
            compared = ratio(times[COMPILED], times.get(NUMPYRO_LOOP, math.nan))
            speedup = ratio(times[EAGER], times[COMPILED])
            table.row(label, *map(fmt, times.values()), compared, speedup)


if __name__ == "__main__":
    main()
