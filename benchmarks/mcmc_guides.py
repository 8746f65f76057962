"""ELBO gap versus wall-clock: Gaussian, flow and MCMC-in-guide autoguides on two problems.

Every guide is trained with the same seed, optimiser, step budget and number of vectorised
ELBO particles, on problems whose log evidence ``log Z`` is known exactly:

* ``linreg``: Bayesian linear regression on the standardised diabetes data (442 x 10), known
  noise sd 0.7, prior precision 1; ``log Z`` from
  :func:`pyroext.models.linear_regression.log_evidence_known_noise`, and the exact Gaussian
  posterior for the KL of Gaussian guides.
* ``funnel``: Neal's funnel in 10 dimensions, ``z1 ~ N(0, 3^2)``, ``z2..z10 | z1 ~ N(0,
  exp(z1))``; a normalised density, so ``log Z = 0``.

Training is split at 25%, 50% and 100% of the steps; at each checkpoint the ELBO is estimated
from many fresh guide draws (with its Monte Carlo standard error), and the gap ``log Z - ELBO``
(an upper bound on ``KL(q || p)``, and equal to it for guides with a tractable density) is
reported with the training time spent so far. Evaluation time and random draws are kept out of
the training clock and stream. Timings use one thread so that they are comparable between
guides on a shared machine.

    python benchmarks/mcmc_guides.py [--steps 2500] [--problems linreg funnel] [--quick]

Run it with ``--help`` for the other options.
"""

import argparse
import functools
import math
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import pyro
import pyro.distributions as dist
import pyro.util
import torch
from _harness import Options, Table, begin
from pyro import poutine
from pyro.infer import Trace_ELBO
from pyro.infer.autoguide import (
    AutoGuide,
    AutoIAFNormal,
    AutoMultivariateNormal,
    AutoNormal,
)
from torch import Tensor

from pyroext.data import load_diabetes
from pyroext.guides import AutoDAIS, AutoMetFlow, gaussian_moments
from pyroext.infer import run_svi
from pyroext.models import linear_regression as lr

CHECKPOINTS = (0.25, 0.5, 1.0)
FINAL_LR_FRACTION = 0.01
# One plate dim for linreg's data plate; the funnel has none, and an unused dim is harmless.
MAX_PLATE_NESTING = 1
EVAL_CHUNK = 1000
FUNNEL_DIM = 10


class Problem(NamedTuple):
    """A model with its arguments and exact references."""

    model: Callable[..., Any]
    args: tuple[Tensor, ...]
    log_evidence: float
    exact: lr.GaussianPosterior | None


class Checkpoint(NamedTuple):
    """The ELBO estimate after ``step`` steps, with the training time spent up to then.

    ``cpu`` is this process's CPU time (one thread, so close to the time the work takes on an
    idle core); ``wall`` is the runner's wall clock, which other jobs on the machine inflate.
    """

    step: int
    cpu: float
    wall: float
    elbo: float
    mcse: float


def linreg_problem() -> Problem:
    """Diabetes regression with known noise sd 0.7 and prior precision 1."""
    data = load_diabetes(dtype=torch.float64)
    options = {"noise_scale": 0.7, "prior_precision": 1.0}
    model = functools.partial(lr.model_known_noise, **options)
    log_z = lr.log_evidence_known_noise(data.x, data.y, **options)
    exact = lr.conjugate_posterior(data.x, data.y, **options)
    return Problem(model, (data.x, data.y), float(log_z), exact)


def funnel_model() -> None:
    """Neal's funnel: ``z1 ~ N(0, 3^2)``, ``z2 | z1 ~ N(0, exp(z1) I_9)``."""
    z1 = pyro.sample("z1", dist.Normal(torch.tensor(0.0), 3.0))
    # z1 may carry particle dims; the 9 coordinates of z2 form its event dim on the right.
    scale = (z1 / 2).exp()[..., None].expand(z1.shape + (FUNNEL_DIM - 1,))
    pyro.sample("z2", dist.Normal(torch.zeros_like(scale), scale).to_event(1))


def funnel_problem() -> Problem:
    """The 10-dimensional funnel, a normalised density (``log Z = 0``)."""
    return Problem(funnel_model, (), 0.0, None)


PROBLEMS: dict[str, Callable[[], Problem]] = {"linreg": linreg_problem, "funnel": funnel_problem}

# Pyroext's guides keep their defaults (diagonal base, init_scale 0.1, Barker acceptance).
GUIDES: dict[str, Callable[[Callable[..., Any]], AutoGuide]] = {
    "AutoNormal": AutoNormal,
    "AutoMultivariateNormal": AutoMultivariateNormal,
    "AutoIAFNormal(2)": functools.partial(AutoIAFNormal, num_transforms=2),
    "AutoDAIS(K=4)": functools.partial(AutoDAIS, K=4),
    "AutoDAIS(K=16)": functools.partial(AutoDAIS, K=16),
    "AutoMetFlow(K=4)": functools.partial(AutoMetFlow, K=4),
    "AutoDAIS(K=4,chol)": functools.partial(AutoDAIS, K=4, base_dist="cholesky"),
    "AutoMetFlow(K=4,chol)": functools.partial(AutoMetFlow, K=4, base_dist="cholesky"),
}
DEFAULT_GUIDES = list(GUIDES)[:6]


def log_weights(problem: Problem, guide: AutoGuide, num: int) -> Tensor:
    """``log p(x, z) - log q(z)`` of ``num`` fresh guide draws, ``(num,)``.

    The guide runs in a particle plate and the model is replayed on its draws, as in Pyro's
    vectorised ``Trace_ELBO``; for the Markov guides the auxiliary ``Delta`` site carries the
    extended-space terms, so this is the same integrand their ELBO averages.
    """
    with (
        torch.no_grad(),
        poutine.block(),
        pyro.plate("_eval", num, dim=-MAX_PLATE_NESTING - 1),
    ):
        guide_trace = poutine.trace(guide).get_trace(*problem.args)
        model_trace = poutine.trace(poutine.replay(problem.model, guide_trace)).get_trace(
            *problem.args
        )
    return _trace_log_prob(model_trace, num) - _trace_log_prob(guide_trace, num)


def _trace_log_prob(trace: poutine.Trace, num: int) -> Tensor:
    total = torch.zeros(num)
    for site in trace.nodes.values():
        if site["type"] == "sample":
            log_prob = site["fn"].log_prob(site["value"])
            # Sites outside the particle plate (none here) would broadcast as a scalar.
            total = total + (log_prob.reshape(num, -1).sum(-1) if log_prob.dim() else log_prob)
    return total


def estimate_elbo(problem: Problem, guide: AutoGuide, num: int) -> tuple[float, float]:
    """ELBO estimate from ``num`` draws and its Monte Carlo standard error.

    The RNG state is restored afterwards so that evaluating does not change training.
    """
    state = pyro.util.get_rng_state()
    chunks = [
        log_weights(problem, guide, min(EVAL_CHUNK, num - i)) for i in range(0, num, EVAL_CHUNK)
    ]
    pyro.util.set_rng_state(state)
    weights = torch.cat(chunks).double()
    return weights.mean().item(), (weights.std() / math.sqrt(num)).item()


def kl_to_exact(guide: AutoGuide, problem: Problem) -> float:
    """KL(q || exact posterior) for Gaussian guides; NaN otherwise."""
    if problem.exact is None:
        return math.nan
    try:
        mean, cov = gaussian_moments(guide)
    # Flows raise TypeError; pyroext's Markov guides have no get_posterior at all.
    except (TypeError, NotImplementedError):
        return math.nan
    return lr.kl_gaussian(mean.double(), cov.double(), problem.exact.mean, problem.exact.cov)


def train(
    problem: Problem, make_guide: Callable[..., AutoGuide], args: argparse.Namespace
) -> tuple[AutoGuide, list[Checkpoint]]:
    """Trains one guide in segments ending at :data:`CHECKPOINTS`, evaluating after each.

    The segments share one optimiser object, so Adam's moments and the learning-rate decay
    carry over and the run matches an uninterrupted one up to the evaluation RNG, which
    :func:`estimate_elbo` restores.
    """
    pyro.clear_param_store()
    guide = make_guide(problem.model)
    optim = pyro.optim.ClippedAdam({"lr": args.lr, "lrd": FINAL_LR_FRACTION ** (1 / args.steps)})
    loss = Trace_ELBO(
        num_particles=args.particles,
        vectorize_particles=True,
        max_plate_nesting=MAX_PLATE_NESTING,
    )
    done, cpu, wall, checkpoints = 0, 0.0, 0.0, []
    for fraction in CHECKPOINTS:
        target = max(done + 1, round(fraction * args.steps))
        start = time.process_time()
        result = run_svi(
            problem.model,
            guide,
            *problem.args,
            num_steps=target - done,
            optim=optim,
            loss=loss,
            progress=False,
            seed=args.seed if done == 0 else None,
        )
        done, cpu, wall = target, cpu + time.process_time() - start, wall + result.wall_time
        checkpoints.append(Checkpoint(done, cpu, wall, *estimate_elbo(problem, guide, args.eval)))
    return guide, checkpoints


def guide_row(problem: Problem, name: str, args: argparse.Namespace) -> list[str]:
    """Trains guide ``name`` on ``problem``; the cells of its table row."""
    guide, checkpoints = train(problem, GUIDES[name], args)
    final = checkpoints[-1]
    gaps = [f"{problem.log_evidence - c.elbo:.3f} @ {c.cpu:.1f} s" for c in checkpoints[:-1]]
    kl = kl_to_exact(guide, problem)
    return [
        name,
        f"{final.step / final.cpu:.0f}",
        f"{final.cpu:.1f} ({final.wall:.1f})",
        *gaps,
        f"{problem.log_evidence - final.elbo:.3f} ± {final.mcse:.3f}",
        f"{final.elbo:.3f}",
        "—" if math.isnan(kl) else f"{kl:.4f}",
    ]


def main() -> None:
    args = parse_args()
    begin(
        args,
        f"float64; seed {args.seed}; {args.steps} steps, {args.particles} particles/step, "
        f"ClippedAdam lr {args.lr} decayed to {FINAL_LR_FRACTION} x; ELBO from {args.eval} draws",
    )
    # float64 throughout: the diabetes posterior has condition number ~400, and the exact
    # references are float64.
    torch.set_default_dtype(torch.float64)
    fractions = [f"gap @ {f:.0%} steps" for f in CHECKPOINTS[:-1]]
    for name in args.problems:
        problem = PROBLEMS[name]()
        print(f"\n{name}: log Z = {problem.log_evidence:.3f}; times are CPU s (wall s)")
        table = Table(
            "guide",
            "steps/s",
            "train time",
            *fractions,
            "gap (final) ± MCSE",
            "ELBO",
            "KL(q ‖ exact)",
        )
        for guide in args.guides:
            table.row(*guide_row(problem, guide, args))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; ``--quick`` shrinks the run to a check of seconds."""
    options = Options(__doc__)
    options.add("--steps", full=2500, quick=20, type=int, help="optimiser steps per guide")
    options.add("--seed", full=0, type=int, help="seed of training and evaluation")
    options.add(
        "--problems", full=list(PROBLEMS), nargs="+", choices=list(PROBLEMS), help="problems"
    )
    options.add(
        "--guides",
        full=DEFAULT_GUIDES,
        nargs="+",
        choices=list(GUIDES),
        help="guides",
    )
    options.add("--particles", full=8, type=int, help="ELBO particles per step")
    options.add("--lr", full=0.02, type=float, help="initial ClippedAdam rate")
    options.add("--eval", full=5000, quick=200, type=int, help="draws per ELBO estimate")
    args = options.parse(argv)
    if args.steps < len(CHECKPOINTS):
        options.parser.error(f"--steps must be >= {len(CHECKPOINTS)}")
    return args


if __name__ == "__main__":
    main()
