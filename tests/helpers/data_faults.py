"""Faults for tests/reliability/test_data_faults.py: places to break, ways to break them, and
the calls that must then refuse, warn or cope."""

import functools
import gzip
import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import h5py
import numpy as np
import pyro
import pyro.distributions as dist
import torch
import xarray as xr
from arviz_base import from_dict
from idx_files import write_idx, write_split
from pyro.infer.autoguide import AutoNormal

from pyroext.arviz import from_pyro_svi
from pyroext.cli.diagnose import diagnose_run
from pyroext.data import load_mnist
from pyroext.diagnostics import vi_khat, vi_loo
from pyroext.infer import run_svi
from pyroext.models.gmm import gmm_marginal_model, init_from_data
from pyroext.runs import POSTERIOR_FILE, RunDir, read_datatree, save_datatree

REFUSED, WARNED, HANDLED = "refused", "warned", "handled"
N_TRAIN, N_TEST, N_OBS, DRAWS = 5, 3, 20, 200


class Places(NamedTuple):
    """The files a case works on, made afresh for each test by :func:`make_places`: ``root``
    holds ``MNIST/raw`` (``raw``) with valid IDX files, ``run`` a finished run folder with
    ``posterior.nc``, ``missing`` a path that does not exist and ``file`` a regular file."""

    root: Path
    raw: Path
    run: Path
    missing: Path
    file: Path

    @property
    def posterior(self) -> Path:
        return self.run / POSTERIOR_FILE

    def image(self, split: str = "train") -> Path:
        return self.raw / f"{split}-images-idx3-ubyte"

    def label(self, split: str = "train") -> Path:
        return self.raw / f"{split}-labels-idx1-ubyte"

    def words(self) -> dict[str, Path]:
        """What ``{name}`` stands for in a case's command line and expected message."""
        return self._asdict() | {
            "posterior": self.posterior,
            "image": self.image(),
            "label": self.label(),
            "test_image": self.image("t10k"),
            "test_label": self.label("t10k"),
        }


def make_places(folder: Path, finished_run: Path) -> Places:
    """Valid MNIST files, a copy of a finished run and a regular file, under ``folder``."""
    data = folder / "data"
    places = Places(data, data / "MNIST" / "raw", folder / "run", folder / "absent", folder / "f")
    places.raw.mkdir(parents=True)
    generator = torch.Generator().manual_seed(0)
    for split, count in (("train", N_TRAIN), ("t10k", N_TEST)):
        images = torch.randint(0, 256, (count, 28, 28), generator=generator)
        write_split(places.raw, split, images, torch.arange(count) % 10)
    shutil.copytree(finished_run, places.run)
    places.file.write_text("not a folder\n")
    return places


def write_finished_run(folder: Path) -> Path:
    """A run folder as a fit leaves it: posterior.nc of a trained guide, and a table."""
    y = torch.linspace(-1.0, 1.0, N_OBS, dtype=torch.float64)
    pyro.clear_param_store()
    guide = AutoNormal(normal_mean)
    run_svi(normal_mean, guide, y, num_steps=200, progress=False, seed=0)
    run = RunDir.create(folder)
    run.write_posterior(from_pyro_svi(normal_mean, guide, y, num_samples=DRAWS, seed=0))
    (run.path / "summary.csv").write_text("parameter,mean\nmu,0.0\n")
    return run.path


def digests(*folders: Path) -> dict[str, str]:
    """sha256 of every file under the folders, by path."""
    return {
        str(path): hashlib.sha256(path.read_bytes()).hexdigest()
        for folder in folders
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


class Case(NamedTuple):
    """A fault and what must follow.

    Fields:
        outcome: ``refused``, ``warned`` or ``handled``.
        fault: Breaks a file of :class:`Places` (or nothing) before the call.
        call: The Python call, or a command line with :class:`Places` fields in braces.
        expected: The exception or warning class (None for ``handled``).
        names: What the message must contain, with :class:`Places` fields in braces.
    """

    outcome: str
    fault: Callable[[Places], None]
    call: Callable[[Places], Any] | str
    expected: type[BaseException] | type[Warning] | None
    names: str


# ---------------------------------------------------------------- faults


def nothing(_: Places) -> None:
    pass


def posterior(p: Places) -> Path:
    return p.posterior


def image(p: Places) -> Path:
    return p.image()


def label(p: Places) -> Path:
    return p.label()


def test_image(p: Places) -> Path:
    return p.image("t10k")


def swap_pair(p: Places) -> None:
    shutil.copy(p.label(), p.image())


def append_byte(p: Places) -> None:
    p.label().write_bytes(p.label().read_bytes() + b"\0")


def small_images(p: Places) -> None:
    write_idx(p.image(), torch.zeros(N_TRAIN, 20, 20))


def no_images(p: Places) -> None:
    write_split(p.raw, "train", torch.zeros(0, 28, 28), torch.zeros(0))


def remove_test_labels(p: Places) -> None:
    p.label("t10k").unlink()


def write(path: Callable[[Places], Path], data: bytes) -> Callable[[Places], None]:
    return lambda p: path(p).write_bytes(data)


def patch(path: Callable[[Places], Path], offset: int, data: bytes) -> Callable[[Places], None]:
    def fault(p: Places) -> None:
        content = bytearray(path(p).read_bytes())
        content[offset : offset + len(data)] = data
        path(p).write_bytes(bytes(content))

    return fault


def cut(path: Callable[[Places], Path], keep: float) -> Callable[[Places], None]:
    def fault(p: Places) -> None:
        content = path(p).read_bytes()
        path(p).write_bytes(content[: int(len(content) * keep)])

    return fault


def labels(values: list[int]) -> Callable[[Places], None]:
    return lambda p: write_idx(p.label(), torch.tensor(values, dtype=torch.uint8))


def gzipped(keep: float = 1.0, garbage: bool = False) -> Callable[[Places], None]:
    """Replaces the training images by their gzipped form (cut short, or random bytes)."""

    def fault(p: Places) -> None:
        packed = gzip.compress(p.image().read_bytes())
        packed = bytes(np.random.default_rng(0).bytes(len(packed))) if garbage else packed
        p.image().with_name(p.image().name + ".gz").write_bytes(packed[: int(len(packed) * keep)])
        p.image().unlink()

    return fault


def folder_for_labels(p: Places) -> None:
    p.label("t10k").unlink()
    p.label("t10k").mkdir()


def flip_in_variable(group: str, name: str) -> Callable[[Places], None]:
    """Flips one bit in the middle of a variable's stored data (its first chunk)."""

    def fault(p: Places) -> None:
        with h5py.File(p.posterior, "r") as file:
            chunk = file[f"{group}/{name}"].id.get_chunk_info(0)
        content = bytearray(p.posterior.read_bytes())
        content[chunk.byte_offset + chunk.size // 2] ^= 0x10
        p.posterior.write_bytes(bytes(content))

    return fault


def edit_tree(edit: Callable[[xr.DataTree], xr.DataTree]) -> Callable[[Places], None]:
    return lambda p: save_datatree(edit(read_datatree(p.posterior)), p.posterior)


def without(group: str) -> Callable[[xr.DataTree], xr.DataTree]:
    def edit(tree: xr.DataTree) -> xr.DataTree:
        del tree[group]
        return tree

    return edit


def nan_draws(count: int) -> Callable[[xr.DataTree], xr.DataTree]:
    """NaN in ``mu`` and ``lp`` at the first ``count`` draws, as a diverged guide gives."""

    def edit(tree: xr.DataTree) -> xr.DataTree:
        for group, name in (("posterior", "mu"), ("sample_stats", "lp")):
            values = tree[group][name].values.copy()
            values[:, :count] = np.nan
            tree[group][name] = tree[group][name].copy(data=values)
        return tree

    return edit


def replace_run(p: Places) -> None:
    shutil.rmtree(p.run)
    p.run.mkdir()


def posterior_folder(p: Places) -> None:
    p.posterior.unlink()
    p.posterior.mkdir()


def unchecked_copy(p: Places) -> None:
    """The same tree written without checksums, as pyroext wrote it before them."""
    read_datatree(p.posterior).to_netcdf(p.posterior.with_suffix(".tmp"), engine="h5netcdf")
    p.posterior.with_suffix(".tmp").replace(p.posterior)


# ---------------------------------------------------------------- calls


def mnist(p: Places, train: bool = True) -> Any:
    return load_mnist(p.root, train=train, binarize=None)


def diagnose(p: Places) -> Any:
    return diagnose_run(p.run)


def tree(draws: int = DRAWS, **arrays: np.ndarray) -> xr.DataTree:
    rng = np.random.default_rng(1)
    data = {
        "posterior": {"mu": rng.normal(size=(1, draws))},
        "sample_stats": {"lp": rng.normal(size=(1, draws)), "lq": rng.normal(size=(1, draws))},
        "log_likelihood": {"obs": rng.normal(size=(1, draws, 4))},
    }
    for key, value in arrays.items():
        group, name = key.split("__")
        data[group][name] = value
    return from_dict(data, dims={"obs": ["obs_dim"]})


def loo(**arrays: np.ndarray) -> Callable[[Places], Any]:
    return lambda _: vi_loo(tree(**arrays))


def khat(**arrays: np.ndarray) -> Callable[[Places], Any]:
    return lambda _: vi_khat(tree(**arrays))


def read(p: Places) -> Any:
    return read_datatree(p.posterior)


def with_nan(shape: tuple[int, ...], count: int, value: float = np.nan) -> np.ndarray:
    values = np.random.default_rng(2).normal(size=shape)
    values.reshape(-1)[:count] = value
    return values


def normal_mean(y: torch.Tensor) -> None:
    mu = pyro.sample("mu", dist.Normal(y.new_tensor(0.0), 1.0))
    with pyro.plate("obs", len(y)):
        pyro.sample("y", dist.Normal(mu, 1.0), obs=y)


def export(train: bool, function_guide: bool = False) -> Callable[[Places], Any]:
    y = torch.linspace(-1.0, 1.0, N_OBS, dtype=torch.float64)

    def call(_: Places) -> Any:
        pyro.clear_param_store()
        guide = untrained_guide if function_guide else AutoNormal(normal_mean)
        if train:
            run_svi(normal_mean, guide, y, num_steps=2, progress=False, seed=0)
        return from_pyro_svi(normal_mean, guide, y, num_samples=40, seed=0)

    return call


def untrained_guide(y: torch.Tensor) -> None:
    loc = pyro.param("untrained_loc", torch.tensor(0.0, dtype=torch.float64))
    pyro.sample("mu", dist.Normal(loc, 1.0))


def gmm_component_per_point(_: Places) -> Any:
    """A mixture with a component per data point: its 500-draw export is four matrix
    products, not 500 x N x N triangular solves."""
    x = torch.randn(60, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    model = functools.partial(gmm_marginal_model, k=60, covariance="full")
    guide = AutoNormal(model, init_loc_fn=init_from_data(x, 60), init_scale=0.05)
    guide(x)
    tree = from_pyro_svi(model, guide, x, num_samples=500, seed=0)
    assert np.isfinite(tree["log_likelihood"]["x"].values).all()
    return tree
