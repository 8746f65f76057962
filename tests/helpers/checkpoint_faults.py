"""Models, runs and damaged files for ``tests/reliability/test_checkpoint_faults.py``.

A case acts on an :class:`Env` (the files of a finished 10-step run, copied afresh for each
case): ``resume``, ``fresh_run``, ``load`` and ``load_saved_guide`` build its action;
``flip``, ``truncate``, ``other_digest`` and ``write`` put a damaged or foreign file at
``Env.bad`` first; :func:`model` injects the fault that ``FAULT`` names.
"""

import hashlib
import io
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import pyro
import pyro.distributions as dist
import torch
from pyro.infer.autoguide import AutoNormal
from pyro.nn import PyroModule

from pyroext.infer import load_guide, run_svi
from pyroext.infer.checkpoint import load_checkpoint

SAVED_STEPS = 10
FAULT: dict[str, Any] = {}
"""The fault the model injects: ``kind`` at its ``at``-th call (the resumed run's warm-up
makes two calls, so step ``s`` after resuming from step 10 is call ``s - 8``), as a
case's ``fault`` says."""


def data(columns: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(20, columns, generator=generator)
    return x, x.sum(-1) + 0.1 * torch.randn(20, generator=generator)


def model(x: torch.Tensor, y: torch.Tensor | None = None) -> None:
    FAULT["calls"] = FAULT.get("calls", 0) + 1
    scale = pyro.param("scale", torch.tensor(0.5), constraint=dist.constraints.positive)
    if FAULT.get("at") == FAULT["calls"]:
        scale = _inject(FAULT["kind"], scale)
    w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([x.shape[1]]).to_event(1))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("obs", dist.Normal(x @ w, scale, validate_args=False), obs=y)


def _inject(kind: str, scale: torch.Tensor) -> torch.Tensor:
    if kind == "crash":
        raise RuntimeError("the model crashed")
    if kind == "nan-loss":
        return scale * float("nan")
    factor = float("nan") if kind == "nan-grad" else float("inf")
    scale.register_hook(lambda grad: grad * factor)  # the loss of this step stays finite
    return scale


def other_model(x: torch.Tensor, y: torch.Tensor | None = None) -> None:
    v = pyro.sample("v", dist.Normal(0.0, 1.0).expand([x.shape[1]]).to_event(1))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("obs", dist.Normal(x @ v, 0.5), obs=y)


class Counting(PyroModule):
    """A model whose buffer turns NaN from its eighth call (step 7) while the loss stays
    finite."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("seen", torch.zeros(()))
        self.calls = 0

    def forward(self) -> None:
        self.calls += 1
        self.seen.fill_(float("nan") if self.calls >= 8 else self.calls)
        pyro.sample("z", dist.Normal(0.0, 1.0))


def reward() -> None:
    pyro.factor("reward", 1e-3 * pyro.param("p", torch.tensor(0.0)))


class Env(NamedTuple):
    """The files of a case: ``checkpoint`` (a 10-step run of :func:`model`), ``guide`` (its
    guide, saved), ``bad`` (where a case puts a damaged or foreign file), ``file`` (a text
    file) and ``folder`` (holding them all)."""

    folder: Path
    checkpoint: Path
    guide: Path
    bad: Path
    file: Path


def resume(path: str = "checkpoint", fit: Callable = model, **options: Any) -> Callable:
    """A run of ``fit`` resumed from ``Env.<path>`` to 20 steps, checkpointing every 5;
    ``options`` may change the ``guide`` class, ``num_steps`` and ``data``."""

    def act(env: Env) -> object:
        chosen = {"guide": AutoNormal, "num_steps": 20, "data": data(), **options}
        return run_svi(
            fit,
            chosen["guide"](fit),
            *chosen["data"],
            num_steps=chosen["num_steps"],
            checkpoint=getattr(env, path),
            checkpoint_every=5,
            resume=True,
            progress=False,
        )

    return act


def fresh_run(build: Callable[[], tuple[Callable, Callable]], **options: Any) -> Callable:
    """A run from scratch of ``build()``'s model and guide, by default checkpointing to
    ``new.pt``; string options are paths with placeholders for :class:`Env`'s fields."""

    def act(env: Env) -> object:
        chosen = {"checkpoint": str(env.folder / "new.pt"), **options}
        places = {key: str(value) for key, value in env._asdict().items()}
        chosen = {k: v.format(**places) if isinstance(v, str) else v for k, v in chosen.items()}
        return run_svi(*build(), progress=False, **chosen)

    return act


def normal() -> tuple[Callable, Callable]:
    return model, AutoNormal(model)


def counting() -> tuple[Callable, Callable]:
    module = Counting()
    return module, AutoNormal(module)


def load(path: str = "bad") -> Callable:
    return lambda env: load_checkpoint(getattr(env, path))


def load_saved_guide(path: str = "bad") -> Callable:
    return lambda env: load_guide(AutoNormal(model), getattr(env, path), *data())


def flip(offset: Callable[[bytes], int], source: str = "checkpoint") -> Callable:
    """Copies a saved file to ``bad`` with one bit flipped at ``offset(content)``."""

    def prepare(env: Env) -> None:
        content = bytearray(getattr(env, source).read_bytes())
        content[offset(bytes(content))] ^= 0x10
        env.bad.write_bytes(bytes(content))

    return prepare


def truncate(length: Callable[[bytes], int], source: str = "checkpoint") -> Callable:
    def prepare(env: Env) -> None:
        content = getattr(env, source).read_bytes()
        env.bad.write_bytes(content[: length(content)])

    return prepare


def other_digest(env: Env) -> None:
    """Copies the checkpoint to ``bad`` with one hex digit of its digest changed."""
    content = bytearray(env.checkpoint.read_bytes())
    index = header_length(bytes(content)) - 3
    content[index] = ord("1") if content[index] == ord("0") else ord("0")
    env.bad.write_bytes(bytes(content))


def write(content: Callable[[Env], bytes]) -> Callable:
    return lambda env: env.bad.write_bytes(content(env))


def header_length(content: bytes) -> int:
    return content.index(b"\n") + 1


def forged(obj: Any, file_format: int = 1) -> bytes:
    """A file with a valid header and digest around ``torch.save(obj)``: digests are no
    defence against a forger, only against damage, so the payload must be safe on its own."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    payload = buffer.getvalue()
    digest = hashlib.sha256(payload).hexdigest().encode()
    return b"PYROEXT-CHECKPOINT %d %d %s\n" % (file_format, len(payload), digest) + payload


class Marker:
    """Unpickling it would create the file ``marker``: proof that loading ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


def zip_archive(env: Env) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("notes.txt", "not a checkpoint")
    return buffer.getvalue()


def plain_torch_save(env: Env) -> bytes:
    buffer = io.BytesIO()
    torch.save({"step": 10, "losses": torch.zeros(10)}, buffer)
    return buffer.getvalue()
