"""Training state as tensors and plain containers, which ``torch.load(weights_only=True)``
reads without allow-listing anything.

Checkpoints hold two kinds of object that are neither: NumPy arrays (the loss history and
NumPy's generator state) and distribution constraints (the param store's). :func:`to_plain`
turns each into a tagged dict of plain values and :func:`from_plain` turns them back; a
constraint is rebuilt only as a subclass of :class:`torch.distributions.constraints.Constraint`
that is already defined, by setting its attributes, so that no code a file names runs.
"""

__all__ = ["from_plain", "to_plain"]

from collections import OrderedDict
from typing import Any

import numpy as np
import torch
from torch.distributions.constraints import Constraint

TAG = "__pyroext_type__"
_ATOMS = (torch.Tensor, str, bytes, int, float, complex, bool, type(None), torch.dtype)
_SEQUENCES = (list, tuple, torch.Size)


def to_plain(obj: Any, where: str) -> Any:
    """Returns ``obj`` with every NumPy array and constraint replaced by plain values.

    Containers are copied only where something inside them changes, so state dicts keep
    their type and ``_metadata``.

    Arguments:
        obj: Tensors, NumPy arrays and scalars, constraints, numbers, strings, and dicts,
            lists and tuples of them.
        where: How to name ``obj`` in an error message (``"state"``).

    Returns:
        The plain counterpart of ``obj``.

    Raises:
        TypeError: For any other object, naming where it is.
    """
    if isinstance(obj, _ATOMS):
        return obj
    if isinstance(obj, np.ndarray):
        return _array_to_plain(obj, where)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Constraint):
        name = f"{type(obj).__module__}.{type(obj).__qualname__}"
        attributes = to_plain(vars(obj), f"{where}.{name}")
        return {TAG: "constraint", "class": name, "attributes": attributes}
    return _map(obj, where, to_plain)


def from_plain(obj: Any, where: str) -> Any:
    """Undoes :func:`to_plain`.

    Arguments:
        obj: What :func:`torch.load` read.
        where: The file, for error messages.

    Returns:
        ``obj`` with NumPy arrays and constraints rebuilt.

    Raises:
        ValueError: For a tagged value that is damaged or names an unknown constraint.
    """
    if isinstance(obj, dict) and TAG in obj:
        if obj[TAG] == "ndarray":
            return _array_from_plain(obj, where)
        if obj[TAG] == "constraint":
            return _constraint_from_plain(obj, where)
        raise ValueError(f"{where} holds a value of unknown kind {obj[TAG]!r}")
    if isinstance(obj, _ATOMS):
        return obj
    return _map(obj, where, from_plain)


def _map(obj: Any, where: str, convert: Any) -> Any:
    """Applies ``convert`` inside a container, rebuilding it only if an item changed."""
    if isinstance(obj, dict):
        items = {key: convert(value, f"{where}[{key!r}]") for key, value in obj.items()}
        if all(items[key] is value for key, value in obj.items()):
            return obj
        rebuilt = OrderedDict(items) if isinstance(obj, OrderedDict) else items
        if hasattr(obj, "_metadata"):  # module state dicts keep their versions
            rebuilt._metadata = obj._metadata  # type: ignore[attr-defined]
        return rebuilt
    if type(obj) in _SEQUENCES:
        items = [convert(value, f"{where}[{i}]") for i, value in enumerate(obj)]
        if all(new is old for new, old in zip(items, obj, strict=True)):
            return obj
        return items if isinstance(obj, list) else tuple(items)
    raise TypeError(
        f"{where} is a {type(obj).__module__}.{type(obj).__qualname__}, which a checkpoint "
        "cannot hold: it holds tensors, NumPy arrays, constraints, numbers, strings, and "
        "dicts, lists and tuples of them"
    )


def _array_to_plain(array: np.ndarray, where: str) -> dict[str, Any]:
    if array.dtype.hasobject or array.dtype.fields is not None:
        raise TypeError(f"{where} is a NumPy array of {array.dtype}; a checkpoint cannot hold it")
    # Raw bytes and the dtype string keep every dtype and byte order exactly.
    data = np.frombuffer(np.ascontiguousarray(array).tobytes(), dtype=np.uint8).copy()
    return {
        TAG: "ndarray",
        "dtype": array.dtype.str,
        "shape": list(array.shape),
        "data": torch.from_numpy(data),
    }


def _array_from_plain(plain: dict[str, Any], where: str) -> np.ndarray:
    try:
        dtype, shape, data = np.dtype(plain["dtype"]), tuple(plain["shape"]), plain["data"]
        if dtype.hasobject or not isinstance(data, torch.Tensor) or data.dtype != torch.uint8:
            raise TypeError("not an array of plain numbers")
        return np.frombuffer(data.numpy().tobytes(), dtype=dtype).reshape(shape).copy()
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{where} holds a damaged NumPy array: {error}") from None


def _constraint_from_plain(plain: dict[str, Any], where: str) -> Constraint:
    name = plain.get("class")
    cls = _constraint_classes().get(name)
    if cls is None:
        raise ValueError(
            f"{where} holds a constraint {name!r} that no imported module defines; import the "
            "module that defines it before loading"
        )
    attributes = from_plain(plain.get("attributes", {}), where)
    if not isinstance(attributes, dict) or not all(isinstance(k, str) for k in attributes):
        raise ValueError(f"{where} holds a damaged constraint {name!r}")
    constraint = cls.__new__(cls)
    constraint.__dict__.update(attributes)
    return constraint


def _constraint_classes() -> dict[str, type[Constraint]]:
    """Every subclass of ``Constraint`` defined so far, by module and qualified name."""
    found: dict[str, type[Constraint]] = {}
    pending: list[type[Constraint]] = [Constraint]
    while pending:
        cls = pending.pop()
        found[f"{cls.__module__}.{cls.__qualname__}"] = cls
        pending.extend(cls.__subclasses__())
    return found
