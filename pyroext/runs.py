"""The run folder: what a fit writes, under which names, and how ``diagnose`` finds it.

Every ``pyroext fit`` writes one folder: ``losses.csv`` (the loss per step), ``summary.csv``
(the fit's table), ``loss.png``, ``posterior.nc`` (the ArviZ DataTree that ``pyroext diagnose``
reads), the training checkpoint where the job keeps one, the job's own figures and
``manifest.json``, which names the job, its configuration and the files. Each file is written
atomically, so a crash never leaves a half-written one under its final name.
"""

__all__ = [
    "CHECKPOINT_FILE",
    "MANIFEST_FILE",
    "POSTERIOR_FILE",
    "RunDir",
    "read_datatree",
    "save_datatree",
]

import dataclasses
import datetime
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import h5py
import matplotlib.pyplot as plt
import pandas as pd
import xarray as xr

from pyroext.infer.checkpoint import atomic_target
from pyroext.infer.result import SVIResult
from pyroext.report import plot_losses

POSTERIOR_FILE = "posterior.nc"
UNREADABLE = (OSError, KeyError, RuntimeError, TypeError, ValueError)
"""What h5py and xarray raise for a damaged or foreign file (seen in bit-flip trials)."""
REWRITE = "write it again with `pyroext fit <model> ... --out <folder>`"
CHECKPOINT_FILE = "checkpoint.pt"
MANIFEST_FILE = "manifest.json"


def save_datatree(dt: xr.DataTree, path: str | os.PathLike) -> Path:
    """Writes a DataTree to netCDF (h5netcdf) atomically (see :func:`atomic_target`).

    Every numeric array of every group is stored with HDF5's fletcher32 checksum, which
    :func:`read_datatree` verifies: a file damaged on disk or in transfer is refused by name
    instead of giving wrong numbers. (Strings and attributes carry no checksum.)

    Arguments:
        dt: The tree.
        path: Destination file.

    Returns:
        The path written.
    """
    with atomic_target(path) as temporary:
        dt.to_netcdf(temporary, engine="h5netcdf", encoding=_checksummed(dt))
    return Path(path)


def read_datatree(path: str | os.PathLike) -> xr.DataTree:
    """Reads a DataTree written by :func:`save_datatree` into memory, checking it first.

    Every array is read once through h5py, which verifies the fletcher32 checksums (files
    written without them are read unchecked), before xarray decodes the tree.

    Arguments:
        path: The netCDF file.

    Returns:
        The tree, loaded (no file stays open).

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        IsADirectoryError: If ``path`` is a folder.
        ValueError: If the file is truncated, not HDF5/netCDF, fails a checksum, or does not
            decode as a DataTree; the message names the file.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder, not a netCDF file")
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    _verify_hdf5(path)
    try:
        with xr.open_datatree(path, engine="h5netcdf") as tree:
            return tree.load()
    except UNREADABLE as error:
        raise ValueError(
            f"{path} does not decode as an ArviZ DataTree ({_reason(error)}); {REWRITE}"
        ) from error


def _checksummed(dt: xr.DataTree) -> dict[str, dict[str, dict[str, bool]]]:
    """fletcher32 encodings for every group's numeric arrays; scalars (which HDF5 does not
    chunk), empty arrays and strings (variable-length, unfiltered) go without."""
    encoding = {}
    for node in dt.subtree:
        variables = node.to_dataset(inherit=False).variables
        chosen = {
            str(name): {"fletcher32": True}
            for name, variable in variables.items()
            if variable.ndim and variable.size and variable.dtype.kind in "biuf"
        }
        if chosen:
            encoding[node.path] = chosen
    return encoding


def _verify_hdf5(path: Path) -> None:
    """Reads every object of an HDF5 file, so that a damaged one fails here, by name."""
    damaged: list[str] = []

    def visit(name: str, item: h5py.HLObject) -> bool | None:
        try:
            dict(item.attrs)
            if isinstance(item, h5py.Dataset):
                item[()]
        except UNREADABLE as error:
            what = "checksum mismatch" if getattr(item, "fletcher32", False) else "unreadable"
            damaged.append(f"{what} in {name} ({_reason(error)})")
            return True  # stops the walk
        return None

    try:
        with h5py.File(path, "r") as file:
            dict(file.attrs)
            file.visititems(visit)
    except UNREADABLE as error:
        raise ValueError(
            f"{path} is not a readable netCDF file ({_reason(error)}): it is truncated, "
            f"damaged or of another format; {REWRITE}"
        ) from error
    if damaged:
        raise ValueError(f"{path} is corrupt: {damaged[0]}; {REWRITE}")


def _reason(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


class RunDir:
    """One fit's output folder.

    Arguments:
        path: The folder.

    Example:
        >>> run = RunDir.create("runs/example")  # doctest: +SKIP
        >>> run.write_posterior(tree)  # doctest: +SKIP
        >>> RunDir.open("runs/example").posterior  # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    @classmethod
    def create(cls, path: str | os.PathLike) -> "RunDir":
        """Makes the folder (and parents) and checks that it can be written, before training.

        Raises:
            ValueError: If ``path`` is empty, a file, or not writable.
        """
        if not str(path):
            raise ValueError("out='' names no folder; give a folder such as runs/my-fit")
        folder = Path(path)
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"out={str(path)!r} is a file; give a folder")
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as error:
            raise ValueError(f"out={str(path)!r} is not a writable folder ({error})") from error
        return cls(folder)

    @classmethod
    def open(cls, path: str | os.PathLike) -> "RunDir":
        """The run folder at ``path``, which ``diagnose`` reads.

        Raises:
            FileNotFoundError: If ``path`` does not exist or holds no ``posterior.nc``.
            NotADirectoryError: If ``path`` is a file.
            IsADirectoryError: If its ``posterior.nc`` is a folder.
        """
        run, fix = cls(path), f"write one with `pyroext fit <model> ... --out {path}` first"
        if not run.path.exists():
            raise FileNotFoundError(f"run_dir={str(path)!r} does not exist; {fix}")
        if not run.path.is_dir():
            raise NotADirectoryError(
                f"run_dir={str(path)!r} is a file; give the folder `pyroext fit --out` wrote"
            )
        if run.posterior.is_dir():
            raise IsADirectoryError(f"{run.posterior} is a folder, not a netCDF file")
        if not run.posterior.is_file():
            empty = " (the folder is empty)" if not any(run.path.iterdir()) else ""
            raise FileNotFoundError(f"run_dir={str(path)!r} has no {POSTERIOR_FILE}{empty}; {fix}")
        return run

    def read_posterior(self) -> xr.DataTree:
        """The DataTree of ``posterior.nc``, checked and loaded (see :func:`read_datatree`)."""
        return read_datatree(self.posterior)

    @property
    def posterior(self) -> Path:
        """The DataTree file."""
        return self.path / POSTERIOR_FILE

    @property
    def checkpoint(self) -> Path:
        """The training checkpoint."""
        return self.path / CHECKPOINT_FILE

    @property
    def manifest(self) -> dict[str, Any]:
        """The manifest's content; empty for a folder written before manifests existed."""
        source = self.path / MANIFEST_FILE
        return json.loads(source.read_text()) if source.is_file() else {}

    def write_training(
        self,
        result: SVIResult,
        summary: pd.DataFrame,
        title: str,
        reference_loss: float | None = None,
    ) -> None:
        """Writes ``losses.csv``, ``summary.csv`` and ``loss.png``.

        Arguments:
            result: The training result.
            summary: The fit's table.
            title: Title of the loss plot.
            reference_loss: An exact lower bound of the loss (``-log p(data)``), if known.
        """
        series = result.loss_series()
        self.write_table(series, "losses.csv")
        self.write_table(summary, "summary.csv")
        self.write_figure(plot_losses(series, title, reference_loss), "loss.png")

    def write_table(self, table: pd.DataFrame | pd.Series, name: str) -> Path:
        """Writes a CSV file into the folder."""
        with atomic_target(self.path / name) as temporary:
            table.to_csv(temporary)
        return self.path / name

    def write_figure(self, figure: plt.Figure, name: str) -> Path:
        """Writes a figure as PNG into the folder and closes it."""
        with atomic_target(self.path / name) as temporary:
            figure.savefig(temporary, dpi=120, format="png")
        plt.close(figure)
        return self.path / name

    def write_posterior(self, tree: xr.DataTree) -> Path:
        """Writes the DataTree that ``pyroext diagnose`` reads."""
        return save_datatree(tree, self.posterior)

    def write_manifest(self, job: str, config: Any) -> Path:
        """Writes ``manifest.json``: the job, its configuration and the folder's files.

        Arguments:
            job: The job's registry name.
            config: The job's configuration dataclass.
        """
        files = sorted(
            entry.name
            for entry in self.path.iterdir()
            if entry.is_file() and entry.name != MANIFEST_FILE and not entry.name.startswith(".")
        )
        content = {
            "job": job,
            "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "config": {
                key: value
                if isinstance(value, (int, float, str, bool, type(None)))
                else str(value)
                for key, value in dataclasses.asdict(config).items()
            },
            "files": files,
        }
        with atomic_target(self.path / MANIFEST_FILE) as temporary:
            Path(temporary).write_text(json.dumps(content, indent=2) + "\n")
        return self.path / MANIFEST_FILE
