"""Bad command lines, as a careless or hostile user types them: each ends with one line on
stderr naming the argument or file, exit status 2 and no traceback, before any training, and
leaves what an earlier run saved byte for byte as it was. Each case carries its outcome
(``refused-at-parse``, ``refused-before-training``, ``warned``) for the totals by outcome."""

import hashlib
import os
import shutil
from collections import Counter
from pathlib import Path
from typing import NamedTuple

import pandas as pd
import pytest

import pyroext.minibatch
from pyroext.cli import main
from pyroext.infer.checkpoint import load_checkpoint
from pyroext.models.gmm import job as gmm_job
from pyroext.models.linear_regression import job as lr_job
from pyroext.runs import CHECKPOINT_FILE

PARSE, BEFORE, WARNED = "refused-at-parse", "refused-before-training", "warned"
BNN_QUICK = ["--hidden", "3", "--num-samples", "5", "--no-progress"]


class Case(NamedTuple):
    """A command line with placeholders: ``{run}`` (a copy of a finished BNN run, checkpoint
    included), ``{file}`` (a regular file), ``{fresh}`` (a folder not made yet), ``{unwritable}``
    (a folder that cannot be made) and ``{ckdir}`` (a run folder whose checkpoint is a folder).
    A ``fit`` that parses and gives no ``--out`` gets a folder of its own, not made yet."""

    argv: str
    outcome: str
    names: str


CASES = {
    # every numeric option of each model: non-numbers, zero, negatives, non-finite values
    "lr-steps-word": Case(
        "fit linear-regression --steps x", PARSE, "--steps: 'x' is not an integer >= 1"
    ),
    "lr-steps-zero": Case(
        "fit linear-regression --steps 0", PARSE, "--steps: '0' is not an integer >= 1"
    ),
    "lr-steps-float": Case("fit linear-regression --steps 1.5", PARSE, "--steps: '1.5'"),
    "lr-steps-negative": Case("fit linear-regression --steps=-3", PARSE, "--steps: '-3'"),
    "lr-lr-negative": Case(
        "fit linear-regression --lr-init=-0.1",
        PARSE,
        "--lr-init: '-0.1' is not a finite number > 0",
    ),
    "lr-lr-zero": Case("fit linear-regression --lr-init 0", PARSE, "--lr-init: '0'"),
    "lr-lr-nan": Case("fit linear-regression --lr-init nan", PARSE, "--lr-init: 'nan'"),
    "lr-lr-inf": Case("fit linear-regression --lr-init inf", PARSE, "--lr-init: 'inf'"),
    "lr-lr-overflow": Case("fit linear-regression --lr-init 1e400", PARSE, "--lr-init: '1e400'"),
    "lr-particles-zero": Case("fit linear-regression --num-particles 0", PARSE, "--num-particles"),
    "lr-noise-negative": Case("fit linear-regression --noise-scale=-1", PARSE, "--noise-scale"),
    "lr-precision-word": Case(
        "fit linear-regression --prior-precision abc", PARSE, "--prior-precision"
    ),
    "lr-seed-negative": Case(
        "fit linear-regression --seed=-1",
        PARSE,
        "--seed: '-1' is not an integer in [0, 4294967295]",
    ),
    "lr-seed-huge": Case("fit linear-regression --seed 4294967296", PARSE, "--seed"),
    "gmm-k-zero": Case("fit gmm --k 0", PARSE, "--k: '0' is not an integer >= 1"),
    "gmm-k-word": Case("fit gmm --k two", PARSE, "--k: 'two'"),
    "gmm-k-above-n": Case("fit gmm --k 1000", BEFORE, "k=1000"),
    "gmm-steps-float": Case("fit gmm --steps 2.0", PARSE, "--steps: '2.0'"),
    "gmm-lr-negative": Case("fit gmm --lr-init=-1", PARSE, "--lr-init"),
    "gmm-seed-float": Case("fit gmm --seed 1.5", PARSE, "--seed: '1.5'"),
    "vae-epochs-zero": Case("fit vae --epochs 0", PARSE, "--epochs: '0'"),
    "vae-batch-word": Case("fit vae --batch-size x", PARSE, "--batch-size: 'x'"),
    "vae-samples-zero": Case("fit vae --num-samples 0", PARSE, "--num-samples"),
    "vae-latent-negative": Case("fit vae --latent-dim=-2", PARSE, "--latent-dim"),
    "vae-particles-float": Case("fit vae --num-particles 2.5", PARSE, "--num-particles"),
    "vae-lr-zero": Case("fit vae --lr-init 0.0", PARSE, "--lr-init"),
    "vae-nproc-zero": Case("fit vae --nproc-per-node 0", PARSE, "--nproc-per-node"),
    "bnn-hidden-zero": Case(
        "fit bnn --hidden 3,0", PARSE, "--hidden: 3,0 is not a list of integers >= 1"
    ),
    "bnn-hidden-empty": Case("fit bnn --hidden 3,,4", PARSE, "--hidden"),
    "bnn-samples-zero": Case("fit bnn --num-samples 0", PARSE, "--num-samples"),
    "bnn-batch-zero": Case("fit bnn --batch-size 0", PARSE, "--batch-size"),
    "bnn-lr-nan": Case("fit bnn --lr-init NaN", PARSE, "--lr-init"),
    "demo-steps-word": Case("demo --steps many", PARSE, "--steps: 'many'"),
    # names and options that do not exist or do not apply
    "unknown-model": Case("fit ridge", PARSE, "invalid choice: 'ridge'"),
    "unknown-guide": Case("fit linear-regression --guide flow", PARSE, "--guide: invalid choice"),
    "other-models-option": Case(
        "fit linear-regression --k 3", PARSE, "--k does not apply to model"
    ),
    "unknown-option": Case("fit gmm --colour red", PARSE, "unrecognized arguments: --colour"),
    "no-model": Case("fit", PARSE, "MODEL"),
    "bad-device": Case("fit linear-regression --device tpu9", BEFORE, "device='tpu9'"),
    "analytic-mcmc-guide": Case(
        "fit vae --guide langevin --objective analytic", BEFORE, "objective='analytic'"
    ),
    "bnn-task-data": Case(
        "fit bnn --task regression --data digits", BEFORE, "data='digits' does not suit"
    ),
    # options that would be ignored
    "vae-epochs-and-steps": Case("fit vae --epochs 2 --steps 3", BEFORE, "epochs=2 and steps=3"),
    "bnn-steps-and-epochs": Case("fit bnn --steps 2 --epochs 1", BEFORE, "epochs=1 and steps=2"),
    "bnn-data-dir-embedded": Case(
        "fit bnn --steps 2 --data-dir {fresh} --hidden 3 --num-samples 5", WARNED, "data_dir="
    ),
    "bnn-batch-above-data": Case(
        "fit bnn --steps 1 --batch-size 5000 --hidden 3 --num-samples 5", WARNED, "batch_size=5000"
    ),
    # data files
    "mnist-no-data-dir": Case("fit vae --data mnist", BEFORE, "data_dir"),
    "mnist-missing-files": Case("fit vae --data mnist --data-dir {fresh}", BEFORE, "{fresh}"),
    "mnist-data-dir-file": Case("fit bnn --data mnist --data-dir {file}", BEFORE, "{file}"),
    # output folders
    "out-empty": Case("fit linear-regression --steps 2 --out=", BEFORE, "out=''"),
    "out-file": Case("fit linear-regression --steps 2 --out {file}", BEFORE, "{file}"),
    "out-below-file": Case("fit gmm --steps 2 --out {file}/run", BEFORE, "{file}/run"),
    "out-unwritable": Case(
        "fit linear-regression --steps 2 --out {unwritable}", BEFORE, "{unwritable}"
    ),
    "vae-out-file": Case("fit vae --steps 2 --out {file}", BEFORE, "{file}"),
    "demo-out-empty": Case("demo --out=", BEFORE, "out=''"),
    "demo-out-file": Case("demo --out {file}", BEFORE, "{file}"),
    # checkpoints
    "checkpoint-exists-bnn": Case(
        "fit bnn --steps 2 --out {run}", BEFORE, f"{{run}}/{CHECKPOINT_FILE}"
    ),
    "checkpoint-exists-vae": Case("fit vae --steps 2 --out {run}", BEFORE, "--overwrite"),
    "checkpoint-is-folder": Case(
        "fit bnn --steps 2 --overwrite --out {ckdir}", BEFORE, "is a folder"
    ),
    "resume-nothing": Case(
        "fit bnn --steps 2 --resume --out {fresh}", BEFORE, f"{{fresh}}/{CHECKPOINT_FILE}"
    ),
    "resume-and-overwrite": Case(
        "fit bnn --resume --overwrite --out {run}",
        PARSE,
        "--overwrite: not allowed with argument --resume",
    ),
    "resume-no-checkpointing-job": Case("fit gmm --resume", PARSE, "--resume does not apply"),
    "overwrite-no-checkpointing-job": Case(
        "fit linear-regression --overwrite", PARSE, "--overwrite does not apply"
    ),
}


def test_enough_cases_with_known_outcomes() -> None:
    totals = Counter(case.outcome for case in CASES.values())
    assert set(totals) == {PARSE, BEFORE, WARNED} and sum(totals.values()) >= 35


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A BNN run folder as a finished two-step fit leaves it, checkpoint included."""
    out = tmp_path_factory.mktemp("saved") / "bnn"
    assert main(["fit", "bnn", "--steps", "2", *BNN_QUICK, "--out", str(out)]) == 0
    return out


@pytest.fixture
def places(finished_run: Path, tmp_path: Path) -> dict[str, str]:
    """What the placeholders of :class:`Case` stand for, made afresh for each test."""
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    (tmp_path / "file.txt").write_text("not a folder\n")
    (tmp_path / "ckdir" / CHECKPOINT_FILE).mkdir(parents=True)
    return {
        "run": str(run),
        "file": str(tmp_path / "file.txt"),
        "fresh": str(tmp_path / "fresh"),
        "unwritable": _unwritable(tmp_path),
        "ckdir": str(tmp_path / "ckdir"),
        "out": str(tmp_path / "out"),
    }


def _unwritable(tmp_path: Path) -> str:
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        return str(locked / "run")
    if not Path("/sys").is_dir():  # root writes anywhere a file system is mounted read-write
        pytest.skip("no folder that root cannot write")
    return "/sys/pyroext-run"


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


@pytest.fixture
def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """Makes any training step a test failure: a refusal must come before it."""

    def trained(*_: object, **__: object) -> None:
        pytest.fail("training started")

    for module in (pyroext.minibatch, lr_job, gmm_job):
        monkeypatch.setattr(module, "run_svi", trained)


@pytest.mark.parametrize("name", sorted(CASES), ids=lambda name: f"{CASES[name].outcome}:{name}")
def test_bad_command_line(
    name: str,
    places: dict[str, str],
    request: pytest.FixtureRequest,
    capsys: pytest.CaptureFixture[str],
) -> None:
    case = CASES[name]
    if case.outcome != WARNED:
        request.getfixturevalue("no_training")
    argv = [word.format(**places) for word in case.argv.split()]
    if argv[0] == "fit" and case.outcome != PARSE and not any("--out" in w for w in argv):
        argv += ["--out", places["out"], "--no-progress"]
    before = _digests(Path(places["run"])), Path(places["file"]).read_bytes()
    try:
        status = main(argv)
    except SystemExit as exit_info:
        status = exit_info.code
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert "Traceback" not in err and len(lines) == 1, err
    assert case.names.format(**places) in lines[0]
    if case.outcome == WARNED:
        assert status == 0 and lines[0].startswith("pyroext: warning: ")
    else:
        assert status == 2 and lines[0].startswith("pyroext: error: ")
    assert (_digests(Path(places["run"])), Path(places["file"]).read_bytes()) == before
    if case.outcome != WARNED:  # nothing made either
        assert not Path(places["fresh"]).exists() and not Path(places["out"]).exists()


def test_resume_continues_the_history(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    resumed, whole = tmp_path / "resumed", tmp_path / "whole"
    fit = ["fit", "bnn", *BNN_QUICK]
    assert main([*fit, "--steps", "3", "--out", str(resumed)]) == 0
    first = pd.read_csv(resumed / "losses.csv")["loss"].tolist()
    # Resuming ignores the seed: a run that started afresh with seed 1 would differ.
    assert main([*fit, "--steps", "5", "--seed", "1", "--out", str(resumed), "--resume"]) == 0
    assert main([*fit, "--steps", "5", "--out", str(whole)]) == 0
    losses = pd.read_csv(resumed / "losses.csv", index_col="step")["loss"]
    assert list(losses.index) == [1, 2, 3, 4, 5] and losses.iloc[:3].tolist() == first
    # a resumed run is the uninterrupted one, bit for bit
    assert losses.tolist() == pd.read_csv(whole / "losses.csv")["loss"].tolist()
    assert load_checkpoint(resumed / CHECKPOINT_FILE)["step"] == 5
    assert capsys.readouterr().err == ""


def test_overwrite_starts_afresh(finished_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    assert main(["fit", "bnn", "--steps", "4", *BNN_QUICK, "--out", str(out), "--overwrite"]) == 0
    assert len(pd.read_csv(out / "losses.csv")) == 4


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_shows_the_traceback(where: str, no_training: None) -> None:
    argv = ["fit", "vae", "--epochs", "2", "--steps", "3"]
    argv = ["--debug", *argv] if where == "before" else [*argv, "--debug"]
    with pytest.raises(ValueError, match="epochs=2 and steps=3 both set the training length"):
        main(argv)


def test_an_unexpected_error_keeps_its_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_: object, **__: object) -> None:
        raise RuntimeError("a bug, not a bad input")

    monkeypatch.setattr(lr_job, "run_svi", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["fit", "linear-regression", "--steps", "2", "--no-progress"])


def test_an_interrupt_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(*_: object, **__: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(lr_job, "run_svi", interrupted)
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "linear-regression", "--steps", "2", "--no-progress"])
    assert exit_info.value.code == 130
    assert capsys.readouterr().err == (
        "pyroext: interrupted; a fit with a checkpoint continues with --resume\n"
    )
