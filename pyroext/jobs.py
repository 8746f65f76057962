"""The job contract: a frozen configuration per model family, checked when it is made, and the
fit function the ``pyroext fit <model>`` subcommand runs.

A family's ``job.py`` declares its configuration as a dataclass over :class:`RunConfig` whose
fields carry their help text (:func:`option`); the command line is built from those fields, so
``pyroext fit gmm --help`` lists the GMM's options only, and a new family is its folder plus
one line in :mod:`pyroext.cli.registry`.
"""

__all__ = ["Job", "RunConfig", "configure", "option"]

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

from pyroext.checks import check_checkpoint, check_seed, parse_seed
from pyroext.runs import RunDir


def option(default: Any, help: str, *, cli: bool = True, **argparse: Any) -> Any:
    """A configuration field with its command-line help.

    Arguments:
        default: The field's default.
        help: What the option does, as ``--help`` shows it.
        cli: Whether the command line offers the field.
        argparse: Extra ``add_argument`` keywords (``choices``, ``type``, ``metavar``).

    Returns:
        A dataclass field.
    """
    metadata = {"help": help, "cli": cli, "argparse": argparse}
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Options every job takes. Subclasses add the model's own and check them in
    ``__post_init__`` (a bad value raises ``ValueError`` naming it, before any training)."""

    device: str = option("cpu", "torch device, e.g. cpu or cuda")
    seed: int = option(0, "random seed", type=parse_seed)
    out: str | None = option(None, "output folder (default runs/<model>-<guide>)")
    progress: bool = option(True, "show a progress bar")
    compile: bool | str = option(
        "auto",
        "run each SVI step as one compiled graph (default: for long enough runs whose ELBO "
        "compiles)",
    )

    resume: bool = option(False, "continue from the run folder's checkpoint", cli=False)
    overwrite: bool = option(False, "replace the run folder's checkpoint", cli=False)

    def run_dir(self, checkpoints: bool = False) -> RunDir | None:
        """The output folder, made and checked writable now; None without ``out``.

        Every job calls it before training, so the run options shared by all jobs are checked
        here: the seed, and ``resume`` and ``overwrite`` against the folder's checkpoint.

        Arguments:
            checkpoints: Whether the job keeps a training checkpoint in the folder (see
                :func:`~pyroext.checks.check_checkpoint`); without one, ``resume`` and
                ``overwrite`` are refused.

        Raises:
            ValueError: For a bad seed, an unusable folder or checkpoint path, or ``resume``
                or ``overwrite`` where they do not apply.
            FileNotFoundError: For ``resume`` without a checkpoint to continue.
        """
        check_seed(self.seed)
        for name in ("resume", "overwrite"):
            if getattr(self, name) and not checkpoints:
                raise ValueError(f"{name}=True does not apply: this job keeps no checkpoint")
        if self.out is None:
            if self.resume:
                raise ValueError("resume=True needs out=<the run folder holding the checkpoint>")
            return None
        if checkpoints and str(self.out):  # before the folder is made: a refusal leaves none
            check_checkpoint(
                RunDir(self.out).checkpoint, resume=self.resume, overwrite=self.overwrite
            )
        return RunDir.create(self.out)


class Job(NamedTuple):
    """A fitting job as the registry lists it.

    Fields:
        name: The subcommand, e.g. ``gmm``.
        help: One line for ``pyroext fit --help``.
        config: The configuration dataclass.
        fit: Runs the job on a configuration and returns its fit (with ``summary``,
            ``describe()`` and ``result``).
        quick: Command-line options of a fit of a few seconds that still writes a full run
            folder (the run-folder contract test runs every job with them).
        distributed: Whether the job trains data-parallel under ``torchrun``.
        checkpoints: Whether the job keeps a training checkpoint in its run folder (the
            command line then offers ``--resume`` and ``--overwrite``).
    """

    name: str
    help: str
    config: type[RunConfig]
    fit: Callable[[Any], Any]
    quick: tuple[str, ...]
    distributed: bool = False
    checkpoints: bool = False


def configure[C: RunConfig](config: C | None, default: type[C], options: dict[str, Any]) -> C:
    """``config`` (or the default configuration) with ``options`` replaced.

    Raises:
        TypeError: For an option the configuration has no field for.
        ValueError: From the configuration's checks.
    """
    return dataclasses.replace(config if config is not None else default(), **options)
