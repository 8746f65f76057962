"""Seed-to-seed spread of AutoDAIS's ELBO gap: pyroext's, its K=0 base and NumPyro's.

Each contender is trained once per seed with the same model, step budget, Adam rate and a
one-particle ``Trace_ELBO``: pyroext's ``AutoDAIS(K=4)`` with its defaults, its base alone
(``AutoDiagonalNormal``, init_scale 0.1 like the guide's base) and NumPyro's ``AutoDAIS(K=4)``
with its defaults. The final ELBO is estimated from many fresh draws with its Monte Carlo
standard error; the script prints the gap ``log Z - ELBO`` per seed, its spread across seeds
(max - min and sd) and the learned step sizes ``eta_1..K`` (pyroext's in units of the base's
scale, NumPyro's in the raw units of the latents). Targets, both with an exact ``log Z``:

* ``linreg``: the diabetes regression of ``benchmarks/mcmc_guides.py`` (442 x 10, known noise
  sd 0.7, prior precision 1), a posterior correlated through the design;
* ``funnel``: Neal's funnel in 10 dimensions (``log Z = 0``).

Float64 in both libraries. Without NumPyro its rows are left out.

    python benchmarks/dais_spread.py [--steps 3000] [--seeds 0 1 2 3 4] [--quick]
"""

import argparse
import functools
import math
import statistics
from collections.abc import Callable
from typing import Any

import pyro
import torch
from _compiled import jax_modules
from _harness import Options, Table, begin
from mcmc_guides import FUNNEL_DIM, MAX_PLATE_NESTING, Problem, estimate_elbo
from mcmc_guides import PROBLEMS as TORCH_PROBLEMS
from pyro.infer import Trace_ELBO
from pyro.infer.autoguide import AutoDiagonalNormal

from pyroext.guides import AutoDAIS
from pyroext.infer import run_svi

NOISE, PRIOR_PRECISION = 0.7, 1.0
BASE = "base (AutoDiagonalNormal)"
PYROEXT = "pyroext AutoDAIS"
NUMPYRO = "NumPyro AutoDAIS"


def numpyro_linreg(x: Any, y: Any) -> None:
    """``models.linear_regression.model_known_noise`` in NumPyro."""
    nx = jax_modules()
    scale = PRIOR_PRECISION**-0.5
    w = nx.numpyro.sample("w", nx.dist.Normal(0.0, scale).expand(x.shape[-1:]).to_event(1))
    b = nx.numpyro.sample("b", nx.dist.Normal(0.0, scale))
    with nx.numpyro.plate("data", x.shape[0]):
        nx.numpyro.sample("obs", nx.dist.Normal(x @ w + b, NOISE), obs=y)


def numpyro_funnel() -> None:
    """``mcmc_guides.funnel_model`` in NumPyro."""
    nx = jax_modules()
    z1 = nx.numpyro.sample("z1", nx.dist.Normal(0.0, 3.0))
    scale = nx.jnp.exp(z1 / 2) * nx.jnp.ones(FUNNEL_DIM - 1)
    nx.numpyro.sample("z2", nx.dist.Normal(0.0, scale).to_event(1))


NUMPYRO_MODELS: dict[str, Callable[..., None]] = {
    "linreg": numpyro_linreg,
    "funnel": numpyro_funnel,
}


def train_pyroext(
    problem: Problem, make_guide: Callable[..., Any], seed: int, args: argparse.Namespace
) -> tuple[float, float, list[float]]:
    """Trains one pyroext (or Pyro) guide: its ELBO, MCSE and step sizes (if any)."""
    pyro.clear_param_store()
    guide = make_guide(problem.model)
    run_svi(
        problem.model,
        guide,
        *problem.args,
        num_steps=args.steps,
        optim=pyro.optim.Adam({"lr": args.lr}),
        loss=Trace_ELBO(max_plate_nesting=MAX_PLATE_NESTING),
        progress=False,
        seed=seed,
    )
    elbo, mcse = estimate_elbo(problem, guide, args.eval)
    steps = guide.schedule()[1].tolist() if isinstance(guide, AutoDAIS) else []
    return elbo, mcse, steps


def train_numpyro(
    name: str, problem: Problem, seed: int, args: argparse.Namespace
) -> tuple[float, float, list[float]]:
    """Trains NumPyro's ``AutoDAIS(K)``: its ELBO, MCSE and raw step sizes."""
    nx = jax_modules()
    model = NUMPYRO_MODELS[name]
    data = tuple(nx.jnp.asarray(a.numpy()) for a in problem.args)
    guide = nx.autoguide.AutoDAIS(model, K=args.K)
    svi = nx.SVI(model, guide, nx.optim.Adam(args.lr), nx.Trace_ELBO())
    result = svi.run(nx.jax.random.PRNGKey(seed), args.steps, *data, progress_bar=False)
    params = result.params

    def log_weight(key: Any) -> Any:
        return -nx.Trace_ELBO().loss(key, params, model, guide, *data)

    keys = nx.jax.random.split(nx.jax.random.PRNGKey(seed + 10_000), args.eval)
    weights = torch.as_tensor(nx.jax.device_get(nx.jax.vmap(log_weight)(keys)).tolist())
    betas = params["auto_beta_increments"].cumsum() / params["auto_beta_increments"].sum()
    steps = (params["auto_eta0"] + params["auto_eta_coeff"] * betas).clip(0.0, guide.eta_max)
    return weights.mean().item(), (weights.std() / math.sqrt(args.eval)).item(), steps.tolist()


def spread_rows(name: str, args: argparse.Namespace) -> dict[str, list[float]]:
    """Trains every contender on target ``name`` for every seed; prints one row per run."""
    problem = TORCH_PROBLEMS[name]()
    contenders: dict[str, Callable[[int], tuple[float, float, list[float]]]] = {
        BASE: functools.partial(train_pyroext, problem, AutoDiagonalNormal, args=args),
        PYROEXT: functools.partial(
            train_pyroext, problem, functools.partial(AutoDAIS, K=args.K), args=args
        ),
    }
    if jax_modules() is not None:
        contenders[NUMPYRO] = functools.partial(train_numpyro, name, problem, args=args)
    print(f"\n{name}: log Z = {problem.log_evidence:.3f}")
    table = Table("guide", "seed", "gap ± MCSE", "eta_1..K")
    gaps: dict[str, list[float]] = {label: [] for label in contenders}
    for label, run in contenders.items():
        for seed in args.seeds:
            elbo, mcse, steps = run(seed)
            gaps[label].append(problem.log_evidence - elbo)
            shown = " ".join(f"{eta:.3g}" for eta in steps) or "—"
            table.row(label, seed, f"{gaps[label][-1]:.3f} ± {mcse:.3f}", shown)
    return gaps


def print_spread(name: str, gaps: dict[str, list[float]]) -> None:
    """Min, median, max, max - min and sd of each contender's gaps across seeds."""
    table = Table(f"{name}: guide", "min", "median", "max", "max - min", "sd")
    for label, values in gaps.items():
        sd = statistics.stdev(values) if len(values) > 1 else math.nan
        cells = (min(values), statistics.median(values), max(values))
        table.row(label, *(f"{v:.3f}" for v in cells), f"{cells[2] - cells[0]:.3f}", f"{sd:.3f}")


def main() -> None:
    options = Options(__doc__)
    options.add("--steps", full=3000, quick=30, type=int, help="optimiser steps per run")
    options.add("--seeds", full=[0, 1, 2, 3, 4], quick=[0, 1], nargs="+", type=int, help="seeds")
    options.add(
        "--targets",
        full=list(NUMPYRO_MODELS),
        nargs="+",
        choices=list(NUMPYRO_MODELS),
        help="targets",
    )
    options.add("--K", full=4, type=int, help="annealing steps of both AutoDAIS")
    options.add("--lr", full=0.01, type=float, help="Adam rate")
    options.add("--eval", full=5000, quick=200, type=int, help="draws per final ELBO")
    args = options.parse()
    begin(
        args,
        f"float64; {args.steps} steps, 1 particle/step, Adam lr {args.lr}; K={args.K}; "
        f"ELBO from {args.eval} draws; seeds {args.seeds}",
    )
    torch.set_default_dtype(torch.float64)
    if jax_modules() is not None:
        jax_modules().jax.config.update("jax_enable_x64", True)
    for name in args.targets:
        print_spread(name, spread_rows(name, args))


if __name__ == "__main__":
    main()
