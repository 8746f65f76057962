"""The wheel's package list in pyproject.toml covers every package folder of the tree (an
editable install finds an unlisted one, a wheel silently leaves it out)."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).parents[2]


def _package_folders(folder: Path, name: str) -> set[str]:
    return {
        ".".join([name, *init.parent.relative_to(folder).parts])
        for init in folder.rglob("__init__.py")
    }


def test_every_package_folder_is_listed():
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setuptools["package-dir"] == {"pyroext": "pyroext", "pyroext.models": "models"}
    expected = _package_folders(ROOT / "pyroext", "pyroext")
    expected |= _package_folders(ROOT / "models", "pyroext.models")
    assert set(setuptools["packages"]) == expected
