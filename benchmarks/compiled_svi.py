"""Per-step cost of pyroext's compiled SVI step against NumPyro, plain PyTorch and Pyro.

Every contender runs in this process on the same float32 data, on one thread (torch and XLA
alike), one particle, Adam. Contenders are interleaved (each repeat runs every contender once
in turn) and the tables give the median over repeats. Sections:

* ``blr``: Bayesian linear regression (N=100, D=3, ``w ~ N(0, 1)^D``, ``sigma ~
  LogNormal(0, 1)``) with ``AutoNormal`` and ``AutoMultivariateNormal``: NumPyro's jitted
  ``svi.update`` in a Python loop, NumPyro's ``svi.run`` (its ``lax.scan``; a second call on
  the same SVI, and the scan under one ``jax.jit``), a hand-written eager PyTorch ELBO, Pyro's
  ``SVI`` with ``Trace_ELBO`` and ``JitTrace_ELBO``, and pyroext's ``TensorSVI`` with
  ``CompiledTrace_ELBO`` and one fused Adam; then end to end (compile included) for NumPyro's
  ``svi.run`` and pyroext's ``run_svi(compile=True)``.
* ``scaling``: the same regression with ``AutoNormal`` over N (D=3) and D (N=1000).
* ``dais``: ``AutoDAIS(K=8)`` (NumPyro's and pyroext's, each with its own defaults) on a
  correlated Gaussian regression and on Neal's funnel (d=10): NumPyro's jitted loop, pyroext
  eager (``Trace_ELBO``) and pyroext compiled.

Warm-up steps (jit tracing, recording and compiling) are left out of the per-step times. By
default inductor's on-disk cache starts empty in a temporary folder, so the first compile of
each graph in a run is cold and later ones are cache hits. NumPyro and JAX come from the
``bench`` extra (``pip install -e '.[bench]'``); without them the NumPyro rows are skipped.

    python benchmarks/compiled_svi.py [--section all] [--steps 2000] [--repeats 3] [--smoke]
"""

import argparse
import datetime
import functools
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, NamedTuple

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVI, JitTrace_ELBO, Trace_ELBO
from pyro.infer.autoguide import AutoMultivariateNormal, AutoNormal
from torch import Tensor
from torch.distributions import LogNormal, MultivariateNormal, Normal
from torch.nn.functional import softplus

import pyroext
from pyroext.guides import AutoDAIS
from pyroext.infer import FusedOptim, TensorSVI, run_svi
from pyroext.infer.compiled import CompiledTrace_ELBO

XLA_FLAGS = (
    "--xla_force_host_platform_device_count=1 --xla_cpu_multi_thread_eigen=false "
    "intra_op_parallelism_threads=1"
)
SEED = 0
WARMUP = 10  # untimed steps before each timed loop: jit tracing, recording, compiling
INIT_SCALE = 0.1  # the autoguides' default initial scale, copied by the hand-written guides
BLR_LR, DAIS_LR, DAIS_K = 0.01, 0.005, 8
NOISE = 0.5  # noise sd of the synthetic data, and the known noise of the DAIS regression
FUNNEL_DIM = 10
SCALING_N, SCALING_D = (100, 10_000, 1_000_000), (3, 30, 300)
SCALING_ELEMENTS = 100_000  # configurations with more N * D get proportionally fewer steps
BLR_GUIDES = ("AutoNormal", "AutoMultivariateNormal")
PYRO_GUIDES: dict[str, Callable[..., Any]] = {
    "AutoNormal": AutoNormal,
    "AutoMultivariateNormal": AutoMultivariateNormal,
    "AutoDAIS": functools.partial(AutoDAIS, K=DAIS_K),
}


class Problem(NamedTuple):
    """A model in Pyro and in NumPyro, its float32 arguments, the guide and Adam's rate."""

    model: Callable[..., None]
    numpyro_model: Callable[..., None]
    args: tuple[Tensor, ...]
    guide: str
    lr: float


# --- NumPyro, imported lazily -------------------------------------------------------------


@functools.cache
def _jax() -> SimpleNamespace | None:
    """NumPyro and JAX on one CPU thread, or ``None`` (with a note) if they are missing."""
    os.environ["XLA_FLAGS"] = XLA_FLAGS  # read when JAX starts its backend
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


def _numpyro_svi(problem: Problem) -> tuple[Any, tuple[Any, ...]]:
    """A fresh NumPyro SVI for ``problem`` and its arguments as JAX arrays."""
    nx = _jax()
    if problem.guide == "AutoDAIS":
        guide = nx.autoguide.AutoDAIS(problem.numpyro_model, K=DAIS_K)
    else:
        guide = getattr(nx.autoguide, problem.guide)(problem.numpyro_model)
    svi = nx.SVI(problem.numpyro_model, guide, nx.optim.Adam(problem.lr), nx.Trace_ELBO())
    return svi, tuple(nx.jnp.asarray(a.numpy()) for a in problem.args)


def numpyro_loop(problem: Problem, steps: int) -> float:
    """ms/step of ``jax.jit(svi.update)`` called from a Python loop."""
    nx = _jax()
    svi, args = _numpyro_svi(problem)
    update = nx.jax.jit(svi.update)
    state = svi.init(nx.jax.random.PRNGKey(SEED), *args)
    for _ in range(WARMUP):
        state, loss = update(state, *args)
    loss.block_until_ready()
    start = time.perf_counter()
    for _ in range(steps):
        state, loss = update(state, *args)
    loss.block_until_ready()
    return _ms_per_step(start, steps)


def numpyro_run_again(problem: Problem, steps: int) -> float:
    """ms/step of a second ``svi.run`` call on the same SVI (``progress_bar=False``).

    ``svi.run`` builds a new scan body each call, so JAX traces and compiles the scan again:
    this is what a user calling it twice pays, not the scan's own cost.
    """
    nx = _jax()
    svi, args = _numpyro_svi(problem)
    key = nx.jax.random.PRNGKey(SEED)
    svi.run(key, steps, *args, progress_bar=False).losses.block_until_ready()
    start = time.perf_counter()
    svi.run(key, steps, *args, progress_bar=False).losses.block_until_ready()
    return _ms_per_step(start, steps)


def numpyro_run_jit(problem: Problem, steps: int) -> float:
    """ms/step of ``svi.run``'s scan inside one ``jax.jit``, timed on its second call."""
    nx = _jax()
    svi, args = _numpyro_svi(problem)
    key = nx.jax.random.PRNGKey(SEED)

    def run(state: Any, *data: Any) -> tuple[Any, Any]:
        result = svi.run(key, steps, *data, progress_bar=False, init_state=state)
        return result.state, result.losses

    run = nx.jax.jit(run)
    state, losses = run(svi.init(key, *args), *args)
    losses.block_until_ready()
    start = time.perf_counter()
    state, losses = run(state, *args)
    losses.block_until_ready()
    return _ms_per_step(start, steps)


def numpyro_end_to_end(problem: Problem, steps: int) -> tuple[float, float]:
    """Seconds of ``svi.run`` on a fresh SVI (its init and jit compile included)."""
    nx = _jax()
    start = time.perf_counter()
    svi, args = _numpyro_svi(problem)
    key = nx.jax.random.PRNGKey(SEED)
    svi.run(key, steps, *args, progress_bar=False).losses.block_until_ready()
    return time.perf_counter() - start, math.nan


# --- PyTorch, Pyro and pyroext ------------------------------------------------------------


def _time_steps(step: Callable[[], Any], steps: int) -> float:
    """ms/step of ``steps`` calls of ``step`` after :data:`WARMUP` untimed ones."""
    for _ in range(WARMUP):
        last = step()
    if isinstance(last, Tensor):
        last.item()
    start = time.perf_counter()
    for _ in range(steps):
        last = step()
    if isinstance(last, Tensor):
        last.item()  # compiled steps return the loss without a sync
    return _ms_per_step(start, steps)


def _ms_per_step(start: float, steps: int) -> float:
    return 1000 * (time.perf_counter() - start) / steps


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

    return _time_steps(step, steps)


def pyro_svi(problem: Problem, steps: int, jit: bool = False) -> float:
    """ms/step of Pyro's ``SVI.step`` with per-parameter ``pyro.optim.Adam``."""
    pyro.clear_param_store()
    pyro.set_rng_seed(SEED)
    guide = PYRO_GUIDES[problem.guide](problem.model)
    elbo = JitTrace_ELBO() if jit else Trace_ELBO()
    svi = SVI(problem.model, guide, pyro.optim.Adam({"lr": problem.lr}), elbo)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation
        return _time_steps(lambda: svi.step(*problem.args), steps)


def _fused_adam(lr: float) -> FusedOptim:
    return FusedOptim(torch.optim.Adam, {"lr": lr, "fused": True})


def pyroext_step(problem: Problem, steps: int, compiled: bool = True) -> float:
    """ms/step of ``TensorSVI.step_tensor`` with one fused Adam, compiled or eager ELBO."""
    pyro.clear_param_store()
    pyro.set_rng_seed(SEED)
    guide = PYRO_GUIDES[problem.guide](problem.model)
    elbo = CompiledTrace_ELBO() if compiled else Trace_ELBO()
    svi = TensorSVI(problem.model, guide, _fused_adam(problem.lr), elbo)
    return _time_steps(lambda: svi.step_tensor(*problem.args), steps)


def pyroext_end_to_end(problem: Problem, steps: int) -> tuple[float, float]:
    """Seconds of ``run_svi(compile=True)`` with a fresh guide, and its compile seconds."""
    pyro.clear_param_store()
    start = time.perf_counter()
    guide = PYRO_GUIDES[problem.guide](problem.model)
    result = run_svi(
        problem.model,
        guide,
        *problem.args,
        num_steps=steps,
        optim=_fused_adam(problem.lr),
        seed=SEED,
        progress=False,
        compile=True,
    )
    return time.perf_counter() - start, result.compile_time


# --- models -------------------------------------------------------------------------------


def blr_model(x: Tensor, y: Tensor) -> None:
    """``w ~ N(0, 1)^D``, ``sigma ~ LogNormal(0, 1)``, ``y ~ N(x w, sigma)``."""
    w = pyro.sample("w", dist.Normal(x.new_zeros(x.shape[1]), 1.0).to_event(1))
    sigma = pyro.sample("sigma", dist.LogNormal(x.new_zeros(()), 1.0))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("y", dist.Normal(x @ w, sigma), obs=y)


def numpyro_blr_model(x: Any, y: Any) -> None:
    """:func:`blr_model` in NumPyro."""
    nx = _jax()
    w = nx.numpyro.sample("w", nx.dist.Normal(nx.jnp.zeros(x.shape[1]), 1.0).to_event(1))
    sigma = nx.numpyro.sample("sigma", nx.dist.LogNormal(0.0, 1.0))
    with nx.numpyro.plate("data", x.shape[0]):
        nx.numpyro.sample("y", nx.dist.Normal(x @ w, sigma), obs=y)


def correlated_model(x: Tensor, y: Tensor) -> None:
    """``w ~ N(0, 1)^D``, ``y ~ N(x w, NOISE)``: a Gaussian posterior, correlated through x."""
    w = pyro.sample("w", dist.Normal(x.new_zeros(x.shape[1]), 1.0).to_event(1))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("y", dist.Normal(x @ w, NOISE), obs=y)


def numpyro_correlated_model(x: Any, y: Any) -> None:
    """:func:`correlated_model` in NumPyro."""
    nx = _jax()
    w = nx.numpyro.sample("w", nx.dist.Normal(nx.jnp.zeros(x.shape[1]), 1.0).to_event(1))
    with nx.numpyro.plate("data", x.shape[0]):
        nx.numpyro.sample("y", nx.dist.Normal(x @ w, NOISE), obs=y)


def funnel_model() -> None:
    """Neal's funnel: ``v ~ N(0, 3^2)``, ``x_i ~ N(0, exp(v / 2)^2)`` for 9 coordinates."""
    v = pyro.sample("v", dist.Normal(torch.tensor(0.0), 3.0))
    pyro.sample("x", dist.Normal(torch.zeros(FUNNEL_DIM - 1), (v / 2).exp()).to_event(1))


def numpyro_funnel_model() -> None:
    """:func:`funnel_model` in NumPyro."""
    nx = _jax()
    v = nx.numpyro.sample("v", nx.dist.Normal(0.0, 3.0))
    scale = nx.jnp.exp(v / 2)
    nx.numpyro.sample("x", nx.dist.Normal(nx.jnp.zeros(FUNNEL_DIM - 1), scale).to_event(1))


def regression_data(n: int, d: int, correlation: float = 0.0) -> tuple[Tensor, Tensor]:
    """Synthetic float32 ``(x, y)`` with a fixed seed; design columns equicorrelated."""
    generator = torch.Generator().manual_seed(SEED)
    cov = torch.full((d, d), correlation) + (1 - correlation) * torch.eye(d)
    x = torch.randn(n, d, generator=generator) @ torch.linalg.cholesky(cov).T
    w = torch.randn(d, generator=generator)
    return x, x @ w + NOISE * torch.randn(n, generator=generator)


def blr_problem(n: int, d: int, guide: str) -> Problem:
    return Problem(blr_model, numpyro_blr_model, regression_data(n, d), guide, BLR_LR)


# --- running and printing -----------------------------------------------------------------


def interleaved(contenders: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list]:
    """Each repeat runs every contender once in turn; a contender that raises is reported on
    stderr with its traceback and not run again (its list keeps what it returned before)."""
    results: dict[str, list] = {name: [] for name in contenders}
    failed: set[str] = set()
    for _ in range(repeats):
        for name, run in contenders.items():
            if name in failed:
                continue
            try:
                results[name].append(run())
            except Exception:  # noqa: BLE001 (the report names it; the others go on)
                print(f"\n# {name} FAILED:", file=sys.stderr)
                traceback.print_exc()
                failed.add(name)
    return results


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


def _fmt(value: float, digits: int = 4) -> str:
    return "—" if math.isnan(value) else f"{value:.{digits}g}"


def _ratio(value: float, base: float) -> str:
    return "—" if math.isnan(value) or math.isnan(base) else f"{value / base:.2f}"


def print_table(header: list[str], rows: list[list[str]]) -> None:
    print("| " + " | ".join(header) + " |")
    print("|---" * len(header) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


def _per_step(
    contenders: dict[str, Callable[[Problem, int], float]],
    problem: Problem,
    steps: int,
    repeats: int,
) -> dict[str, float]:
    """Median ms/step of each contender on ``problem``."""
    bound = {name: functools.partial(fn, problem, steps) for name, fn in contenders.items()}
    return {name: _median(v) for name, v in interleaved(bound, repeats).items()}


def _with_numpyro(contenders: dict[str, Callable[..., Any]]) -> dict[str, Callable[..., Any]]:
    """``contenders`` without the NumPyro ones when NumPyro is missing."""
    if _jax() is not None:
        return contenders
    return {name: fn for name, fn in contenders.items() if not name.startswith("NumPyro")}


# --- sections -----------------------------------------------------------------------------

NUMPYRO_LOOP, HAND_TORCH, COMPILED = (
    "NumPyro jit(svi.update) loop",
    "PyTorch by hand, eager",
    "pyroext compiled (TensorSVI + CompiledTrace_ELBO)",
)
BLR_CONTENDERS: dict[str, Callable[[Problem, int], float]] = {
    NUMPYRO_LOOP: numpyro_loop,
    "NumPyro svi.run, 2nd call (scan traced and compiled again)": numpyro_run_again,
    "NumPyro svi.run scan inside jax.jit": numpyro_run_jit,
    HAND_TORCH: torch_blr,
    "Pyro SVI, Trace_ELBO": pyro_svi,
    "Pyro SVI, JitTrace_ELBO": functools.partial(pyro_svi, jit=True),
    COMPILED: pyroext_step,
}
END_TO_END: dict[str, Callable[[Problem, int], tuple[float, float]]] = {
    "NumPyro svi.run, fresh SVI": numpyro_end_to_end,
    "pyroext run_svi(compile=True), fresh guide": pyroext_end_to_end,
}
SCALING_CONTENDERS = (NUMPYRO_LOOP, HAND_TORCH, "Pyro SVI, Trace_ELBO", COMPILED)
EAGER = "pyroext eager (TensorSVI + Trace_ELBO)"
DAIS_CONTENDERS: dict[str, Callable[[Problem, int], float]] = {
    NUMPYRO_LOOP: numpyro_loop,
    EAGER: functools.partial(pyroext_step, compiled=False),
    COMPILED: pyroext_step,
}


def section_blr(args: argparse.Namespace) -> None:
    """Per-step table for both guides, then the end-to-end table (run first: cold compile)."""
    problems = {guide: blr_problem(100, 3, guide) for guide in BLR_GUIDES}
    contenders = _with_numpyro(END_TO_END)
    ends = {
        guide: interleaved(
            {name: functools.partial(fn, p, args.e2e_steps) for name, fn in contenders.items()},
            args.repeats,
        )
        for guide, p in problems.items()
    }
    contenders = _with_numpyro(BLR_CONTENDERS)
    steady = {g: _per_step(contenders, p, args.steps, args.repeats) for g, p in problems.items()}
    print(f"\n## blr: N=100, D=3, Adam lr {BLR_LR}; ms/step, {args.steps} timed steps\n")
    header = ["contender"]
    for guide in BLR_GUIDES:
        header += [f"{guide} ms/step", "vs NumPyro loop", "vs PyTorch by hand"]
    rows = []
    for name in contenders:
        row = [name]
        for times in steady.values():
            ms = times[name]
            row += [_fmt(ms), _ratio(ms, times.get(NUMPYRO_LOOP, math.nan))]
            row += [_ratio(ms, times[HAND_TORCH])]
        rows.append(row)
    print_table(header, rows)
    _print_end_to_end(ends, args.e2e_steps)


def _print_end_to_end(ends: dict[str, dict[str, list]], steps: int) -> None:
    print(f"\n## blr end to end: {steps} steps including compile; seconds\n")
    header = ["guide", "contender", "total (median)", "total, 1st repeat"]
    rows = []
    for guide, results in ends.items():
        for name, values in results.items():
            totals, compiles = [v[0] for v in values], [v[1] for v in values]
            first = [_fmt(totals[0] if totals else math.nan, 3)]
            rows.append([guide, name, _fmt(_median(totals), 3), *first])
            rows[-1] += [
                _fmt(_median(compiles), 3),
                _fmt(compiles[0] if compiles else math.nan, 3),
            ]
    print_table(header + ["compile (median)", "compile, 1st repeat (cold)"], rows)


def _scaled_steps(steps: int, n: int, d: int) -> int:
    return max(WARMUP, min(steps, steps * SCALING_ELEMENTS // (n * d)))


def section_scaling(args: argparse.Namespace) -> None:
    """AutoNormal regression over N at D=3 and over D at N=1000."""
    contenders = _with_numpyro({name: BLR_CONTENDERS[name] for name in SCALING_CONTENDERS})
    configs = [(n, 3) for n in SCALING_N if n <= args.max_n] + [(1000, d) for d in SCALING_D]
    rows = []
    for n, d in configs:
        steps = _scaled_steps(args.steps, n, d)
        times = _per_step(contenders, blr_problem(n, d, "AutoNormal"), steps, args.repeats)
        ratio = _ratio(times[COMPILED], times.get(NUMPYRO_LOOP, math.nan))
        rows.append([f"{n:,}", str(d), str(steps), *map(_fmt, times.values()), ratio])
    print(f"\n## scaling: AutoNormal regression, Adam lr {BLR_LR}; ms/step\n")
    print_table(["N", "D", "steps", *contenders, "compiled / NumPyro"], rows)


def section_dais(args: argparse.Namespace) -> None:
    """AutoDAIS(K=8) on a correlated regression and on Neal's funnel."""
    x, y = regression_data(200, 5, correlation=0.9)
    problems = {
        "correlated regression, N=200, D=5": Problem(
            correlated_model, numpyro_correlated_model, (x, y), "AutoDAIS", DAIS_LR
        ),
        f"Neal's funnel, d={FUNNEL_DIM}": Problem(
            funnel_model, numpyro_funnel_model, (), "AutoDAIS", DAIS_LR
        ),
    }
    contenders = _with_numpyro(DAIS_CONTENDERS)
    rows = []
    for label, problem in problems.items():
        times = _per_step(contenders, problem, args.dais_steps, args.repeats)
        ratio = _ratio(times[COMPILED], times.get(NUMPYRO_LOOP, math.nan))
        rows.append([label, *map(_fmt, times.values()), ratio])
        rows[-1].append(_ratio(times[EAGER], times[COMPILED]))
    print(
        f"\n## dais: AutoDAIS(K={DAIS_K}), Adam lr {DAIS_LR}; ms/step, {args.dais_steps} steps\n"
    )
    print_table(["model", *contenders, "compiled / NumPyro", "eager / compiled"], rows)


SECTIONS = {"blr": section_blr, "scaling": section_scaling, "dais": section_dais}


def print_header(args: argparse.Namespace) -> None:
    nx = _jax()
    numpyro_version = nx.numpyro.__version__ if nx else "not installed"
    jax_version = nx.jax.__version__ if nx else "not installed"
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
    print(f"# {datetime.date.today()}; {machine}; 1 thread (torch and XLA); float32")
    print(
        f"# Python {platform.python_version()}, torch {torch.__version__}, pyro "
        f"{pyro.__version__}, pyroext {pyroext.__version__}, numpyro {numpyro_version}, jax "
        f"{jax_version}"
    )
    cache = "fresh (first compile cold)" if args.fresh_inductor_cache else "shared on disk"
    print(
        f"# median of {args.repeats} interleaved repeats; {WARMUP} untimed warm-up steps; "
        f"Pyro validation {'on' if pyro.infer.util.is_validation_enabled() else 'off'}; "
        f"inductor cache {cache}"
    )


def main(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float32)
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\._inductor")
    with tempfile.TemporaryDirectory(prefix="inductor-") as cache:
        if args.fresh_inductor_cache:
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
        print_header(args)
        for name in SECTIONS if args.section == "all" else [args.section]:
            SECTIONS[name](args)


DEFAULTS = {"steps": 2000, "repeats": 3, "e2e_steps": 2000, "dais_steps": 300}
SMOKE = {"steps": 20, "repeats": 1, "e2e_steps": 50, "dais_steps": 20}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; ``--smoke`` shrinks the defaults to a check of a few minutes."""
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--section", choices=["all", *SECTIONS], default="all")
    parser.add_argument("--steps", type=int, help="timed steps per contender (2000)")
    parser.add_argument("--repeats", type=int, help="interleaved repeats (3)")
    parser.add_argument("--e2e-steps", type=int, help="end-to-end steps, blr (2000)")
    parser.add_argument("--dais-steps", type=int, help="timed steps, dais (300)")
    parser.add_argument(
        "--fresh-inductor-cache",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="start inductor's on-disk cache empty, so that first compiles are cold",
    )
    parser.add_argument(
        "--smoke", action="store_true", help=f"defaults {SMOKE}, N up to 1e4; options win"
    )
    args = parser.parse_args(argv)
    for name, value in (SMOKE if args.smoke else DEFAULTS).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.max_n = 10_000 if args.smoke else max(SCALING_N)
    return args


if __name__ == "__main__":
    main(parse_args())
