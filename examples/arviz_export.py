"""Eight schools (non-centred) fitted with NUTS, with SVI and AutoNormal, and with SVI and
AutoDAIS (an MCMC-in-guide guide), exported to ArviZ 1.x and diagnosed.

Writes ``posterior.nc`` and the diagnostics (summary, k-hat for SVI, LOO and its verdict, the
guide health of AutoDAIS, figures) of each fit under ``--out``, and prints the summaries and LOO
estimates side by side.

    python examples/arviz_export.py --out runs/eight_schools
"""

import argparse
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import MCMC, NUTS, Trace_ELBO
from pyro.infer.autoguide import AutoGuide, AutoNormal

from pyroext.arviz import collect_sample_stats, from_pyro, from_pyro_svi
from pyroext.cli.diagnose import diagnose_run, loo_verdict
from pyroext.guides import AutoDAIS
from pyroext.infer import run_svi
from pyroext.runs import POSTERIOR_FILE, save_datatree

Y = torch.tensor([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
SIGMA = torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])
SCHOOLS = [
    "Choate",
    "Deerfield",
    "Phillips Andover",
    "Phillips Exeter",
    "Hotchkiss",
    "Lawrenceville",
    "St. Paul's",
    "Mt. Hermon",
]


def eight_schools(sigma: torch.Tensor, y: torch.Tensor | None = None) -> None:
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("school", len(sigma)):
        eta = pyro.sample("eta", dist.Normal(0.0, 1.0))
        theta = pyro.deterministic("theta", mu + tau * eta)
        pyro.sample("obs", dist.Normal(theta, sigma), obs=y)


def fit_nuts(args: argparse.Namespace) -> object:
    hook = collect_sample_stats()
    mcmc = MCMC(
        NUTS(eight_schools),
        args.num_samples,
        args.num_warmup,
        num_chains=2,
        hook_fn=hook,
        mp_context=None,
        disable_progbar=True,
    )
    mcmc.run(SIGMA, Y)
    return from_pyro(mcmc, sample_stats=hook, coords={"school": SCHOOLS})


def fit_svi(args: argparse.Namespace, guide: AutoGuide) -> object:
    run_svi(
        eight_schools,
        guide,
        SIGMA,
        Y,
        num_steps=args.steps,
        loss=Trace_ELBO(num_particles=4, vectorize_particles=True),
        progress=False,
        optim=pyro.optim.Adam({"lr": 0.02}),
        seed=args.seed,
    )
    return from_pyro_svi(
        eight_schools,
        guide,
        SIGMA,
        Y,
        num_samples=args.num_samples * 2,
        coords={"school": SCHOOLS},
    )


FITS = {
    "nuts": fit_nuts,
    "svi": lambda args: fit_svi(args, AutoNormal(eight_schools)),
    "dais": lambda args: fit_svi(args, AutoDAIS(eight_schools, K=4)),
}


def main(args: argparse.Namespace) -> None:
    pyro.set_rng_seed(args.seed)
    for name, fit in FITS.items():
        run_dir = Path(args.out) / name
        save_datatree(fit(args), run_dir / POSTERIOR_FILE)
        report = diagnose_run(run_dir)
        print(f"== {name}: posterior summary")
        print(report.summary.loc[["mu", "tau"]].to_string())
        if report.khat is not None:
            print(f"Pareto k-hat of p/q: {report.khat.khat:.2f} ({report.khat.interpretation})")
        if report.health is not None:
            print(report.health.describe())
        print(f"elpd_loo {report.loo.elpd:.2f} (SE {report.loo.se:.2f})")
        print(loo_verdict(report.loo))
        print(f"figures in {run_dir / 'diagnostics'}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/eight_schools")
    parser.add_argument("--num-samples", type=int, default=500, help="NUTS draws per chain")
    parser.add_argument("--num-warmup", type=int, default=500)
    parser.add_argument("--steps", type=int, default=3000, help="SVI steps")
    parser.add_argument("--seed", type=int, default=0)
    main(parser.parse_args())
