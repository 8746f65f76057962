"""The quick demo behind ``make demo``: zoo models on embedded data, with exact references."""

__all__ = ["DemoTables", "print_demo", "run_demo"]

import time
from pathlib import Path
from typing import NamedTuple

import pandas as pd

from pyroext.models.bnn.job import fit_bnn
from pyroext.models.gmm.job import fit_gmm
from pyroext.models.linear_regression.job import fit_linear_regression
from pyroext.models.vae.job import fit_vae
from pyroext.runs import RunDir

DEMO_GUIDES = ("normal", "mvn", "dais", "metflow")
# The MCMC-in-guide guides cost ~10x a Gaussian guide per step; a third of the steps keeps
# the demo short while they still close part of the mean-field gap.
MCMC_GUIDES = ("dais", "metflow")
MCMC_STEP_FRACTION = 3
# MAP, the full mean-field family (explicit q(z_n)) and a full-rank Gaussian over the globals.
GMM_GUIDES = ("delta", "mean-field", "mvn")
GMM_STEP_FRACTION = 3
# The VAE's objectives on digits: the ELBO and the importance-weighted bound with k=5.
VAE_OBJECTIVES = (("trace", 1), ("iwae", 5))
VAE_STEP_FRACTION = 8
# Small Bayes-by-backprop networks: one hidden layer of 100 (digits) or 50 (diabetes) units.
BNN_RUNS = (("classification", "digits", (100,)), ("regression", "diabetes", (50,)))
BNN_STEP_FRACTION = 4


DEMO_FORMATS = {
    "seconds": "{:.1f}".format,
    "elbo": "{:.3f}".format,
    "log_evidence": "{:.3f}".format,
    "elbo_gap": "{:.4f}".format,
    "kl_to_exact": "{:.4f}".format,
    "kl_mean_field_optimum": "{:.4f}".format,
    "lppd": "{:.3f}".format,
    "em_log_likelihood": "{:.3f}".format,
    "test_nll": "{:.3f}".format,
    "test_elbo": "{:.2f}".format,
    "test_error": "{:.4f}".format,
    "test_ece": "{:.4f}".format,
    "test_entropy": "{:.3f}".format,
    "test_rmse": "{:.3f}".format,
    "test_coverage_90": "{:.3f}".format,
}


class DemoTables(NamedTuple):
    """The demo's comparison tables.

    Fields:
        linear_regression: Per guide, the ELBO gap to the exact evidence (an upper bound on
            KL(q || posterior)) and, for the Gaussian guides, the KL itself.
        gmm: Per guide, the Gaussian mixture's log pointwise predictive density on Old Faithful
            beside the EM optimum's log-likelihood, and the ELBO.
        vae: Per training objective, the digits VAE's test NLL (importance-sampled) and ELBO.
        bnn: Per dataset, a Bayes-by-backprop network's test metrics: error, NLL and
            calibration error on the digits; RMSE, NLL and 90% interval coverage on diabetes.
    """

    linear_regression: pd.DataFrame
    gmm: pd.DataFrame
    vae: pd.DataFrame
    bnn: pd.DataFrame


def run_demo(
    out: str | Path = "runs/demo", steps: int = 6000, progress: bool = True
) -> DemoTables:
    """Fits Bayesian linear regression on diabetes (Gaussian and MCMC-in-guide guides), a
    two-component Gaussian mixture on Old Faithful (MAP, mean-field and full-rank guides), a
    VAE on the embedded digits (ELBO and IWAE objectives) and Bayes-by-backprop networks on the
    digits and diabetes.

    Each fit's outputs go to ``out/<model>-<guide or objective>/``, replacing those of an
    earlier demo (checkpoints included); the tables go to ``out/linear_regression.csv``,
    ``out/gmm.csv``, ``out/vae.csv`` and ``out/bnn.csv``.

    Arguments:
        out: Output folder.
        steps: SVI steps per Gaussian regression guide; the MCMC-in-guide guides and the
            mixture's guides get a third, the VAE an eighth (750 steps, 50 epochs, by default),
            the networks a quarter.
        progress: Show progress bars.

    Returns:
        The :class:`DemoTables`.

    Raises:
        ValueError: If ``out`` is empty, a file or not writable, before any fit.
    """
    out = RunDir.create(out).path  # refuses an empty, file or unwritable out before any fit
    tables = DemoTables(
        _linear_regression(out, steps, progress),
        _gmm(out, steps, progress),
        _vae(out, steps, progress),
        _bnn(out, steps, progress),
    )
    for name, table in tables._asdict().items():
        table.to_csv(out / f"{name}.csv")
    return tables


def _linear_regression(out: Path, steps: int, progress: bool) -> pd.DataFrame:
    rows = []
    for guide in DEMO_GUIDES:
        start = time.perf_counter()
        budget = max(1, steps // MCMC_STEP_FRACTION) if guide in MCMC_GUIDES else steps
        fit = fit_linear_regression(
            guide=guide, steps=budget, out=out / f"linear-regression-{guide}", progress=progress
        )
        rows.append(
            {
                "guide": guide,
                "steps": fit.result.num_steps,
                "seconds": round(time.perf_counter() - start, 2),
                "elbo": fit.elbo,
                "log_evidence": fit.log_evidence,
                "elbo_gap": fit.log_evidence - fit.elbo,
                "kl_to_exact": fit.kl,
                "kl_mean_field_optimum": fit.kl_mean_field_optimum,
            }
        )
    return pd.DataFrame(rows).set_index("guide")


def _gmm(out: Path, steps: int, progress: bool) -> pd.DataFrame:
    rows = []
    for guide in GMM_GUIDES:
        start = time.perf_counter()
        budget = max(1, steps // GMM_STEP_FRACTION)
        fit = fit_gmm(guide=guide, steps=budget, out=out / f"gmm-{guide}", progress=progress)
        rows.append(
            {
                "guide": guide,
                "steps": fit.result.num_steps,
                "seconds": round(time.perf_counter() - start, 2),
                "lppd": fit.lppd,
                "em_log_likelihood": fit.em.log_likelihood,
                "elbo": fit.elbo,
            }
        )
    return pd.DataFrame(rows).set_index("guide")


def _vae(out: Path, steps: int, progress: bool) -> pd.DataFrame:
    rows = []
    for objective, particles in VAE_OBJECTIVES:
        start = time.perf_counter()
        fit = fit_vae(
            objective=objective,
            num_particles=particles,
            steps=max(1, steps // VAE_STEP_FRACTION),
            out=out / f"vae-{objective}",
            progress=progress,
            overwrite=True,
        )
        rows.append(
            {
                "objective": f"{objective} (k={particles})",
                "steps": fit.result.num_steps,
                "seconds": round(time.perf_counter() - start, 2),
                "test_nll": fit.test_nll,
                "test_elbo": fit.test_elbo,
            }
        )
    return pd.DataFrame(rows).set_index("objective")


def _bnn(out: Path, steps: int, progress: bool) -> pd.DataFrame:
    rows = []
    for task, data, hidden in BNN_RUNS:
        start = time.perf_counter()
        fit = fit_bnn(
            task=task,
            data=data,
            hidden=hidden,
            steps=max(1, steps // BNN_STEP_FRACTION),
            out=out / f"bnn-{data}",
            progress=progress,
            overwrite=True,
        )
        rows.append(
            {
                "data": data,
                "steps": fit.result.num_steps,
                "seconds": round(time.perf_counter() - start, 2),
                **{f"test_{name}": value for name, value in fit.metrics.items()},
            }
        )
    return pd.DataFrame(rows).set_index("data")


def print_demo(tables: DemoTables, out: str | Path) -> None:
    """Prints the demo's tables with their headings."""
    with pd.option_context("display.width", 120, "display.max_columns", 20):
        print("Bayesian linear regression on diabetes: SVI guides vs the exact posterior")
        print(tables.linear_regression.to_string(formatters=DEMO_FORMATS))
        print("\nGaussian mixture (K=2) on Old Faithful: SVI with enumeration vs EM")
        print(tables.gmm.to_string(formatters=DEMO_FORMATS))
        print("\nVAE on the embedded digits: test NLL (importance-sampled, k=1000) and ELBO")
        print(tables.vae.to_string(formatters=DEMO_FORMATS))
        print("\nBayes-by-backprop networks: test metrics of the posterior predictive")
        print(tables.bnn.to_string(formatters=DEMO_FORMATS, na_rep=""))
    print(f"outputs in {out}")
