"""The ``pyroext`` command line: ``fit <model> ...``, ``diagnose RUN_DIR`` and ``demo``."""

__all__ = ["main"]

import argparse
import subprocess
import sys
from collections.abc import Sequence

import matplotlib
import pandas as pd
import torch.distributed as dist

from pyroext.cli.demo import print_demo, run_demo
from pyroext.cli.diagnose import diagnose_run, print_report
from pyroext.cli.fit import add_fit_commands, fit_config, other_jobs_option, positive_int
from pyroext.cli.registry import JOBS
from pyroext.infer.compiled import NotCompilable
from pyroext.infer.distributed import is_main_process, launched_by_torchrun
from pyroext.infer.runner import SVIResult


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pyroext", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    add_fit_commands(commands)
    diagnose = commands.add_parser("diagnose", help="summary, k-hat, LOO and plots of a fit")
    diagnose.add_argument("run_dir", help="folder written by `pyroext fit <model> --out`")
    diagnose.add_argument(
        "--out", default=None, help="output folder (default RUN_DIR/diagnostics)"
    )
    demo = commands.add_parser("demo", help="run the quick demo on embedded data")
    demo.add_argument("--out", default="runs/demo", help="output folder")
    demo.add_argument(
        "--steps",
        type=positive_int,
        default=6000,
        help="SVI steps of each Gaussian-guide linear-regression fit; the MCMC guides, GMM, "
        "BNN and VAE fits get a fixed fraction of it (1/3, 1/3, 1/4, 1/8)",
    )
    demo.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line.

    Arguments:
        argv: Arguments without the program name; ``sys.argv[1:]`` by default.

    Returns:
        The process exit status.
    """
    parser = _parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parse(parser, argv)
    matplotlib.use("Agg")  # the command line only writes files; never open a window
    try:
        if args.command == "demo":
            print_demo(
                run_demo(args.out, steps=args.steps, progress=not args.no_progress), args.out
            )
            return 0
        if args.command == "diagnose":
            print_report(diagnose_run(args.run_dir, args.out))
            return 0
        if getattr(args, "nproc_per_node", 1) > 1 and not launched_by_torchrun():
            return _torchrun(args, argv)
        return _fit(args)
    except (ValueError, NotCompilable) as error:  # found before training: no traceback
        parser.exit(2, f"pyroext: error: {error}\n")
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Parses ``argv``, naming an option that belongs to another model as not applying."""
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        option = other_jobs_option(getattr(args, "model", ""), unknown[0])
        if option is not None:
            parser.error(f"{option} does not apply to model {args.model!r}")
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


def _fit(args: argparse.Namespace) -> int:
    config = fit_config(args, distributed=launched_by_torchrun())
    fit = JOBS[args.model].fit(config)
    if is_main_process():
        with pd.option_context("display.width", 120, "display.max_columns", 20):
            print(fit.summary.to_string(float_format=lambda v: f"{v:.4f}"))
        print(f"{fit.describe()}; outputs in {config.out}")
        _print_compile_time(fit.result)
    return 0


def _torchrun(args: argparse.Namespace, argv: list[str]) -> int:
    """Starts ``--nproc-per-node`` copies of this command under ``torchrun`` on this machine
    (PyTorch's own launcher: it sets each process's rank and stops all if one fails)."""
    fit_config(args, distributed=False)  # refuse bad options here rather than in every process
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


def _print_compile_time(result: SVIResult | None) -> None:
    if result is not None and result.compile_time > 0:
        print(
            f"compiled SVI step: {result.compile_time:.1f} s of {result.wall_time:.1f} s "
            "recording and compiling (inductor caches kernels for the next run)"
        )


if __name__ == "__main__":
    sys.exit(main())
