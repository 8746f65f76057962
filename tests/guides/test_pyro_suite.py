"""The rewriting of Pyro's autoguide test file, on a stand-in written here (the real file is
read from a Pyro checkout at run time and never copied into this repository)."""

import importlib.util
from pathlib import Path

import pytest

RUNNER = Path(__file__).parent / "pyro_suite" / "run.py"
spec = importlib.util.spec_from_file_location("pyro_suite_run", RUNNER)
run = importlib.util.module_from_spec(spec)
spec.loader.exec_module(run)

STAND_IN = """from pyro.infer.autoguide import (
    AutoDiagonalNormal,
    AutoMultivariateNormal,
    AutoIAFNormal,
)


def xfail_messenger(auto_class, Elbo):
    pass


@pytest.mark.parametrize(
    "auto_class",
    [
        AutoDiagonalNormal,
        AutoMultivariateNormal,
        AutoIAFNormal,
        functools.partial(AutoDiagonalNormal, init_loc_fn=init_to_mean),
        auto_guide_list_x,
    ],
)
def test_something(auto_class):
    pass
"""


def test_entries_are_added_after_the_guides_they_mirror_and_not_to_imports():
    text, inserted = run.extend(STAND_IN)
    lines = text.splitlines()
    assert inserted == 5
    assert lines[lines.index("def xfail_messenger(auto_class, Elbo):") - 3] == run.IMPORT
    assert lines[2] == "    AutoMultivariateNormal,"  # the import list is left alone
    start = lines.index('    "auto_class",') + 1
    assert lines[start : start + 11] == [
        "    [",
        "        AutoDiagonalNormal,",
        "        *DIAGONAL,",
        "        AutoMultivariateNormal,",
        "        *CHOLESKY,",
        "        AutoIAFNormal,",
        "        *FLOWS,",
        "        functools.partial(AutoDiagonalNormal, init_loc_fn=init_to_mean),",
        '        *INIT_VARIANTS["init_to_mean"],',
        "        auto_guide_list_x,",
        "        *GUIDE_LISTS,",
    ]
    compile(text, "test_autoguide.py", "exec")


def test_a_reshaped_file_is_reported_not_silently_run_without_our_guides():
    with pytest.raises(ValueError, match="changed shape.*tests/pyro_suite/run.py"):
        run.extend(STAND_IN.replace("def xfail_messenger", "def helper"))
