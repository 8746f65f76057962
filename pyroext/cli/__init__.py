"""The ``pyroext`` command line: ``fit MODEL ...``, ``diagnose RUN_DIR`` and ``demo``."""

__all__ = ["main"]

import argparse
import inspect
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

import matplotlib
import pandas as pd
import torch.distributed as dist

from pyroext.cli.demo import run_demo
from pyroext.cli.registry import JOBS
from pyroext.data import BNN_DATASETS
from pyroext.diagnose import diagnose_run
from pyroext.infer.compiled import NotCompilable
from pyroext.infer.distributed import is_main_process, launched_by_torchrun
from pyroext.infer.runner import COMPILE_MIN_STEPS, SVIResult
from pyroext.models.bnn.job import BNN_GUIDES, BNN_PRIORS
from pyroext.models.gmm.job import GMM_GUIDES
from pyroext.models.vae.job import VAE_GUIDES

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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pyroext", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    fit = commands.add_parser("fit", help="fit a zoo model with SVI and write its outputs")
    fit.add_argument("model", choices=sorted(JOBS), help="zoo model")
    fit.add_argument(
        "--guide",
        default=None,
        choices=sorted({*GMM_GUIDES, *VAE_GUIDES, *BNN_GUIDES}),
        help="variational guide (default: the model's own; mvn for linear-regression and gmm)",
    )
    fit.add_argument("--task", default=None, choices=sorted(BNN_DATASETS), help="bnn task")
    fit.add_argument(
        "--hidden", type=_widths, default=None, help="hidden widths of the bnn, e.g. 400,400"
    )
    fit.add_argument("--prior", default=None, choices=sorted(BNN_PRIORS), help="bnn prior")
    fit.add_argument("--steps", type=_positive_int, default=None, help="SVI steps (>= 1)")
    fit.add_argument("--data", default=None, help="dataset (default: the model's own)")
    fit.add_argument("--k", type=_positive_int, default=None, help="mixture components (gmm)")
    fit.add_argument("--epochs", type=_positive_int, default=None, help="epochs (vae, bnn)")
    fit.add_argument("--data-dir", default=None, help="folder holding MNIST/raw (mnist)")
    fit.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    fit.add_argument(
        "--nproc-per-node",
        type=_positive_int,
        default=1,
        help="data-parallel processes on this machine, one per GPU with --device cuda (vae, bnn)",
    )
    fit.add_argument("--seed", type=int, default=0, help="random seed")
    fit.add_argument("--out", default=None, help="output folder (default runs/<model>-<guide>)")
    fit.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    fit.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run each SVI step as one compiled graph (default: for runs of at least "
        f"{COMPILE_MIN_STEPS} steps whose ELBO compiles)",
    )
    diagnose = commands.add_parser("diagnose", help="summary, k-hat, LOO and plots of a fit")
    diagnose.add_argument("run_dir", help="folder written by `pyroext fit --out`")
    diagnose.add_argument(
        "--out", default=None, help="output folder (default RUN_DIR/diagnostics)"
    )
    demo = commands.add_parser("demo", help="run the quick demo on embedded data")
    demo.add_argument("--out", default="runs/demo", help="output folder")
    demo.add_argument("--steps", type=_positive_int, default=6000, help="SVI steps per fit")
    demo.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not an integer >= 1")
    return value


def _widths(text: str) -> tuple[int, ...]:
    try:
        return tuple(_positive_int(width) for width in text.split(","))
    except (ValueError, argparse.ArgumentTypeError) as error:
        raise argparse.ArgumentTypeError(f"{text} is not a list of integers >= 1") from error


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line.

    Arguments:
        argv: Arguments without the program name; ``sys.argv[1:]`` by default.

    Returns:
        The process exit status.
    """
    parser = _parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    matplotlib.use("Agg")  # the command line only writes files; never open a window
    try:
        if args.command == "fit" and args.nproc_per_node > 1 and not launched_by_torchrun():
            return _torchrun(args, argv)
        return _run(args)
    except (ValueError, NotCompilable) as error:  # found before training: no traceback
        parser.exit(2, f"pyroext: error: {error}\n")
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _torchrun(args: argparse.Namespace, argv: list[str]) -> int:
    """Starts ``--nproc-per-node`` copies of this command under ``torchrun`` on this machine
    (PyTorch's own launcher: it sets each process's rank and stops all if one fails)."""
    _job_options(args)  # refuse bad options here rather than in every process
    _check_distributed(args.model)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={args.nproc_per_node}",
        "-m",
        "pyroext",
        *_without_nproc(argv),
    ]
    return subprocess.run(command, check=False).returncode


def _check_distributed(model: str) -> None:
    if "distributed" not in inspect.signature(JOBS[model]).parameters:
        raise ValueError(f"--nproc-per-node (torchrun) does not apply to model {model!r}")


def _without_nproc(argv: list[str]) -> list[str]:
    kept, skip = [], False
    for word in argv:
        if skip:
            skip = False
        elif word == "--nproc-per-node":
            skip = True
        elif not word.startswith("--nproc-per-node="):
            kept.append(word)
    return kept


def _run(args: argparse.Namespace) -> int:
    with pd.option_context("display.width", 120, "display.max_columns", 20):
        if args.command == "demo":
            tables = run_demo(args.out, steps=args.steps, progress=not args.no_progress)
            print("Bayesian linear regression on diabetes: SVI guides vs the exact posterior")
            print(tables.linear_regression.to_string(formatters=DEMO_FORMATS))
            print("\nGaussian mixture (K=2) on Old Faithful: SVI with enumeration vs EM")
            print(tables.gmm.to_string(formatters=DEMO_FORMATS))
            print("\nVAE on the embedded digits: test NLL (importance-sampled, k=1000) and ELBO")
            print(tables.vae.to_string(formatters=DEMO_FORMATS))
            print("\nBayes-by-backprop networks: test metrics of the posterior predictive")
            print(tables.bnn.to_string(formatters=DEMO_FORMATS, na_rep=""))
            print(f"outputs in {args.out}")
            return 0
        if args.command == "diagnose":
            return _diagnose(args.run_dir, args.out)
        out = args.out or f"runs/{args.model}" + (f"-{args.guide}" if args.guide else "")
        options = _job_options(args)
        if launched_by_torchrun():
            _check_distributed(args.model)
            options["distributed"] = True
        fit = JOBS[args.model](
            **options,
            device=args.device,
            seed=args.seed,
            out=out,
            progress=not args.no_progress,
            compile="auto" if args.compile is None else args.compile,
        )
        if is_main_process():
            print(fit.summary.to_string(float_format=lambda v: f"{v:.4f}"))
            print(f"{fit.describe()}; outputs in {out}")
            _print_compile_time(getattr(fit, "result", None))
    return 0


def _print_compile_time(result: SVIResult | None) -> None:
    if result is not None and result.compile_time > 0:
        print(
            f"compiled SVI step: {result.compile_time:.1f} s of {result.wall_time:.1f} s "
            "recording and compiling (inductor caches kernels for the next run)"
        )


def _job_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options given on the command line, refusing those the model's job does not take."""
    given = {
        "guide": args.guide,
        "steps": args.steps,
        "data": args.data,
        "k": args.k,
        "epochs": args.epochs,
        "data_dir": args.data_dir,
        "task": args.task,
        "hidden": args.hidden,
        "prior": args.prior,
    }
    accepted = inspect.signature(JOBS[args.model]).parameters
    for name, value in given.items():
        if value is not None and name not in accepted:
            option = name.replace("_", "-")
            raise ValueError(f"--{option} does not apply to model {args.model!r}")
    return {name: value for name, value in given.items() if value is not None}


def _diagnose(run_dir: str, out: str | None) -> int:
    report = diagnose_run(run_dir, out)
    print(report.summary.to_string())
    if report.khat is not None:
        print(f"Pareto k-hat of p/q: {report.khat.khat:.3f} ({report.khat.interpretation})")
    if report.skipped is not None:
        print(report.skipped)
    if report.unplotted:
        print(f"not plotted (too many panels; in summary.csv): {', '.join(report.unplotted)}")
    if report.loo is not None:
        print(f"elpd_loo {report.loo.elpd:.2f} (SE {report.loo.se:.2f}), p_loo {report.loo.p:.2f}")
    print("wrote", ", ".join(path.name for path in report.files))
    return 0


if __name__ == "__main__":
    sys.exit(main())
