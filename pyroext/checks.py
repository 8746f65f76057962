"""Argument checks shared across pyroext, so that a bad option gets the same message wherever
it is given."""

__all__ = ["check_counts", "check_learning_rate"]

import math


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


def check_learning_rate(lr_init: float) -> None:
    """Checks that a learning rate is a finite number > 0 (a negative one trains uphill).

    Raises:
        ValueError: Naming ``lr_init`` and its value.
    """
    if not (math.isfinite(lr_init) and lr_init > 0):
        raise ValueError(f"lr_init={lr_init} must be a finite number > 0")
