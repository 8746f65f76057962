import numpy as np
import pytest
import torch

from pyroext.infer.checkpoint import (
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


def test_failed_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"step": 1})

    def crash_midway(obj, file):
        file.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash_midway)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"step": 2})
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_missing_checkpoint_names_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        load_checkpoint(tmp_path / "none.pt")


def test_rng_state_round_trip():
    state = capture_rng_state()
    first = (torch.rand(3), np.random.rand(3))
    restore_rng_state(state)
    second = (torch.rand(3), np.random.rand(3))
    assert torch.equal(first[0], second[0]) and np.array_equal(first[1], second[1])
