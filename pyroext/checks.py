"""Argument checks shared across pyroext, so that a bad option gets the same message wherever
it is given: in Python (a ``ValueError`` naming the keyword) or on the command line (the
``parse_*`` types, whose ``argparse`` message names the flag and the valid range)."""

__all__ = [
    "SEED_RANGE",
    "check_checkpoint",
    "check_counts",
    "check_learning_rate",
    "check_one_of",
    "check_positive",
    "check_seed",
    "parse_count",
    "parse_positive",
    "parse_seed",
    "warn_batch_size",
    "warn_ignored",
]

import argparse
import math
import numbers
import os
import warnings
from pathlib import Path

SEED_RANGE = (0, 2**32 - 1)
"""Seeds every generator Pyro seeds accepts (NumPy's is the narrowest)."""


def check_counts(**counts: object) -> None:
    """Checks counts given by keyword: each must be an ``int`` (not a ``bool``) >= 1.

    ``None`` values are skipped: they stand for defaults chosen later.

    Raises:
        ValueError: Naming the first invalid count and its value.
    """
    for name, value in counts.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r} must be an integer >= 1")


def check_positive(**values: object) -> None:
    """Checks real numbers given by keyword: each must be finite and > 0.

    Raises:
        ValueError: Naming the first invalid value.
    """
    for name, value in values.items():
        real = isinstance(value, numbers.Real) and not isinstance(value, bool)
        if not (real and math.isfinite(value) and value > 0):  # type: ignore[arg-type]
            shown = value if real else repr(value)
            raise ValueError(f"{name}={shown} must be a finite number > 0")


def check_learning_rate(lr_init: float) -> None:
    """Checks that a learning rate is a finite number > 0 (a negative one trains uphill).

    Raises:
        ValueError: Naming ``lr_init`` and its value.
    """
    check_positive(lr_init=lr_init)


def check_seed(seed: object) -> None:
    """Checks that a seed is an integer in :data:`SEED_RANGE`.

    Raises:
        ValueError: Naming ``seed``, its value and the range.
    """
    low, high = SEED_RANGE
    if isinstance(seed, bool) or not isinstance(seed, int) or not low <= seed <= high:
        raise ValueError(f"seed={seed!r} must be an integer in [{low}, {high}]")


def check_one_of(what: str, **options: object) -> None:
    """Checks that at most one of options that set the same thing is given (not None), so
    that none is silently ignored.

    Arguments:
        what: What the options set, e.g. ``"the training length"``.
        options: The options by name.

    Raises:
        ValueError: Naming the options given together.
    """
    given = [f"{name}={value!r}" for name, value in options.items() if value is not None]
    if len(given) > 1:
        raise ValueError(f"{' and '.join(given)} both set {what}; give one of them")


def check_checkpoint(path: Path, *, resume: bool, overwrite: bool) -> None:
    """Checks, before training, a job's checkpoint path: that it can be written, that resuming
    has a checkpoint to continue, and that no earlier run's checkpoint would be replaced
    unless asked.

    Arguments:
        path: Where the job keeps its checkpoint.
        resume: Whether the run continues that checkpoint.
        overwrite: Whether the run may replace it.

    Raises:
        ValueError: For ``resume`` with ``overwrite``, a folder at ``path``, or an existing
            checkpoint with neither.
        FileNotFoundError: For ``resume`` without a checkpoint at ``path``.
        PermissionError: For ``resume`` with a checkpoint that cannot be read.
    """
    if resume and overwrite:
        raise ValueError(
            "resume=True (--resume) continues the checkpoint and overwrite=True (--overwrite) "
            "replaces it; give one of them"
        )
    if path.is_dir():
        raise ValueError(f"checkpoint {str(path)!r} is a folder; remove it or give another --out")
    if resume and not path.is_file():
        raise FileNotFoundError(
            f"resume=True (--resume): there is no checkpoint {str(path)!r} to continue; "
            "run without it to start afresh"
        )
    if resume and not os.access(path, os.R_OK):
        raise PermissionError(f"resume=True (--resume): checkpoint {str(path)!r} is not readable")
    if path.exists() and not (resume or overwrite):
        raise ValueError(
            f"checkpoint {str(path)!r} holds an earlier run: continue it with --resume "
            "(resume=True) or replace it with --overwrite (overwrite=True)"
        )


def warn_ignored(reason: str, **options: object) -> None:
    """Warns about each option given (not None) that the job ignores, and why.

    Arguments:
        reason: Why the options are ignored, e.g. ``"data='digits' is embedded"``.
        options: The options by name.
    """
    for name, value in options.items():
        if value is not None:
            warnings.warn(f"{name}={value!r} is ignored: {reason}", UserWarning, stacklevel=3)


def warn_batch_size(batch_size: int, num_data: int) -> None:
    """Warns when ``batch_size`` exceeds the training set, whose size then caps it."""
    if batch_size > num_data:
        warnings.warn(
            f"batch_size={batch_size} exceeds the {num_data} training points: each step "
            f"takes all {num_data}",
            UserWarning,
            stacklevel=3,
        )


def parse_count(text: str) -> int:
    """An ``argparse`` type: an integer >= 1."""
    return _parse_integer(text, 1, None)


def parse_seed(text: str) -> int:
    """An ``argparse`` type: a seed, an integer in :data:`SEED_RANGE`."""
    return _parse_integer(text, *SEED_RANGE)


def parse_positive(text: str) -> float:
    """An ``argparse`` type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number > 0")
    return value


def _parse_integer(text: str, low: int, high: int | None) -> int:
    try:
        value: int | None = int(text)
    except ValueError:
        value = None
    if value is None or value < low or (high is not None and value > high):
        valid = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer {valid}")
    return value
