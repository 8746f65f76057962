"""Do AutoMetFlow and AutoDAIS with their defaults beat their own K = 0 base when trained as a
new user would?

Each guide is trained exactly as Pyro's tutorials do it: ``pyro.infer.SVI`` with a one-particle
``Trace_ELBO()``, ``pyro.optim.Adam({"lr": 1e-2})`` and ``--steps`` calls of ``svi.step``, with
the guide's default options. The final ELBO is then estimated from ``--draws`` fresh draws with
its Monte Carlo standard error, on targets whose log evidence ``log Z`` is known:

* ``linreg``: Bayesian linear regression on the standardised diabetes data (442 x 10, strongly
  correlated posterior), known noise sd 0.7, prior precision 1, ``log Z`` in closed form;
* ``bimodal``: an equal mixture of ``N(-m, I)`` and ``N(m, I)`` in 2-D, ``m = (2, 2)``, a
  normalised density (``log Z = 0``), so a one-mode Gaussian has a gap of about ``log 2``;
* ``funnel``: Neal's funnel in 10 dimensions (``log Z = 0``).

Every row gives the gap ``log Z - ELBO`` per guide and seed, and whether each pyroext guide's ELBO
is at least its base's (the K = 0 guide: AutoDiagonalNormal, or the same flow base alone for
``base_flow``; same seed) minus two standard errors of the difference. ``--guides`` with the
``base_flow`` entries (``FLOW_GUIDES``) asks whether "a flow + K Markov steps" beats the flow
alone, with Pyro's AutoIAFNormal beside them.

    python benchmarks/mcmc_defaults.py [--steps 1500] [--seeds 0 1 2] [--quick]
    python benchmarks/mcmc_defaults.py --guides AutoIAFNormal "${FLOW_GUIDES[@]}"
"""

import argparse
import functools
import math
from collections.abc import Callable
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from _harness import Options, Table, begin
from mcmc_guides import Problem, estimate_elbo, funnel_problem, linreg_problem
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoDiagonalNormal, AutoGuide, AutoIAFNormal, AutoNormal
from torch.distributions import constraints

from pyroext.guides import AutoDAIS, AutoMetFlow

BASE = "AutoDiagonalNormal"
MODE = 2.0


class _RealVectorMixture(dist.MixtureSameFamily):
    """A Gaussian mixture on R^2: torch registers no bijection for the mixture's own support."""

    support = constraints.real_vector


def bimodal_model() -> None:
    """``z ~ (N(-m, I) + N(m, I)) / 2`` in 2-D, ``m = (2, 2)``."""
    locs = torch.tensor([[-MODE, -MODE], [MODE, MODE]])
    components = dist.Normal(locs, 1.0).to_event(1)
    pyro.sample("z", _RealVectorMixture(dist.Categorical(torch.ones(2)), components))


PROBLEMS: dict[str, Callable[[], Problem]] = {
    "linreg": linreg_problem,
    "bimodal": lambda: Problem(bimodal_model, (), 0.0, None),
    "funnel": funnel_problem,
}
GUIDES: dict[str, Callable[[Callable[..., Any]], AutoGuide]] = {
    "AutoNormal": AutoNormal,
    BASE: AutoDiagonalNormal,
    "AutoMetFlow()": AutoMetFlow,
    "AutoMetFlow(K=4)": functools.partial(AutoMetFlow, K=4),
    "AutoMetFlow(reverse_model='fixed', base_training='joint')": functools.partial(
        AutoMetFlow, reverse_model="fixed", base_training="joint"
    ),
    "AutoMetFlow(reverse_model='conditional')": functools.partial(
        AutoMetFlow, reverse_model="conditional"
    ),
    "AutoDAIS()": AutoDAIS,
    "AutoIAFNormal": AutoIAFNormal,
}
for flow in ("iaf", "spline"):
    GUIDES[f"AutoMetFlow(K=0, base_flow='{flow}')"] = functools.partial(
        AutoMetFlow, K=0, base_flow=flow
    )
    for guide_class in (AutoMetFlow, AutoDAIS):
        name = f"{guide_class.__name__}(base_flow='{flow}')"
        GUIDES[name] = functools.partial(guide_class, base_flow=flow)
    own = f"AutoDAIS(base_flow='{flow}', base_training='own')"
    GUIDES[own] = functools.partial(AutoDAIS, base_flow=flow, base_training="own")
DEFAULT_GUIDES = ["AutoNormal", BASE, "AutoMetFlow()", "AutoMetFlow(K=4)", "AutoDAIS()"]
FLOW_GUIDES = [name for name in GUIDES if "base_flow" in name]


def base_of(name: str) -> str | None:
    """The K = 0 guide a pyroext guide must not lose to; None for the baselines themselves."""
    if not name.startswith(("AutoMetFlow", "AutoDAIS")) or "K=0" in name:
        return None
    for flow in ("iaf", "spline"):
        if f"base_flow='{flow}'" in name:
            return f"AutoMetFlow(K=0, base_flow='{flow}')"
    return BASE


def train_new_user_way(problem: Problem, name: str, seed: int, steps: int) -> AutoGuide:
    """``steps`` steps of Pyro's SVI with one-particle Trace_ELBO and Adam(1e-2)."""
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    guide = GUIDES[name](problem.model)
    svi = SVI(problem.model, guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
    for _ in range(steps):
        svi.step(*problem.args)
    return guide


def problem_rows(name: str, args: argparse.Namespace, table: Table) -> None:
    """Trains every guide on every seed and prints one row per seed."""
    problem = PROBLEMS[name]()
    for seed in args.seeds:
        results = {}
        for guide_name in args.guides:
            guide = train_new_user_way(problem, guide_name, seed, args.steps)
            pyro.set_rng_seed(10_000 + seed)
            results[guide_name] = estimate_elbo(problem, guide, args.draws)
        cells = [f"{problem.log_evidence - elbo:.3f} ± {se:.3f}" for elbo, se in results.values()]
        verdicts = [_verdict(results, guide_name) for guide_name in verdict_guides(args.guides)]
        table.row(name, seed, *cells, *verdicts)


def verdict_guides(names: list[str]) -> list[str]:
    return [name for name in names if base_of(name) is not None]


def _verdict(results: dict[str, tuple[float, float]], name: str) -> str:
    elbo, se = results[name]
    base_elbo, base_se = results.get(base_of(name), (math.nan, math.nan))
    return "yes" if elbo >= base_elbo - 2 * math.hypot(se, base_se) else "**no**"


def main() -> None:
    args = parse_args()
    begin(
        args,
        f"SVI, Trace_ELBO() (one particle), Adam lr 1e-2, {args.steps} steps, guide defaults",
        f"final ELBO from {args.draws} draws; cells: log Z - ELBO ± MCSE (lower is better)",
    )
    table = Table(
        "target",
        "seed",
        *(f"{name} gap" for name in args.guides),
        *(f"{name} >= base - 2 SE" for name in verdict_guides(args.guides)),
    )
    for name in args.problems:
        problem_rows(name, args, table)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    options = Options(__doc__)
    options.add("--steps", full=1500, quick=200, type=int, help="SVI steps")
    options.add("--seeds", full=[0, 1, 2], quick=[0], type=int, nargs="+", help="seeds")
    options.add("--draws", full=2000, quick=500, type=int, help="draws of the final ELBO")
    options.add(
        "--problems", full=list(PROBLEMS), nargs="+", choices=list(PROBLEMS), help="targets"
    )
    options.add("--guides", full=DEFAULT_GUIDES, nargs="+", choices=list(GUIDES), help="guides")
    return options.parse(argv)


if __name__ == "__main__":
    main()
