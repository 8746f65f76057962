"""Checkpoint files: the round trip, atomic writes, the checksummed layout, loading without
running code, permissions that follow the umask and the removal of orphaned temporaries."""

import hashlib
import io
import os
import re
import subprocess
import sys
import time
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch.distributions import constraints

from pyroext.infer.checkpoint import (
    atomic_target,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)


def test_round_trip(tmp_path):
    state = {"step": 3, "losses": np.arange(3.0), "tensor": torch.randn(4)}
    save_checkpoint(tmp_path / "sub" / "c.pt", state)
    loaded = load_checkpoint(tmp_path / "sub" / "c.pt")
    assert loaded["step"] == 3 and np.array_equal(loaded["losses"], state["losses"])
    assert torch.equal(loaded["tensor"], state["tensor"])


def test_round_trip_of_arrays_constraints_and_containers(tmp_path):
    module_state = torch.nn.Linear(2, 1).state_dict()
    state = {
        "arrays": [np.arange(5, dtype=np.uint32), np.array([[True, False]]), np.float32(2.5)],
        "big_endian": np.arange(3, dtype=">f8"),
        "empty": np.zeros((0, 3)),
        "rng": capture_rng_state(),
        "constraints": {
            "interval": constraints.interval(0.0, torch.tensor([1.0, 2.0])),
            "independent": constraints.independent(constraints.positive, 1),
            "cat": constraints.cat([constraints.real, constraints.positive], lengths=[1, 2]),
        },
        "module": module_state,
        "plain": (1, 2.5, "x", None, b"raw", [True], torch.Size([2, 3]), torch.float16),
    }
    save_checkpoint(tmp_path / "c.pt", state)
    loaded = load_checkpoint(tmp_path / "c.pt")
    for saved, restored in zip(state["arrays"][:2], loaded["arrays"][:2], strict=True):
        assert restored.dtype == saved.dtype and np.array_equal(restored, saved)
    assert loaded["arrays"][2] == 2.5 and loaded["big_endian"].dtype == np.dtype(">f8")
    assert loaded["empty"].shape == (0, 3)
    assert loaded["plain"] == state["plain"]
    assert isinstance(loaded["module"], OrderedDict)
    assert loaded["module"]._metadata == module_state._metadata
    interval = loaded["constraints"]["interval"]
    assert type(interval) is type(state["constraints"]["interval"])
    assert torch.equal(interval.upper_bound, torch.tensor([1.0, 2.0]))
    assert loaded["constraints"]["independent"].base_constraint.lower_bound == 0.0
    assert loaded["constraints"]["cat"].check(torch.tensor([-1.0, 1.0, 2.0])).all()
    restore_rng_state(loaded["rng"])
    first = np.random.rand(2)
    restore_rng_state(state["rng"])
    assert np.array_equal(first, np.random.rand(2))


def test_file_is_a_header_and_a_checksummed_payload(tmp_path):
    save_checkpoint(tmp_path / "c.pt", {"step": 1})
    header, payload = (tmp_path / "c.pt").read_bytes().split(b"\n", 1)
    fields = re.fullmatch(rb"PYROEXT-CHECKPOINT 1 (\d+) ([0-9a-f]{64})", header)
    assert fields and int(fields[1]) == len(payload)
    assert fields[2].decode() == hashlib.sha256(payload).hexdigest()
    assert torch.load(io.BytesIO(payload), weights_only=True) == {"step": 1}


def test_unsupported_object_is_refused_before_writing(tmp_path):
    with pytest.raises(TypeError, match=r"state\['optim'\]\['hook'\] is a builtins.object"):
        save_checkpoint(tmp_path / "c.pt", {"optim": {"hook": object()}})
    assert not list(tmp_path.iterdir())


class _Marker:
    """Unpickling it would create a file: the proof that loading runs code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_file_that_would_run_code_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "marker"
    buffer = io.BytesIO()
    torch.save({"step": 1, "evil": _Marker(marker)}, buffer)  # the digest is easy to forge
    payload = buffer.getvalue()
    digest = hashlib.sha256(payload).hexdigest().encode()
    path = tmp_path / "c.pt"
    path.write_bytes(b"PYROEXT-CHECKPOINT 1 %d %s\n" % (len(payload), digest) + payload)
    with pytest.raises(ValueError, match="holds objects other than tensors and plain containers"):
        load_checkpoint(path)
    assert not marker.exists()


def test_failed_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"step": 1})

    def crash_midway(handle):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", crash_midway)  # after the bytes are written, before rename
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"step": 2})
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_missing_checkpoint_names_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        load_checkpoint(tmp_path / "none.pt")


def test_folder_is_refused(tmp_path):
    with pytest.raises(IsADirectoryError, match=f"checkpoint='{tmp_path}' is a folder"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_written_files_follow_the_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        save_checkpoint(tmp_path / "c.pt", {"step": 1})
        with atomic_target(tmp_path / "table.csv") as temporary:
            temporary.write_text("a\n")
    finally:
        os.umask(previous)
    for name in ("c.pt", "table.csv"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask


def _dead_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_orphaned_temporaries_of_the_target_are_removed(tmp_path):
    old = time.time() - 3600
    names = {
        f".c.pt.{_dead_pid()}-abcdefgh.tmp": False,  # its writer was killed
        ".c.pt.k1lled_0.tmp": False,  # an old one of a version without process ids
        ".c.pt.recent_0.tmp": True,  # ... that may still be being written
        f".c.pt.{os.getppid()}-abcdefgh.tmp": True,  # a live writer
        f".c.pt.{os.getpid()}-abcdefgh.tmp": True,  # this process's own
        f".other.pt.{_dead_pid()}-abcdefgh.tmp": True,  # another target's
        ".c.pt.notes.txt": True,
    }
    for name in names:
        (tmp_path / name).write_text("partial")
    os.utime(tmp_path / ".c.pt.k1lled_0.tmp", (old, old))
    save_checkpoint(tmp_path / "c.pt", {"step": 1})
    kept = {name for name, keep in names.items() if keep}
    assert {p.name for p in tmp_path.iterdir()} == kept | {"c.pt"}


def test_rng_state_round_trip():
    state = capture_rng_state()
    first = (torch.rand(3), np.random.rand(3))
    restore_rng_state(state)
    second = (torch.rand(3), np.random.rand(3))
    assert torch.equal(first[0], second[0]) and np.array_equal(first[1], second[1])
