"""``pyroext fit <model>``: one subcommand per registered job, its options read off the job's
configuration dataclass, so that ``--help`` lists only what applies to that model."""

__all__ = [
    "add_fit_commands",
    "add_threads_option",
    "default_threads",
    "fit_config",
    "other_jobs_option",
]

import argparse
import dataclasses
import os
import types
import typing
from typing import Any

from pyroext.checks import parse_count, parse_positive
from pyroext.cli.registry import JOBS
from pyroext.jobs import Job, RunConfig

RESUME_HELP = (
    "continue from the run folder's checkpoint.pt (--steps and --epochs count the steps "
    "taken before, too)"
)
OVERWRITE_HELP = "start afresh, replacing the checkpoint.pt of an earlier run in the run folder"
THREADS_HELP = (
    "torch's CPU threads (default: half the cores, at least one, or OMP_NUM_THREADS if set: "
    "torch's own default oversubscribes a shared machine, 9x slower on 2 cores)"
)


def add_threads_option(parser: argparse.ArgumentParser) -> None:
    """Adds ``--threads`` to a subcommand that trains."""
    parser.add_argument("--threads", type=parse_count, default=None, help=THREADS_HELP)


def default_threads() -> int:
    """Half the cores, at least one; ``OMP_NUM_THREADS`` when the user set it."""
    given = os.environ.get("OMP_NUM_THREADS", "")
    if given.isdigit() and int(given) > 0:
        return int(given)
    return max(1, (os.cpu_count() or 2) // 2)


def add_fit_commands(commands: Any) -> None:
    """Adds ``fit`` with one subcommand per job to ``commands`` (an ``add_subparsers`` result)."""
    fit = commands.add_parser("fit", help="fit a zoo model with SVI and write a run folder")
    models = fit.add_subparsers(dest="model", required=True, metavar="MODEL")
    for job in JOBS.values():
        parser = models.add_parser(job.name, help=job.help, description=job.help)
        for field in _options(job.config):
            parser.add_argument(*_flag(field), **_argument(field))
        if job.distributed:
            parser.add_argument(
                "--nproc-per-node",
                type=parse_count,
                default=1,
                help="data-parallel processes on this machine, one per GPU with --device cuda",
            )
        add_threads_option(parser)
        if job.checkpoints:
            resume = parser.add_mutually_exclusive_group()
            for flag, help in (("--resume", RESUME_HELP), ("--overwrite", OVERWRITE_HELP)):
                resume.add_argument(
                    flag, action="store_true", default=argparse.SUPPRESS, help=help
                )


def fit_config(args: argparse.Namespace, distributed: bool) -> RunConfig:
    """The configuration of ``args.model``'s job from the parsed options.

    Arguments:
        args: The parsed command line; options not given keep the configuration's defaults.
        distributed: Whether this process is one of ``torchrun``'s.
    """
    job = JOBS[args.model]
    given = {
        field.name: getattr(args, field.name)
        for field in dataclasses.fields(job.config)
        if hasattr(args, field.name)
    }
    if distributed:
        given["distributed"] = True
    config = job.config(**given)
    if config.out is None:
        config = dataclasses.replace(config, out=f"runs/{job.name}-{config.guide}")
    return config


def other_jobs_option(model: str, word: str) -> str | None:
    """The option ``word`` names if another job takes it (so the message can say that it does
    not apply to ``model``), else None."""
    flag = word.split("=")[0]
    if flag == "--nproc-per-node":
        return "--nproc-per-node (torchrun)"
    for job in JOBS.values():
        if job.name != model and flag in _flags(job):
            return flag
    return None


def _flags(job: Job) -> set[str]:
    """The options ``job``'s subcommand takes."""
    flags = {_flag(field)[0] for field in _options(job.config)} | {"--threads"}
    return flags | ({"--resume", "--overwrite"} if job.checkpoints else set())


def _flag(field: dataclasses.Field) -> tuple[str, ...]:
    return ("--" + field.name.replace("_", "-"),)


def _argument(field: dataclasses.Field) -> dict[str, Any]:
    """``add_argument`` keywords: a flag pair for booleans, the type read off the annotation,
    and no default, so that an option not given keeps the configuration's own."""
    extra = dict(field.metadata["argparse"])
    help = field.metadata["help"]
    if field.default is not None and "default" not in help:
        help += f" (default {field.default})"
    keywords: dict[str, Any] = {"help": help.replace("%", "%%"), "default": argparse.SUPPRESS}
    kinds = _kinds(field.type)
    if bool in kinds:
        keywords["action"] = argparse.BooleanOptionalAction
    elif "type" not in extra:  # a field with another range names its type in option()
        keywords["type"] = (
            parse_count if int in kinds else (parse_positive if float in kinds else str)
        )
    return {**keywords, **extra}


def _options(config: type[RunConfig]) -> list[dataclasses.Field]:
    """The fields the command line offers, the model's own before those its bases share."""
    bases = [base for base in config.__mro__ if dataclasses.is_dataclass(base)]
    declared = [{field.name for field in dataclasses.fields(base)} for base in bases]
    offered = [field for field in dataclasses.fields(config) if field.metadata.get("cli")]
    return sorted(offered, key=lambda field: sum(field.name in names for names in declared))


def _kinds(annotation: Any) -> set[Any]:
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return set(typing.get_args(annotation))
    return {annotation}
