"""Checkpoints and saved guides against damage, foreign files, mismatched runs and training
that diverges, through ``run_svi``, ``load_checkpoint``, ``load_guide`` and ``save_guide``.

Each case names the exception it must raise, what its message must name (the file or the
argument), and its outcome: ``refused-on-load`` (a file that is not a sound checkpoint or
saved guide), ``refused-before-training`` (a sound file or option that does not fit the run),
``stopped-checkpoint-kept`` (training that diverges or crashes stops with the last good
checkpoint on disk) or ``refused-on-save`` (a destination or state that cannot be written).
In every case, the files saved before it are unchanged byte for byte afterwards. The totals
by outcome are ``Counter(case.outcome for case in CASES.values())``.
"""

import hashlib
import io
import pickle
import shutil
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyro
import pytest
import torch
from checkpoint_faults import (
    FAULT,
    SAVED_STEPS,
    Env,
    Marker,
    counting,
    data,
    flip,
    forged,
    fresh_run,
    header_length,
    load,
    load_saved_guide,
    model,
    normal,
    other_digest,
    other_model,
    plain_torch_save,
    resume,
    reward,
    truncate,
    write,
    zip_archive,
)
from pyro.infer.autoguide import AutoDelta, AutoNormal

from pyroext.infer import NonFiniteLossError, NonFiniteParameterError, run_svi, save_guide
from pyroext.infer.checkpoint import load_checkpoint, save_checkpoint

pytestmark = pytest.mark.filterwarnings("ignore:Encountered NaN:UserWarning")

LOAD, BEFORE = "refused-on-load", "refused-before-training"
STOPPED, SAVE = "stopped-checkpoint-kept", "refused-on-save"


class Case(NamedTuple):
    act: Callable[[Env], object]
    error: type[BaseException]
    outcome: str
    names: str  # in the message, after .format(**env._asdict())
    prepare: Callable[[Env], None] | None = None
    kept: int | None = None  # the step the run's own checkpoint holds after a stop
    creates: str | None = None  # the file a stopped fresh run wrote
    fault: tuple[str, int] | None = None  # what the model injects at which resumed step


NOT_OURS = "{bad}' is not a pyroext checkpoint"
CORRUPT = "{bad}' is corrupt: its content does not match its sha256 digest"
TRUNCATED = "{bad}' is truncated"
FAULTY = "{bad}' is damaged or truncated: its header line is malformed"
FOREIGN_OBJECTS = "{bad}' holds objects other than tensors and plain containers"

CASES = {
    # bit flips in the magic, the format, the length, the digest and the payload
    "flip-magic": Case(load(), ValueError, LOAD, NOT_OURS, flip(lambda c: 0)),
    "flip-format": Case(load(), ValueError, LOAD, FAULTY, flip(lambda c: 19)),
    "flip-length": Case(load(), ValueError, LOAD, "{bad}' is", flip(lambda c: 22)),
    "flip-digest": Case(load(), ValueError, LOAD, CORRUPT, other_digest),
    "flip-payload-start": Case(load(), ValueError, LOAD, CORRUPT, flip(header_length)),
    "flip-payload-middle": Case(load(), ValueError, LOAD, CORRUPT, flip(lambda c: len(c) // 2)),
    "flip-last-byte": Case(load(), ValueError, LOAD, CORRUPT, flip(lambda c: len(c) - 1)),
    "flip-resume": Case(resume("bad"), ValueError, LOAD, CORRUPT, flip(lambda c: len(c) // 3)),
    "flip-guide": Case(
        load_saved_guide(), ValueError, LOAD, CORRUPT, flip(lambda c: len(c) // 2, "guide")
    ),
    # truncated copies, down to nothing
    "truncated-empty": Case(
        load(), ValueError, LOAD, "it is empty (0 bytes)", truncate(lambda c: 0)
    ),
    "truncated-in-magic": Case(load(), ValueError, LOAD, NOT_OURS, truncate(lambda c: 7)),
    "truncated-in-header": Case(load(), ValueError, LOAD, FAULTY, truncate(lambda c: 40)),
    "truncated-header-only": Case(load(), ValueError, LOAD, TRUNCATED, truncate(header_length)),
    "truncated-half": Case(load(), ValueError, LOAD, TRUNCATED, truncate(lambda c: len(c) // 2)),
    "truncated-last-byte": Case(
        load(), ValueError, LOAD, TRUNCATED, truncate(lambda c: len(c) - 1)
    ),
    "truncated-resume": Case(resume("bad"), ValueError, LOAD, TRUNCATED, truncate(lambda c: 999)),
    "truncated-guide": Case(
        load_saved_guide(), ValueError, LOAD, TRUNCATED, truncate(lambda c: 300, "guide")
    ),
    "appended-bytes": Case(
        load(), ValueError, LOAD, CORRUPT, write(lambda env: env.checkpoint.read_bytes() + b"\0")
    ),
    # files that are not checkpoints
    "foreign-text": Case(load(), ValueError, LOAD, NOT_OURS, write(lambda env: b"step=10\n")),
    "foreign-torch-save": Case(load(), ValueError, LOAD, "zip archive", write(plain_torch_save)),
    "foreign-zip": Case(load(), ValueError, LOAD, NOT_OURS, write(zip_archive)),
    "foreign-pickle": Case(
        load(), ValueError, LOAD, "bare pickle", write(lambda env: pickle.dumps({"step": 10}))
    ),
    "foreign-guide-file": Case(
        load_saved_guide(), ValueError, LOAD, "zip archive", write(plain_torch_save)
    ),
    "foreign-resume": Case(resume("bad"), ValueError, LOAD, NOT_OURS, write(lambda env: b"{}")),
    # forged headers: a valid digest around objects that are not tensors and plain containers
    "forged-code": Case(
        load(),
        ValueError,
        LOAD,
        FOREIGN_OBJECTS,
        write(lambda env: forged({"step": 1, "x": Marker(env.folder / "marker")})),
    ),
    "forged-code-guide": Case(
        load_saved_guide(),
        ValueError,
        LOAD,
        FOREIGN_OBJECTS,
        write(lambda env: forged({"guide_class": Marker(env.folder / "marker")})),
    ),
    "forged-numpy-pickle": Case(
        load(), ValueError, LOAD, FOREIGN_OBJECTS, write(lambda env: forged(np.arange(3)))
    ),
    "forged-constraint-class": Case(
        load(),
        ValueError,
        LOAD,
        "holds a constraint 'os.system' that no imported module defines",
        write(lambda env: forged({"__pyroext_type__": "constraint", "class": "os.system"})),
    ),
    "forged-format": Case(
        load(), ValueError, LOAD, "another pyroext version", write(lambda env: forged({}, 7))
    ),
    # sound files of the wrong kind, folders and missing files
    "guide-file-as-checkpoint": Case(resume("guide"), ValueError, LOAD, "{guide}' holds training"),
    "checkpoint-as-guide-file": Case(
        load_saved_guide("checkpoint"), ValueError, LOAD, "{checkpoint}' is a pyroext checkpoint"
    ),
    "folder-load": Case(load("folder"), IsADirectoryError, LOAD, "{folder}' is a folder"),
    "folder-guide": Case(load_saved_guide("folder"), IsADirectoryError, LOAD, "{folder}' is a"),
    "missing-resume": Case(resume("bad"), FileNotFoundError, LOAD, "{bad}' does not exist"),
    "missing-guide": Case(load_saved_guide(), FileNotFoundError, LOAD, "{bad}' does not exist"),
    # sound checkpoints that do not fit the run, and options refused before any step
    "resume-other-model": Case(
        resume(fit=other_model), ValueError, BEFORE, "{checkpoint}' was written for another"
    ),
    "resume-other-shapes": Case(
        resume(data=data(3)), ValueError, BEFORE, "'AutoNormal.locs.w' has shape (2,) there, (3,)"
    ),
    "resume-other-guide": Case(
        resume(guide=AutoDelta), ValueError, BEFORE, "AutoNormal guide, this run's guide is a"
    ),
    "resume-fewer-steps": Case(
        resume(num_steps=5), ValueError, BEFORE, "holds 10 steps and num_steps=5 is fewer"
    ),
    "checkpoint-below-file": Case(
        fresh_run(normal, num_steps=5, checkpoint="{file}/c.pt"),
        ValueError,
        BEFORE,
        "{file}' is a file, not a folder",
    ),
    "checkpoint-is-folder": Case(
        fresh_run(normal, num_steps=5, checkpoint="{folder}"),
        ValueError,
        BEFORE,
        "checkpoint='{folder}' is a folder",
    ),
    "checkpoint-every-zero": Case(
        fresh_run(normal, num_steps=5, checkpoint_every=0),
        ValueError,
        BEFORE,
        "checkpoint_every=0",
    ),
    # training that diverges or crashes after resuming: the checkpoint of step 10 stays
    # (at step 15, a checkpoint step, whose loss is computed before the update: finite)
    "nan-gradient": Case(
        resume(),
        NonFiniteParameterError,
        STOPPED,
        "parameter 'scale' is nan after step 15 (all finite after step 10)",
        fault=("nan-grad", 15),
    ),
    "inf-gradient": Case(
        resume(), NonFiniteParameterError, STOPPED, "parameter 'scale' is", fault=("inf-grad", 15)
    ),
    "nan-loss": Case(
        resume(), NonFiniteLossError, STOPPED, "loss is nan at step 13", fault=("nan-loss", 13)
    ),
    "crash": Case(
        resume(),
        RuntimeError,
        STOPPED,
        "step 13 failed; checkpoint '{checkpoint}'",
        fault=("crash", 13),
    ),
    # ... or in a fresh run, whose own checkpoint keeps its last finite state
    "nan-buffer": Case(
        fresh_run(counting, num_steps=20, checkpoint_every=3),
        NonFiniteParameterError,
        STOPPED,
        "model state 'seen' is nan after step 9",
        kept=6,
        creates="new.pt",
    ),
    "overflowing-update": Case(
        fresh_run(
            lambda: (reward, lambda: None),
            num_steps=100,
            checkpoint_every=5,
            optim=pyro.optim.Adam({"lr": 1e37}),
        ),
        NonFiniteParameterError,
        STOPPED,
        "parameter 'p' is inf after step 35 (all finite after step 30)",
        kept=30,
        creates="new.pt",
    ),
    # destinations and states that cannot be written
    "save-guide-below-file": Case(
        lambda env: save_guide(AutoNormal(model), env.file / "guide.pt"),
        ValueError,
        SAVE,
        "{file}' is a file, not a folder",
    ),
    "save-guide-onto-folder": Case(
        lambda env: save_guide(AutoNormal(model), env.folder),
        ValueError,
        SAVE,
        "path='{folder}' is a folder",
    ),
    "save-unsupported-state": Case(
        lambda env: save_checkpoint(env.checkpoint, {"step": 11, "hook": print}),
        TypeError,
        SAVE,
        "state['hook'] is a builtins.builtin_function_or_method",
    ),
}


def test_enough_cases_with_known_outcomes() -> None:
    totals = Counter(case.outcome for case in CASES.values())
    assert set(totals) == {LOAD, BEFORE, STOPPED, SAVE} and sum(totals.values()) >= 30


def test_the_forged_code_would_run_if_loaded_without_weights_only(tmp_path: Path) -> None:
    """The control of the ``forged-code`` cases: their payload is no dud."""
    payload = forged({"x": Marker(tmp_path / "marker")}).split(b"\n", 1)[1]
    torch.load(io.BytesIO(payload), weights_only=False)
    assert (tmp_path / "marker").exists()


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 10-step checkpoint of :func:`model` and its guide, saved."""
    folder = tmp_path_factory.mktemp("saved")
    pyro.clear_param_store()
    guide = AutoNormal(model)
    run_svi(
        model, guide, *data(), num_steps=SAVED_STEPS, checkpoint=folder / "c.pt",
        checkpoint_every=5, progress=False, seed=0,
    )  # fmt: skip
    save_guide(guide, folder / "guide.pt")
    pyro.clear_param_store()
    return folder


@pytest.fixture
def env(saved: Path, tmp_path: Path) -> Iterator[Env]:
    folder = tmp_path / "run"
    shutil.copytree(saved, folder)
    (folder / "file.txt").write_text("not a folder\n")
    FAULT.clear()
    yield Env(folder, folder / "c.pt", folder / "guide.pt", folder / "bad.pt", folder / "file.txt")
    FAULT.clear()


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


@pytest.mark.parametrize("name", sorted(CASES), ids=lambda name: f"{CASES[name].outcome}:{name}")
def test_fault(name: str, env: Env) -> None:
    case = CASES[name]
    if case.prepare is not None:
        case.prepare(env)
    if case.fault is not None:
        kind, step = case.fault
        FAULT.update(kind=kind, at=step - SAVED_STEPS + 2)
    places = {key: str(value) for key, value in env._asdict().items()}
    before = _digests(env.folder)
    with pytest.raises(case.error) as error:
        case.act(env)
    message = " ".join([str(error.value), *getattr(error.value, "__notes__", [])])
    assert case.names.format(**places) in message
    after = _digests(env.folder)
    if case.creates is not None:
        del after[case.creates]
    assert after == before  # nothing saved before changed, nothing else written
    assert not (env.folder / "marker").exists()  # no code ran
    if case.outcome == BEFORE:  # the param store is as the refused run found it
        assert not list(pyro.get_param_store().keys())
    if case.outcome == STOPPED:
        _assert_kept(case, env, message)


def _assert_kept(case: Case, env: Env, message: str) -> None:
    path = env.folder / case.creates if case.creates else env.checkpoint
    step = case.kept or SAVED_STEPS
    assert f"checkpoint '{path}' is intact (step {step})" in message
    state = load_checkpoint(path)
    assert state["step"] == step and np.isfinite(state["losses"]).all()
    assert all(torch.isfinite(p).all() for p in state["param_store"]["params"].values())
