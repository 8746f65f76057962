"""The ``pyroext`` command line: ``fit <model> ...``, ``diagnose RUN_DIR`` and ``demo``.

An anticipated failure (a bad option, a missing or unreadable file, a non-finite loss) ends
the command with one line, ``pyroext: error: ...``, and exit status 2; ``--debug`` shows its
traceback instead.
"""

__all__ = ["ANTICIPATED", "main"]

import argparse
import subprocess
import sys
import warnings
from collections.abc import Sequence
from typing import Any, NoReturn

import matplotlib
import pandas as pd
import torch
import torch.distributed as dist

from pyroext.checks import parse_count
from pyroext.cli.demo import print_demo, run_demo
from pyroext.cli.diagnose import diagnose_run, print_report
from pyroext.cli.fit import (
    add_fit_commands,
    add_threads_option,
    default_threads,
    fit_config,
    other_jobs_option,
)
from pyroext.cli.registry import JOBS
from pyroext.infer import NonFiniteLossError
from pyroext.infer.compiled import NotCompilable
from pyroext.infer.distributed import is_main_process, launched_by_torchrun
from pyroext.infer.result import SVIResult

ANTICIPATED: tuple[type[BaseException], ...] = (
    ValueError,
    OSError,
    NotCompilable,
    NonFiniteLossError,
)
"""What the command line reports in one line: the project raises ``ValueError`` (a bad option
or file content, naming it: a corrupt, truncated or foreign checkpoint too) and ``OSError`` (a
missing or unreadable file, naming it). Anything else (a ``RuntimeError`` or ``KeyError`` from
inside torch, say) is as likely a bug as a bad input, and keeps its traceback so that it can be
reported."""
DEBUG_HELP = "show the traceback of an error instead of its one-line message"
MAX_MESSAGE = 500


class _Parser(argparse.ArgumentParser):
    """A parser whose errors are one line naming the subcommand's ``--help``, and which takes
    ``--debug`` wherever options go (subcommands are built with the same class)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # SUPPRESS: a subcommand's default would otherwise undo a --debug given before it.
        self.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP
        )

    def error(self, message: str) -> NoReturn:
        """Exits with status 2 and one line: ``message`` and where the valid values are."""
        self.exit(2, f"pyroext: error: {message}; see `{self.prog} --help`\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pyroext", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    add_fit_commands(commands)
    diagnose = commands.add_parser("diagnose", help="summary, k-hat, LOO and plots of a fit")
    diagnose.add_argument("run_dir", help="folder written by `pyroext fit <model> --out`")
    diagnose.add_argument(
        "--out", default=None, help="output folder (default RUN_DIR/diagnostics)"
    )
    diagnose.add_argument(
        "--var-names",
        nargs="+",
        default=None,
        metavar="NAME",
        help="posterior variables to summarise and plot (default: the sampled ones and "
        "deterministic ones of at most 100 values)",
    )
    demo = commands.add_parser("demo", help="run the quick demo on embedded data")
    demo.add_argument("--out", default="runs/demo", help="output folder")
    demo.add_argument(
        "--steps",
        type=parse_count,
        default=6000,
        help="SVI steps of each Gaussian-guide linear-regression fit; the MCMC guides, GMM, "
        "BNN and VAE fits get a fixed fraction of it (1/3, 1/3, 1/4, 1/8)",
    )
    demo.add_argument("--no-progress", action="store_true", help="hide progress bars")
    add_threads_option(demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line.

    Arguments:
        argv: Arguments without the program name; ``sys.argv[1:]`` by default.

    Returns:
        The process exit status.

    Raises:
        SystemExit: With status 2 after one line on stderr for a bad option or an
            :data:`ANTICIPATED` error (with ``--debug``, that error instead), or 130 when
            interrupted.
    """
    parser = _parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parse(parser, argv)
    debug = getattr(args, "debug", False)
    matplotlib.use("Agg")  # the command line only writes files; never open a window
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return _run(args, argv)
    except KeyboardInterrupt:
        if debug:
            raise
        parser.exit(130, "pyroext: interrupted; a fit with a checkpoint continues with --resume\n")
    except ANTICIPATED as error:
        if debug:
            raise
        parser.exit(2, f"pyroext: error: {_one_line(error)}\n")
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _run(args: argparse.Namespace, argv: list[str]) -> int:
    if args.command != "diagnose":
        torch.set_num_threads(args.threads or default_threads())
    if args.command == "demo":
        print_demo(run_demo(args.out, steps=args.steps, progress=not args.no_progress), args.out)
        return 0
    if args.command == "diagnose":
        print_report(diagnose_run(args.run_dir, args.out, args.var_names))
        return 0
    if getattr(args, "nproc_per_node", 1) > 1 and not launched_by_torchrun():
        return _torchrun(args, argv)
    return _fit(args)


def _one_line(error: BaseException) -> str:
    """The error's message and notes on one line, cut to :data:`MAX_MESSAGE` characters."""
    text = " ".join(str(error).split()) or type(error).__name__
    if len(text) > MAX_MESSAGE:
        text = f"{text[:MAX_MESSAGE]} ... (--debug shows all of it)"
    notes = " ".join(" ".join(getattr(error, "__notes__", ())).split())
    return f"{text} ({notes})" if notes else text


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    """Shows a warning as one line, as errors are (the ``warnings.showwarning`` signature)."""
    kind = "" if category is UserWarning else f" [{category.__name__}]"
    text = " ".join(str(message).split())
    print(f"pyroext: warning: {text}{kind}", file=file or sys.stderr)


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Parses ``argv``, naming an option that belongs to another model as not applying."""
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        model = getattr(args, "model", "")
        option = other_jobs_option(model, unknown[0])
        message = (
            f"unrecognized arguments: {' '.join(unknown)}"
            if option is None
            else f"{option} does not apply to model {model!r}"
        )
        command = " ".join(word for word in ("pyroext", args.command, model) if word)
        parser.exit(2, f"pyroext: error: {message}; see `{command} --help`\n")
    return args


def _fit(args: argparse.Namespace) -> int:
    config = fit_config(args, distributed=launched_by_torchrun())
    fit = JOBS[args.model].fit(config)
    if is_main_process():
        with pd.option_context("display.width", 120, "display.max_columns", 20):
            print(fit.summary.to_string(float_format=lambda v: f"{v:.4f}"))
        print(f"{fit.describe()}; outputs in {config.out}")
        _print_compile_time(fit.result)
        if fit.result is not None and fit.result.health is not None:
            print(fit.result.health.describe())
    return 0


def _torchrun(args: argparse.Namespace, argv: list[str]) -> int:
    """Starts ``--nproc-per-node`` copies of this command under ``torchrun`` on this machine
    (PyTorch's own launcher: it sets each process's rank and stops all if one fails)."""
    # Bad options and run folders are refused here rather than in every process.
    fit_config(args, distributed=False).run_dir(checkpoints=JOBS[args.model].checkpoints)
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
