"""Runs Pyro's own autoguide test file with pyroext's guides added to its parametrisations.

Pyro's test suite is the contract for an autoguide, but it is Pyro's code: it is read from a
Pyro checkout at run time, never copied into this repository. The file's parametrize lists
get pyroext's guides (:mod:`variants`) next to the Pyro guides they mirror, and pytest runs
only the added cases, with Pyro's own ``setup.cfg`` (warnings are errors) and ``conftest.py``
(float64 by default).

Example:
    ``python tests/pyro_suite/run.py --pyro ~/src/pyro -- -x`` (or ``make pyro-suite
    PYRO=~/src/pyro``), where ``~/src/pyro`` is a clone of https://github.com/pyro-ppl/pyro
    (a work tree or a bare repository).
"""

__all__ = ["extend", "main"]

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

TEST_FILE = Path("tests/infer/test_autoguide.py")
VARIANTS = Path(__file__).with_name("variants.py")
SELECT = "MetFlow or DAIS"
# torch 2.14 deprecates torch.jit.trace, which Pyro's JIT ELBOs call; Pyro's setup.cfg makes
# every warning an error, so without this every JIT case fails before reaching the guides.
JIT_WARNING = "ignore:`torch.jit:FutureWarning"

INSERTIONS = [
    (re.compile(r"^(\s+)AutoDiagonalNormal,$"), "{indent}*DIAGONAL,"),
    (re.compile(r"^(\s+)AutoMultivariateNormal,$"), "{indent}*CHOLESKY,"),
    (re.compile(r"^(\s+)AutoIAFNormal,$"), "{indent}*FLOWS,"),
    (
        re.compile(r"^(\s+)functools\.partial\(AutoDiagonalNormal, init_loc_fn=(\w+)\),$"),
        '{indent}*INIT_VARIANTS["{init}"],',
    ),
    (re.compile(r"^(\s+)auto_guide_list_x,$"), "{indent}*GUIDE_LISTS,"),
]
IMPORT = (
    "from tests.infer.pyroext_variants import CHOLESKY, DIAGONAL, FLOWS, GUIDE_LISTS, "
    "INIT_VARIANTS"
)


def extend(source: str) -> tuple[str, int]:
    """Adds pyroext's entries to every matching parametrize entry of Pyro's test file.

    Arguments:
        source: Text of ``tests/infer/test_autoguide.py``.

    Returns:
        The extended text and the number of entries inserted.

    Raises:
        ValueError: If the file no longer has the anchors this relies on.
    """
    lines, inserted, in_tests = [], 0, False
    for line in source.splitlines():
        if line.startswith("def xfail_messenger"):
            lines += [IMPORT, "", ""]
            in_tests = True
        lines.append(line)
        for pattern, template in INSERTIONS if in_tests else ():
            match = pattern.match(line)
            if match:
                init = match.group(2) if pattern.groups > 1 else ""
                lines.append(template.format(indent=match.group(1), init=init))
                inserted += 1
    if IMPORT not in lines or not inserted:
        raise ValueError(
            f"{TEST_FILE} has changed shape (no 'def xfail_messenger' or no guide entries); "
            "update the anchors in tests/pyro_suite/run.py"
        )
    return "\n".join(lines) + "\n", inserted


def _export(pyro: Path, destination: Path) -> None:
    if (pyro / "tests").is_dir():
        shutil.copytree(pyro / "tests", destination / "tests")
        shutil.copy(pyro / "setup.cfg", destination)
        return
    archive = subprocess.run(
        ["git", f"--git-dir={pyro}", "archive", "HEAD", "tests", "setup.cfg"],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "x", "-C", str(destination)], input=archive, check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n\n")[0])
    parser.add_argument("--pyro", type=Path, required=True, help="a Pyro checkout or git dir")
    parser.add_argument("pytest_args", nargs="*", help="passed to pytest (after --)")
    args = parser.parse_args(argv)
    if not args.pyro.exists():
        parser.error(f"--pyro {args.pyro}: no such directory; clone pyro-ppl/pyro there")
    with tempfile.TemporaryDirectory(prefix="pyro-suite-") as root:
        root = Path(root)
        _export(args.pyro, root)
        text, inserted = extend((root / TEST_FILE).read_text())
        (root / TEST_FILE).write_text(text)
        shutil.copy(VARIANTS, root / TEST_FILE.with_name("pyroext_variants.py"))
        print(f"{inserted} pyroext entries added to {TEST_FILE}", flush=True)
        command = [sys.executable, "-m", "pytest", str(TEST_FILE), "-k", SELECT]
        command += ["-W", JIT_WARNING, "-p", "no:cacheprovider", *args.pytest_args]
        return subprocess.run(command, check=False, cwd=root).returncode


if __name__ == "__main__":
    sys.exit(main())
