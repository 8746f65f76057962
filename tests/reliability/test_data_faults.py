"""Bad data files, damaged DataTrees and bad diagnostic inputs, as a disk, a download or a
careless user produce them: each is refused with an ``OSError`` or ``ValueError`` (one line
``pyroext: error: ...`` and exit status 2 on the command line) naming the file or argument,
warned about by name, or handled; and what was saved before stays byte for byte as it was.
Each case carries its outcome (``refused``, ``warned``, ``handled``) for the totals; the faults
themselves are in ``tests/helpers/data_faults.py``."""

import os
import warnings
from collections import Counter
from pathlib import Path

import data_faults as f
import numpy as np
import pytest
from data_faults import DRAWS, HANDLED, REFUSED, WARNED, Case, Places

import pyroext.minibatch
from pyroext.cli import main
from pyroext.diagnostics import khat_from_log_ratios
from pyroext.runs import read_datatree, save_datatree

WARNINGS = ("has not been trained", "non-finite values")  # what a handled case must not warn
NOT_GZIP = "{image}.gz is not a valid gzip file"
UNREADABLE = "{posterior} is not a readable netCDF file"
NAN = f.with_nan((1, DRAWS), 3)
FIT = "fit {} --data mnist --data-dir {{root}} --out {{missing}} --no-progress"

CASES = {
    # MNIST's IDX files: headers, lengths, labels, compression, files that are not files
    "idx-bad-magic": Case(REFUSED, f.patch(f.image, 0, b"PK"), f.mnist, ValueError,
                          "{image} is not an IDX file: its magic number is 1347094531, expected"),
    "idx-type-float": Case(REFUSED, f.patch(f.image, 2, b"\x0d"), f.mnist, ValueError,
                           "{image}: IDX type code 0x0d, expected 0x08"),
    "idx-labels-for-images": Case(REFUSED, f.swap_pair, f.mnist, ValueError,
                                  "{image}: magic number 2049 says 1 dimensions, expected 2051"),
    "idx-truncated-images": Case(REFUSED, f.cut(f.image, 0.5), f.mnist, ValueError,
                                 "{image} is truncated: its header says 5 images of shape "
                                 "(28, 28), 3936 bytes in all, but it has 1968 bytes"),
    "idx-truncated-header": Case(REFUSED, f.cut(f.image, 0.001), f.mnist, ValueError,
                                 "{image} has 3 bytes, fewer than the 16-byte header"),
    "idx-empty-file": Case(REFUSED, f.write(f.label, b""), f.mnist, ValueError,
                           "{label} has 0 bytes"),
    "idx-extra-bytes": Case(REFUSED, f.append_byte, f.mnist, ValueError,
                            "{label} is longer than its header says"),
    "idx-count-mismatch": Case(REFUSED, f.labels([0, 1, 2, 3]), f.mnist, ValueError,
                               "{image} holds 5 images but {label} holds 4 labels"),
    "idx-label-255": Case(REFUSED, f.labels([0, 1, 255, 3, 4]), f.mnist, ValueError,
                          "{label}: label 255 at index 2 is not a class"),
    "idx-label-10": Case(REFUSED, f.labels([0, 10, 2, 3, 4]), f.mnist, ValueError,
                         "{label}: label 10 at index 1"),
    "idx-wrong-image-size": Case(REFUSED, f.small_images, f.mnist, ValueError,
                                 "{image}: its header says images of 20x20 pixels"),
    "idx-no-images": Case(REFUSED, f.no_images, f.mnist, ValueError,
                          "{image}: its header says it holds no images"),
    "idx-gzip-garbage": Case(REFUSED, f.gzipped(garbage=True), f.mnist, ValueError, NOT_GZIP),
    "idx-gzip-truncated": Case(REFUSED, f.gzipped(keep=0.5), f.mnist, ValueError, NOT_GZIP),
    "idx-gzip-valid": Case(HANDLED, f.gzipped(), f.mnist, None, ""),
    "idx-folder-for-file": Case(REFUSED, f.folder_for_labels, f.mnist, IsADirectoryError,
                                "{test_label} is a folder, not an IDX file"),
    "idx-missing-file": Case(REFUSED, f.remove_test_labels, f.mnist, FileNotFoundError,
                             "in {raw}/ (missing: t10k-labels-idx1-ubyte)"),
    "idx-label-255-cli": Case(REFUSED, f.labels([0, 1, 255, 3, 4]),
                              FIT.format("vae"),
                              ValueError, "{label}: label 255 at index 2"),
    "idx-truncated-cli": Case(REFUSED, f.cut(f.test_image, 0.9),
                              FIT.format("bnn"),
                              ValueError, "{test_image} is truncated"),
    # posterior.nc: damaged on disk, truncated, of another kind, or without what is needed
    "tree-bit-flip": Case(REFUSED, f.flip_in_variable("posterior", "mu"), "diagnose {run}",
                          ValueError, "{posterior} is corrupt: checksum mismatch in posterior/mu"),
    "tree-bit-flip-api": Case(REFUSED, f.flip_in_variable("log_likelihood", "y"), f.read,
                              ValueError, "{posterior} is corrupt: checksum mismatch in "
                              "log_likelihood/y"),
    "tree-truncated": Case(REFUSED, f.cut(f.posterior, 0.5), "diagnose {run}", ValueError,
                           UNREADABLE),
    "tree-empty-file": Case(REFUSED, f.write(f.posterior, b""), f.diagnose, ValueError,
                            UNREADABLE),
    "tree-text-file": Case(REFUSED, f.write(f.posterior, b"chain,draw\n0,0\n"), "diagnose {run}",
                           ValueError, UNREADABLE),
    "tree-no-posterior": Case(REFUSED, f.edit_tree(f.without("posterior")), "diagnose {run}",
                              ValueError, "{posterior} has no posterior group"),
    "tree-no-log-likelihood": Case(HANDLED, f.edit_tree(f.without("log_likelihood")),
                                   f.diagnose, None, ""),
    "tree-nan-draws": Case(WARNED, f.edit_tree(f.nan_draws(2)), "diagnose {run}", UserWarning,
                           "{posterior}: 2 of 200 draws have non-finite values (posterior.mu: 2,"
                           " sample_stats.lp: 2); they are left out"),
    "tree-all-nan": Case(REFUSED, f.edit_tree(f.nan_draws(DRAWS)), f.diagnose, ValueError,
                         "{posterior}: all draws are unusable: 200 of 200 draws"),
    "tree-without-checksums": Case(HANDLED, f.unchecked_copy, f.diagnose, None, ""),
    "diagnose-missing-folder": Case(REFUSED, f.nothing, "diagnose {missing}", FileNotFoundError,
                                    "run_dir='{missing}' does not exist; write one with"),
    "diagnose-empty-folder": Case(REFUSED, f.replace_run, "diagnose {run}", FileNotFoundError,
                                  "run_dir='{run}' has no posterior.nc (the folder is empty)"),
    "diagnose-file": Case(REFUSED, f.nothing, "diagnose {file}", NotADirectoryError,
                          "run_dir='{file}' is a file"),
    "diagnose-posterior-folder": Case(REFUSED, f.posterior_folder, f.diagnose,
                                      IsADirectoryError, "{posterior} is a folder"),
    # k-hat and LOO: too few draws, non-finite values, shapes that disagree
    "loo-one-draw": Case(REFUSED, f.nothing, f.loo(draws=1), ValueError,
                         "vi_loo needs at least 30 draws (PSIS fits a Pareto tail"),
    "loo-nan-lp": Case(REFUSED, f.nothing, f.loo(sample_stats__lp=NAN), ValueError,
                       "some are NaN or infinite (sample_stats.lp: 3, of 200 draws)"),
    "loo-inf-log-likelihood": Case(REFUSED, f.nothing,
                                   f.loo(log_likelihood__obs=f.with_nan((1, DRAWS, 4), 1, np.inf)),
                                   ValueError, "(log_likelihood.obs: 1, of 200 draws)"),
    "loo-draws-disagree": Case(REFUSED, f.nothing,
                               f.loo(log_likelihood__obs=np.zeros((1, DRAWS - 1, 4))),
                               ValueError, "sample_stats.lp (1, 200), sample_stats.lq (1, 200),"
                               " log_likelihood.obs (1, 199)"),
    "khat-nan": Case(REFUSED, f.nothing, f.khat(sample_stats__lq=NAN), ValueError,
                     "3 of 200 draws have a NaN or +inf log ratio lp - lq"),
    "khat-dims-disagree": Case(REFUSED, f.nothing,
                               f.khat(sample_stats__lq=np.zeros((1, DRAWS, 2))), ValueError,
                               "but lq has sizes {{'chain': 1, 'draw': 200, 'lq_dim_0': 2}}"),
    "khat-one-draw": Case(REFUSED, f.nothing, lambda _: khat_from_log_ratios(np.zeros(1)),
                          ValueError, "k-hat needs at least 30 draws, got 1"),
    # exports: guides never trained, a mixture with a component per data point
    "export-untrained-autoguide": Case(WARNED, f.nothing, f.export(train=False), UserWarning,
                                       "guide AutoNormal has not been trained"),
    "export-untrained-param-guide": Case(WARNED, f.nothing, f.export(False, function_guide=True),
                                         UserWarning, "guide untrained_guide has not been "
                                         "trained: it was never called before this export (this"
                                         " export created its parameters untrained_loc)"),
    "export-trained": Case(HANDLED, f.nothing, f.export(train=True), None, ""),
    "gmm-component-per-point": Case(HANDLED, f.nothing, f.gmm_component_per_point, None, ""),
}  # fmt: skip


def test_enough_cases_with_known_outcomes() -> None:
    totals = Counter(case.outcome for case in CASES.values())
    assert set(totals) == {REFUSED, WARNED, HANDLED} and sum(totals.values()) >= 30


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return f.write_finished_run(tmp_path_factory.mktemp("saved") / "run")


@pytest.fixture
def places(finished_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Places:
    def trained(*_: object, **__: object) -> None:
        pytest.fail("training started")  # a refusal must come before it

    monkeypatch.setattr(pyroext.minibatch, "run_svi", trained)
    return f.make_places(tmp_path, finished_run)


@pytest.mark.parametrize("name", sorted(CASES), ids=lambda name: f"{CASES[name].outcome}:{name}")
def test_bad_data(name: str, places: Places, capsys: pytest.CaptureFixture[str]) -> None:
    case = CASES[name]
    case.fault(places)
    before = f.digests(places.root, places.run)
    names = case.names.format(**places.words())
    if isinstance(case.call, str):
        _check_command_line(case, case.call.format(**places.words()).split(), names, capsys)
    elif case.outcome == REFUSED:
        with pytest.raises(case.expected) as error:
            case.call(places)
        assert names in " ".join(str(error.value).split())
    elif case.outcome == WARNED:
        with pytest.warns(case.expected) as record:
            case.call(places)
        assert any(names in str(warning.message) for warning in record), [*map(str, record)]
    else:
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            case.call(places)
        assert not [w for w in record if any(s in str(w.message) for s in WARNINGS)], record
    after = f.digests(places.root, places.run)
    assert {path: after.get(path) for path in before} == before  # nothing saved changed
    if case.outcome == REFUSED:  # nor was anything made
        assert after == before and not places.missing.exists()


def _check_command_line(
    case: Case, argv: list[str], names: str, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        status = main(argv)
    except SystemExit as exit_info:
        status = exit_info.code
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    if case.outcome == REFUSED:
        errors = [line for line in lines if not line.startswith("pyroext: warning: ")]
        assert status == 2 and len(errors) == 1, err
        assert errors[0].startswith("pyroext: error: ") and names in errors[0], err
    else:
        assert status == 0, err
        assert any(line.startswith("pyroext: warning: ") and names in line for line in lines), err


def test_diagnose_skips_loo_without_log_likelihood(places: Places) -> None:
    CASES["tree-no-log-likelihood"].fault(places)
    report = f.diagnose(places)
    assert report.khat is not None and report.loo is None
    assert "no log_likelihood group" in report.no_loo


def test_diagnose_leaves_out_nan_draws(places: Places) -> None:
    CASES["tree-nan-draws"].fault(places)
    with pytest.warns(UserWarning, match="2 of 200 draws"):
        report = f.diagnose(places)
    assert report.dropped == 2 and report.khat.num_samples == DRAWS - 2
    assert np.isfinite(report.summary.to_numpy(dtype=float)).all()
    assert np.isfinite(report.loo.elpd)


def test_posterior_follows_the_umask(places: Places, tmp_path: Path) -> None:
    previous = os.umask(0o027)
    try:
        save_datatree(read_datatree(places.posterior), tmp_path / "posterior.nc")
    finally:
        os.umask(previous)
    assert (tmp_path / "posterior.nc").stat().st_mode & 0o777 == 0o640
