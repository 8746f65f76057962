"""Mode capturing: MetFlow against plain VI on a mixture of 8 Gaussians at hypercube vertices.

The MetFlow authors' experiment (Thin et al., 2020, https://arxiv.org/abs/2002.12253): the
target is an equally weighted mixture of 8 unit-covariance Gaussians whose centres are
distinct random vertices of ``{-4, +4}^d`` (drawn from the seed), written as a Pyro model with
one latent site ``z``. Each guide starts at ``N(0, I)`` and is trained with Adam (lr 1e-3, as
in the authors' code) on 400 vectorised ELBO particles per step; then 8000 draws (20 batches
of 400) are kept, and a mode counts as captured when more than 1/80 of them lie within squared
distance ``4 d`` of its centre.

The target is normalised, so ``log Z = 0`` and the ELBO is minus the gap; a guide that covers
``m`` of the modes perfectly and nothing else has ELBO ``-log(8 / m)`` (-2.08 for one mode).
For MetFlow the ELBO is the extended-space bound, which is below the marginal one.

Timings use one thread and are reported as CPU seconds (wall seconds, which other jobs on a
shared machine inflate).

    python benchmarks/mode_capturing.py [--dims 3 5 10 20] [--steps 1500] [--quick]

Run it with ``--help`` for the other options.
"""

import argparse
import functools
import math
import statistics
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import pyro
import pyro.distributions as dist
import torch
from _harness import Options, Table, begin
from pyro import poutine
from pyro.distributions import constraints
from pyro.infer import Trace_ELBO
from pyro.infer.autoguide import AutoGuide, AutoIAFNormal, AutoNormal, init_to_value
from torch import Tensor

from pyroext.guides import AutoMetFlow
from pyroext.infer import run_svi

NUM_MODES = 8
HALF_WIDTH = 4.0
BATCH = 400
KEEP_BATCHES = 20
# Modes captured by the authors (means over their runs, from their repository's logs).
REFERENCE = {
    "MetFlow, learned base": {3: "8.0", 5: "3.2", 10: "2.2", 20: "1.8"},
    "NAF": {3: "4.0", 5: "2.2", 10: "1.4", 20: "1.0"},
    "NUTS, 8 chains": {3: "~6", 5: "~6", 10: "~5", 20: "~5"},
}


class RealMixture(dist.MixtureSameFamily):
    """``MixtureSameFamily`` whose support is declared ``real_vector``.

    Torch wraps a mixture's support in a ``MixtureSameFamilyConstraint``, for which
    ``biject_to`` has no transform, so autoguides cannot build their unconstrained space; for
    Normal components the support is all of ``R^d`` anyway.
    """

    support = constraints.real_vector


class Kept(NamedTuple):
    """What the kept draws of a trained guide show.

    Fields:
        modes: Number of captured modes.
        elbo: Mean of the draws' ``log p - log q``.
        mcse: Its Monte Carlo standard error.
        acceptance: Mean acceptance probability of each MetFlow step, ``(K,)``; empty for
            guides without Markov steps.
    """

    modes: int
    elbo: float
    mcse: float
    acceptance: Tensor


class Run(NamedTuple):
    """One trained guide: its kept draws and its training cost."""

    kept: Kept
    cpu: float
    wall: float
    steps: int


def mixture_centres(dim: int, seed: int) -> Tensor:
    """``NUM_MODES`` distinct random vertices of ``{-4, +4}^dim``, ``(NUM_MODES, dim)``."""
    if 2**dim < NUM_MODES:
        raise ValueError(f"dim={dim} has fewer than {NUM_MODES} vertices")
    generator = torch.Generator().manual_seed(seed)
    vertices: dict[tuple[int, ...], None] = {}  # an ordered set
    while len(vertices) < NUM_MODES:
        vertices[tuple(torch.randint(0, 2, (dim,), generator=generator).tolist())] = None
    return HALF_WIDTH * (2 * torch.tensor(list(vertices), dtype=torch.float32) - 1)


def mixture_model(centres: Tensor) -> None:
    """The target: ``z ~ sum_m N(centres[m], I) / 8``."""
    mixing = dist.Categorical(logits=torch.zeros(NUM_MODES))
    pyro.sample("z", RealMixture(mixing, dist.Normal(centres, 1.0).to_event(1)))


def _zeros(dim: int) -> Callable[..., Tensor]:
    return init_to_value(values={"z": torch.zeros(dim)})


def metflow(model: Callable[..., Any], dim: int, args: argparse.Namespace) -> AutoGuide:
    """The authors' setting: K = 7 Barker steps after a learned diagonal base at N(0, I), and
    a randomly initialised flow (their code's; the identity start finds fewer modes)."""
    return AutoMetFlow(
        model,
        K=args.K,
        acceptance="barker",
        flow_init=args.flow_init,
        init_scale=args.init_scale,
        init_loc_fn=_zeros(dim),
    )


def normal(model: Callable[..., Any], dim: int, args: argparse.Namespace) -> AutoGuide:
    """Plain mean-field VI from the same start."""
    return AutoNormal(model, init_loc_fn=_zeros(dim), init_scale=args.init_scale)


def iaf(model: Callable[..., Any], dim: int, args: argparse.Namespace) -> AutoGuide:
    """Pyro's IAF flow; its base is N(0, I) and its transforms start near the identity."""
    return AutoIAFNormal(model, num_transforms=2)


GUIDES: dict[str, Callable[[Callable[..., Any], int, argparse.Namespace], AutoGuide]] = {
    "AutoMetFlow": metflow,
    "AutoNormal": normal,
    "AutoIAFNormal": iaf,
}


def draw(model: Callable[..., Any], guide: AutoGuide) -> tuple[Tensor, Tensor, Tensor | None]:
    """One batch of draws: ``z`` ``(B, d)``, ``log p - log q`` ``(B,)``, MetFlow acceptance.

    MetFlow's draws come from ``sample_latents``, whose ``sample_stats`` hold the
    extended-space log weight; other guides run in a particle plate with the model replayed.
    """
    if isinstance(guide, AutoMetFlow):
        z = guide.sample_latents(BATCH)
        return z, guide.sample_stats["log_weight"], guide.sample_stats["acceptance_rate"]
    with torch.no_grad(), poutine.block(), pyro.plate("_draws", BATCH, dim=-1):
        guide_trace = poutine.trace(guide).get_trace()
        model_trace = poutine.trace(poutine.replay(model, guide_trace)).get_trace()
    log_weight = _log_prob_sum(model_trace) - _log_prob_sum(guide_trace)
    return guide_trace.nodes["z"]["value"], log_weight, None


def _log_prob_sum(trace: poutine.Trace) -> Tensor:
    """Sum over sample sites of their log densities, each of shape ``(BATCH,)`` here."""
    return sum(
        site["fn"].log_prob(site["value"])
        for site in trace.nodes.values()
        if site["type"] == "sample"
    )


def keep_draws(model: Callable[..., Any], guide: AutoGuide, centres: Tensor) -> Kept:
    """Draws ``KEEP_BATCHES x BATCH`` samples and counts the modes they capture."""
    batches = [draw(model, guide) for _ in range(KEEP_BATCHES)]
    z = torch.cat([b[0] for b in batches])
    log_weight = torch.cat([b[1] for b in batches]).double()
    acceptance = (
        torch.cat([b[2] for b in batches]).mean(0) if batches[0][2] is not None else torch.empty(0)
    )
    squared = (z.unsqueeze(-2) - centres).pow(2).sum(-1)  # (N, NUM_MODES)
    near = (squared < 4 * centres.shape[-1]).sum(0)
    modes = int((near > len(z) / 80).sum())
    mcse = (log_weight.std() / math.sqrt(len(log_weight))).item()
    return Kept(modes, log_weight.mean().item(), mcse, acceptance)


def train(dim: int, name: str, seed: int, args: argparse.Namespace) -> Run:
    """Trains guide ``name`` on the mixture of ``seed`` in ``dim`` dimensions."""
    centres = mixture_centres(dim, seed)
    model = functools.partial(mixture_model, centres)
    pyro.clear_param_store()
    guide = GUIDES[name](model, dim, args)
    loss = Trace_ELBO(num_particles=BATCH, vectorize_particles=True, max_plate_nesting=0)
    start = time.process_time()
    result = run_svi(
        model,
        guide,
        num_steps=args.steps,
        optim=pyro.optim.Adam({"lr": args.lr}),
        loss=loss,
        progress=False,
        seed=seed,
    )
    cpu = time.process_time() - start
    return Run(keep_draws(model, guide, centres), cpu, result.wall_time, args.steps)


def detail_row(dim: int, name: str, runs: list[Run]) -> list[str]:
    """Modes, ELBO, cost and acceptance of one guide over the seeds: a detail table's row."""
    modes = [r.kept.modes for r in runs]
    elbos = [r.kept.elbo for r in runs]
    cpu = statistics.mean(r.cpu for r in runs)
    wall = statistics.mean(r.wall for r in runs)
    steps_per_s = statistics.mean(r.steps / r.cpu for r in runs)
    if runs[0].kept.acceptance.numel():
        acceptance = torch.stack([r.kept.acceptance for r in runs]).mean(0)
        by_step = " ".join(f"{a:.2f}" for a in acceptance.tolist())
    else:
        by_step = "—"
    return [
        str(dim),
        name,
        " ".join(map(str, modes)),
        f"{statistics.mean(modes):.1f}",
        f"{statistics.mean(elbos):.2f} [{min(elbos):.2f}, {max(elbos):.2f}]",
        f"{max(r.kept.mcse for r in runs):.3f}",
        f"{cpu:.1f} ({wall:.1f})",
        f"{steps_per_s:.1f}",
        by_step,
    ]


def print_authors(runs: dict[tuple[int, str], list[Run]], args: argparse.Namespace) -> None:
    """Mean modes captured, ours beside the authors' numbers."""
    print("\nMean modes captured (of 8), ours beside the authors' logs:")
    ours = [f"ours: {name}" for name in args.guides]
    table = Table("d", *ours, *(f"authors: {name}" for name in REFERENCE))
    for dim in args.dims:
        cells = [f"{statistics.mean(r.kept.modes for r in runs[dim, n]):.1f}" for n in args.guides]
        table.row(dim, *cells, *(reference.get(dim, "—") for reference in REFERENCE.values()))


def main() -> None:
    args = parse_args()
    begin(
        args,
        f"{args.steps} steps of Adam lr {args.lr}, {BATCH} particles; MetFlow K={args.K}, "
        f"init_scale {args.init_scale}, flow_init {args.flow_init}; seeds {args.seeds}",
    )
    table = Table(
        "d",
        "guide",
        "modes per seed",
        "mean modes",
        "ELBO, mean [min, max] over seeds",
        "max MCSE",
        "CPU s per run (wall)",
        "steps/s (CPU)",
        "MetFlow acceptance by step",
    )
    runs: dict[tuple[int, str], list[Run]] = {}
    for dim in args.dims:
        for name in args.guides:
            runs[dim, name] = [train(dim, name, seed, args) for seed in args.seeds]
            table.row(*detail_row(dim, name, runs[dim, name]))
    print_authors(runs, args)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; ``--quick`` shrinks the run to a check of seconds."""
    options = Options(__doc__)
    options.add("--dims", full=[3, 5, 10, 20], quick=[3], type=int, nargs="+", help="d")
    # The authors trained 5000 steps; 1500 keeps the default run near 20 min on 2 cores.
    options.add("--steps", full=1500, quick=20, type=int, help="Adam steps per run")
    options.add("--seeds", full=[0, 1, 2], quick=[0], type=int, nargs="+", help="seeds")
    options.add("--guides", full=list(GUIDES), nargs="+", choices=list(GUIDES), help="guides")
    options.add("--lr", full=1e-3, type=float, help="Adam learning rate")
    options.add("--K", full=7, type=int, help="MetFlow steps")
    options.add("--init-scale", full=1.0, type=float, help="initial base sd")
    options.add(
        "--flow-init", full="random", choices=["identity", "random"], help="MetFlow's flow"
    )
    return options.parse(argv)


if __name__ == "__main__":
    main()
