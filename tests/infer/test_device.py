from typing import NamedTuple

import pytest
import torch

from pyroext.infer.device import resolve_device, to_device


class Pair(NamedTuple):
    a: torch.Tensor
    b: int


def test_device_follows_inputs_then_default():
    assert resolve_device(None, 1, (torch.zeros(1, device="meta"),)) == torch.device("meta")
    assert resolve_device(None, {"x": torch.zeros(1, device="meta")}) == torch.device("meta")
    previous = torch.get_default_device()
    torch.set_default_device("meta")
    try:
        assert resolve_device(None, 3, "text") == torch.device("meta")
    finally:
        torch.set_default_device(previous)
    assert resolve_device("cpu", torch.zeros(1, device="meta")) == torch.device("cpu")


def test_to_device_walks_containers():
    value = {
        "pair": Pair(torch.zeros(2), 5),
        "list": [torch.ones(1), "s"],
        "module": torch.nn.Linear(2, 1),
    }
    moved = to_device(value, torch.device("meta"))
    assert isinstance(moved["pair"], Pair) and moved["pair"].a.is_meta and moved["pair"].b == 5
    assert moved["list"][0].is_meta and moved["list"][1] == "s"
    assert moved["module"].weight.is_meta


def test_invalid_device_names_argument():
    with pytest.raises(ValueError, match="device='tpu9' is not a torch device"):
        resolve_device("tpu9")
