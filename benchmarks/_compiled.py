"""Contenders of the compiled-SVI benchmarks (``compiled_svi.py``, ``compiled_scaling.py``,
``compiled_dais.py``): one SVI problem run by NumPyro, plain PyTorch, Pyro and pyroext.

Every contender runs in the calling process on the same float32 data, on one thread (torch and
XLA alike), one particle, Adam, and returns ms/step after :data:`WARMUP` untimed steps (jit
tracing, recording and compiling). NumPyro and JAX come from the ``bench`` extra (``pip
install -e '.[bench]'``); without them :func:`with_numpyro` drops the NumPyro contenders.
"""

import argparse
import contextlib
import functools
import math
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from types import SimpleNamespace
from typing import Any, NamedTuple

import pyro
import pyro.distributions as dist
import torch
from _harness import Options, begin, interleave, loop_seconds, median
from pyro.infer import SVI, JitTrace_ELBO, Trace_ELBO
from pyro.infer.autoguide import AutoMultivariateNormal, AutoNormal
from torch import Tensor
from torch.distributions import LogNormal, MultivariateNormal, Normal
from torch.nn.functional import softplus

from pyroext.guides import AutoDAIS
from pyroext.infer import FusedOptim, TensorSVI, run_svi
from pyroext.infer.compiled import CompiledTrace_ELBO

SEED = 0
WARMUP = 10
INIT_SCALE = 0.1  # the autoguides' default initial scale, copied by the hand-written guides
BLR_LR = 0.01
NOISE = 0.5  # noise sd of the synthetic data, and the known noise of the DAIS regression
PYRO_GUIDES: dict[str, Callable[..., Any]] = {
    "AutoNormal": AutoNormal,
    "AutoMultivariateNormal": AutoMultivariateNormal,
    "AutoDAIS": AutoDAIS,
}
NUMPYRO_LOOP = "NumPyro jit(svi.update) loop"
HAND_TORCH = "PyTorch by hand, eager"
PYRO_TRACE = "Pyro SVI, Trace_ELBO"
COMPILED = "pyroext compiled (TensorSVI + CompiledTrace_ELBO)"

type Contender = Callable[["Problem", int], float]


class Problem(NamedTuple):
    """A model in Pyro and in NumPyro, its float32 arguments, the guide and Adam's rate.

    ``guide`` names the autoguide in both libraries; ``guide_options`` are its keyword
    arguments, the same in both.
    """

    model: Callable[..., None]
    numpyro_model: Callable[..., None]
    args: tuple[Tensor, ...]
    guide: str
    lr: float
    guide_options: tuple[tuple[str, Any], ...] = ()

    def pyro_guide(self) -> Callable[..., Any]:
        """A fresh Pyro autoguide."""
        return PYRO_GUIDES[self.guide](self.model, **dict(self.guide_options))


# --- NumPyro, imported lazily: XLA reads its thread flags when JAX starts --------------------


@functools.cache
def jax_modules() -> SimpleNamespace | None:
    """NumPyro and JAX on the CPU, or ``None`` (with a note) if they are missing."""
    try:
        import jax
        import numpyro
        import numpyro.distributions
        import numpyro.infer.autoguide
        import numpyro.optim
    except ImportError:
        print("# NumPyro/JAX not installed, NumPyro rows skipped: pip install -e '.[bench]'")
        return None
    jax.config.update("jax_platform_name", "cpu")
    return SimpleNamespace(
        jax=jax,
        jnp=jax.numpy,
        numpyro=numpyro,
        dist=numpyro.distributions,
        autoguide=numpyro.infer.autoguide,
        optim=numpyro.optim,
        SVI=numpyro.infer.SVI,
        Trace_ELBO=numpyro.infer.Trace_ELBO,
    )


def with_numpyro[T](contenders: Mapping[str, T]) -> dict[str, T]:
    """``contenders`` without the NumPyro ones when NumPyro is missing."""
    if jax_modules() is not None:
        return dict(contenders)
    return {name: fn for name, fn in contenders.items() if not name.startswith("NumPyro")}


def numpyro_svi(problem: Problem) -> tuple[Any, tuple[Any, ...]]:
    """A fresh NumPyro SVI for ``problem`` and its arguments as JAX arrays."""
    nx = jax_modules()
    make_guide = getattr(nx.autoguide, problem.guide)
    guide = make_guide(problem.numpyro_model, **dict(problem.guide_options))
    svi = nx.SVI(problem.numpyro_model, guide, nx.optim.Adam(problem.lr), nx.Trace_ELBO())
    return svi, tuple(nx.jnp.asarray(a.numpy()) for a in problem.args)


def numpyro_loop(problem: Problem, steps: int) -> float:
    """ms/step of ``jax.jit(svi.update)`` called from a Python loop."""
    nx = jax_modules()
    svi, args = numpyro_svi(problem)
    update = nx.jax.jit(svi.update)
    state = svi.init(nx.jax.random.PRNGKey(SEED), *args)

    def loop(n: int) -> None:
        nonlocal state
        for _ in range(n):
            state, loss = update(state, *args)
        loss.block_until_ready()

    return 1000 * loop_seconds(loop, steps, warmup=WARMUP)[0] / steps


# --- PyTorch, Pyro and pyroext ---------------------------------------------------------------


def call_ms(step: Callable[[], Any], steps: int) -> float:
    """ms/step of ``steps`` calls of ``step`` after :data:`WARMUP` untimed ones."""

    def loop(n: int) -> None:
        for _ in range(n):
            last = step()
        if isinstance(last, Tensor):
            last.item()  # compiled steps return the loss without a sync

    return 1000 * loop_seconds(loop, steps, warmup=WARMUP)[0] / steps


def _inverse_softplus(value: float) -> float:
    return math.log(math.expm1(value))


def _torch_guide(guide: str, dim: int) -> tuple[list[Tensor], Callable[[], tuple[Tensor, Tensor]]]:
    """The parameters of a hand-written Gaussian guide and a draw of ``(z, log q(z))``."""
    loc = torch.zeros(dim, requires_grad=True)
    if guide == "AutoNormal":
        raw_scale = torch.full((dim,), _inverse_softplus(INIT_SCALE), requires_grad=True)

        def draw() -> tuple[Tensor, Tensor]:
            q = Normal(loc, softplus(raw_scale))
            z = q.rsample()
            return z, q.log_prob(z).sum()

        return [loc, raw_scale], draw
    raw_tril = torch.eye(dim) * _inverse_softplus(INIT_SCALE)
    raw_tril.requires_grad_()

    def draw() -> tuple[Tensor, Tensor]:
        scale_tril = raw_tril.tril(-1) + torch.diag_embed(softplus(raw_tril.diagonal()))
        q = MultivariateNormal(loc, scale_tril=scale_tril)
        z = q.rsample()
        return z, q.log_prob(z)

    return [loc, raw_tril], draw


def _blr_log_joint(z: Tensor, x: Tensor, y: Tensor) -> Tensor:
    """``log p(y, w, sigma)`` at ``z = (w, log sigma)``, with the log-Jacobian of ``exp``."""
    w, log_sigma = z[:-1], z[-1]
    sigma = log_sigma.exp()
    log_prior = Normal(0.0, 1.0).log_prob(w).sum() + LogNormal(0.0, 1.0).log_prob(sigma)
    return log_prior + log_sigma + Normal(x @ w, sigma).log_prob(y).sum()


def torch_blr(problem: Problem, steps: int) -> float:
    """ms/step of the regression's reparameterised ELBO written by hand, eager PyTorch."""
    x, y = problem.args
    params, draw = _torch_guide(problem.guide, x.shape[1] + 1)
    optim = torch.optim.Adam(params, lr=problem.lr)

    def step() -> None:
        z, log_q = draw()
        loss = log_q - _blr_log_joint(z, x, y)
        optim.zero_grad()
        loss.backward()
        optim.step()

    return call_ms(step, steps)


def pyro_svi(problem: Problem, steps: int, jit: bool = False) -> float:
    """ms/step of Pyro's ``SVI.step`` with per-parameter ``pyro.optim.Adam``."""
    pyro.clear_param_store()
    pyro.set_rng_seed(SEED)
    guide = problem.pyro_guide()
    elbo = JitTrace_ELBO() if jit else Trace_ELBO()
    svi = SVI(problem.model, guide, pyro.optim.Adam({"lr": problem.lr}), elbo)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation
        return call_ms(lambda: svi.step(*problem.args), steps)


def fused_adam(lr: float) -> FusedOptim:
    """One torch Adam, fused, over every parameter."""
    return FusedOptim(torch.optim.Adam, {"lr": lr, "fused": True})


def pyroext_step(problem: Problem, steps: int, compiled: bool = True) -> float:
    """ms/step of ``TensorSVI.step_tensor`` with one fused Adam, compiled or eager ELBO."""
    pyro.clear_param_store()
    pyro.set_rng_seed(SEED)
    guide = problem.pyro_guide()
    elbo = CompiledTrace_ELBO() if compiled else Trace_ELBO()
    svi = TensorSVI(problem.model, guide, fused_adam(problem.lr), elbo)
    return call_ms(lambda: svi.step_tensor(*problem.args), steps)


def pyroext_end_to_end(problem: Problem, steps: int) -> tuple[float, float]:
    """Seconds of ``run_svi(compile=True)`` with a fresh guide, and its compile seconds."""
    pyro.clear_param_store()
    start = time.perf_counter()
    guide = problem.pyro_guide()
    result = run_svi(
        problem.model,
        guide,
        *problem.args,
        num_steps=steps,
        optim=fused_adam(problem.lr),
        seed=SEED,
        progress=False,
        compile=True,
    )
    return time.perf_counter() - start, result.compile_time


# --- the regression ----------------------------------------------------------------------------


def blr_model(x: Tensor, y: Tensor) -> None:
    """``w ~ N(0, 1)^D``, ``sigma ~ LogNormal(0, 1)``, ``y ~ N(x w, sigma)``."""
    w = pyro.sample("w", dist.Normal(x.new_zeros(x.shape[1]), 1.0).to_event(1))
    sigma = pyro.sample("sigma", dist.LogNormal(x.new_zeros(()), 1.0))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("y", dist.Normal(x @ w, sigma), obs=y)


def numpyro_blr_model(x: Any, y: Any) -> None:
    """:func:`blr_model` in NumPyro."""
    nx = jax_modules()
    w = nx.numpyro.sample("w", nx.dist.Normal(nx.jnp.zeros(x.shape[1]), 1.0).to_event(1))
    sigma = nx.numpyro.sample("sigma", nx.dist.LogNormal(0.0, 1.0))
    with nx.numpyro.plate("data", x.shape[0]):
        nx.numpyro.sample("y", nx.dist.Normal(x @ w, sigma), obs=y)


def regression_data(n: int, d: int, correlation: float = 0.0) -> tuple[Tensor, Tensor]:
    """Synthetic float32 ``(x, y)`` with a fixed seed; design columns equicorrelated."""
    generator = torch.Generator().manual_seed(SEED)
    cov = torch.full((d, d), correlation) + (1 - correlation) * torch.eye(d)
    x = torch.randn(n, d, generator=generator) @ torch.linalg.cholesky(cov).T
    w = torch.randn(d, generator=generator)
    return x, x @ w + NOISE * torch.randn(n, generator=generator)


def blr_problem(n: int, d: int, guide: str) -> Problem:
    """The regression with ``n`` points of ``d`` features, for ``guide``."""
    return Problem(blr_model, numpyro_blr_model, regression_data(n, d), guide, BLR_LR)


# --- running -----------------------------------------------------------------------------------


def per_step(
    contenders: Mapping[str, Contender], problem: Problem, steps: int, repeats: int
) -> dict[str, float]:
    """Median ms/step of each contender on ``problem``, interleaved over ``repeats``."""
    bound = {name: functools.partial(fn, problem, steps) for name, fn in contenders.items()}
    return {name: median(values) for name, values in interleave(bound, repeats).items()}


def options(doc: str | None, *, steps: int, quick_steps: int) -> Options:
    """The options every compiled benchmark has: steps, repeats and inductor's cache."""
    result = Options(doc)
    result.timing(steps=steps, quick_steps=quick_steps)
    result.add(
        "--fresh-inductor-cache",
        full=True,
        quick=False,
        action=argparse.BooleanOptionalAction,
        help="start inductor's on-disk cache empty, so that first compiles are cold",
    )
    return result


@contextlib.contextmanager
def session(args: argparse.Namespace, *lines: str) -> Iterator[None]:
    """float32, the header (with ``lines``), and inductor's cache empty if asked for."""
    torch.set_default_dtype(torch.float32)
    with tempfile.TemporaryDirectory(prefix="inductor-") as cache:
        if args.fresh_inductor_cache:
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
        kind = "fresh (first compile cold)" if args.fresh_inductor_cache else "shared on disk"
        begin(
            args,
            f"float32; median of {args.repeats} interleaved repeats; {WARMUP} untimed warm-up "
            f"steps; inductor cache {kind}",
            *lines,
        )
        yield
