"""Per-step and end-to-end cost of pyroext's compiled SVI step against NumPyro, plain PyTorch
and Pyro, on a small Bayesian linear regression.

The regression has N=100, D=3, ``w ~ N(0, 1)^D`` and ``sigma ~ LogNormal(0, 1)``, with
``AutoNormal`` and ``AutoMultivariateNormal``. Per step: NumPyro's jitted ``svi.update`` in a
Python loop, NumPyro's ``svi.run`` (its ``lax.scan``; a second call on the same SVI, and the
scan under one ``jax.jit``), a hand-written eager PyTorch ELBO, Pyro's ``SVI`` with
``Trace_ELBO`` and ``JitTrace_ELBO``, and pyroext's ``TensorSVI`` with ``CompiledTrace_ELBO``
and one fused Adam. End to end (compile included): NumPyro's ``svi.run`` and pyroext's
``run_svi(compile=True)``, run first so that the first compile of each graph is cold when
inductor's cache starts empty (the default). ``compiled_scaling.py`` varies N and D;
``compiled_dais.py`` runs AutoDAIS. Without NumPyro its rows are left out.

    python benchmarks/compiled_svi.py [--steps 2000] [--e2e-steps 2000] [--repeats 3] [--quick]
"""

import argparse
import functools
import math
import time
from typing import Any

from _compiled import (
    BLR_LR,
    COMPILED,
    HAND_TORCH,
    NUMPYRO_LOOP,
    PYRO_TRACE,
    SEED,
    Contender,
    Problem,
    blr_problem,
    jax_modules,
    numpyro_loop,
    numpyro_svi,
    options,
    per_step,
    pyro_svi,
    pyroext_end_to_end,
    pyroext_step,
    session,
    torch_blr,
    with_numpyro,
)
from _harness import Table, fmt, interleave, median, ratio

GUIDES = ("AutoNormal", "AutoMultivariateNormal")


def numpyro_run_again(problem: Problem, steps: int) -> float:
    """ms/step of a second ``svi.run`` call on the same SVI (``progress_bar=False``).

    ``svi.run`` builds a new scan body each call, so JAX traces and compiles the scan again:
    this is what a user calling it twice pays, not the scan's own cost.
    """
    nx = jax_modules()
    svi, args = numpyro_svi(problem)
    key = nx.jax.random.PRNGKey(SEED)
    svi.run(key, steps, *args, progress_bar=False).losses.block_until_ready()
    start = time.perf_counter()
    svi.run(key, steps, *args, progress_bar=False).losses.block_until_ready()
    return 1000 * (time.perf_counter() - start) / steps


def numpyro_run_jit(problem: Problem, steps: int) -> float:
    """ms/step of ``svi.run``'s scan inside one ``jax.jit``, timed on its second call."""
    nx = jax_modules()
    svi, args = numpyro_svi(problem)
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
    return 1000 * (time.perf_counter() - start) / steps


def numpyro_end_to_end(problem: Problem, steps: int) -> tuple[float, float]:
    """Seconds of ``svi.run`` on a fresh SVI (its init and jit compile included)."""
    nx = jax_modules()
    start = time.perf_counter()
    svi, args = numpyro_svi(problem)
    key = nx.jax.random.PRNGKey(SEED)
    svi.run(key, steps, *args, progress_bar=False).losses.block_until_ready()
    return time.perf_counter() - start, math.nan


CONTENDERS: dict[str, Contender] = {
    NUMPYRO_LOOP: numpyro_loop,
    "NumPyro svi.run, 2nd call (scan traced and compiled again)": numpyro_run_again,
    "NumPyro svi.run scan inside jax.jit": numpyro_run_jit,
    HAND_TORCH: torch_blr,
    PYRO_TRACE: pyro_svi,
    "Pyro SVI, JitTrace_ELBO": functools.partial(pyro_svi, jit=True),
    COMPILED: pyroext_step,
}
END_TO_END = {
    "NumPyro svi.run, fresh SVI": numpyro_end_to_end,
    "pyroext run_svi(compile=True), fresh guide": pyroext_end_to_end,
}


def print_per_step(steady: dict[str, dict[str, float]], steps: int) -> None:
    """One row per contender; per guide its ms/step and ratios to NumPyro's loop and PyTorch."""
    print(f"\n## blr: N=100, D=3, Adam lr {BLR_LR}; ms/step, {steps} timed steps")
    header = ["contender"]
    for guide in steady:
        header += [f"{guide} ms/step", "vs NumPyro loop", "vs PyTorch by hand"]
    table = Table(*header)
    for name in next(iter(steady.values())):
        cells = [name]
        for times in steady.values():
            ms = times[name]
            cells += [fmt(ms), ratio(ms, times.get(NUMPYRO_LOOP, math.nan))]
            cells += [ratio(ms, times[HAND_TORCH])]
        table.row(*cells)


def print_end_to_end(ends: dict[str, dict[str, list[tuple[float, float]]]], steps: int) -> None:
    """Total and compile seconds per guide and contender: median, and the (cold) first."""
    print(f"\n## blr end to end: {steps} steps including compile; seconds")
    table = Table(
        "guide",
        "contender",
        "total (median)",
        "total, 1st repeat",
        "compile (median)",
        "compile, 1st repeat (cold)",
    )
    for guide, results in ends.items():
        for name, values in results.items():
            totals, compiles = [v[0] for v in values], [v[1] for v in values]
            firsts = [fmt(column[0] if column else math.nan, 3) for column in (totals, compiles)]
            medians = [fmt(median(column), 3) for column in (totals, compiles)]
            table.row(guide, name, medians[0], firsts[0], medians[1], firsts[1])


def end_to_end(problem: Problem, args: argparse.Namespace) -> dict[str, list[tuple[float, float]]]:
    """Total and compile seconds of each end-to-end contender, one pair per repeat."""
    contenders = {
        name: functools.partial(fn, problem, args.e2e_steps)
        for name, fn in with_numpyro(END_TO_END).items()
    }
    return interleave(contenders, args.repeats)


def main() -> None:
    parser = options(__doc__, steps=2000, quick_steps=20)
    parser.add("--e2e-steps", full=2000, quick=50, type=int, help="end-to-end steps")
    parser.add(
        "--guides", full=list(GUIDES), quick=GUIDES[:1], nargs="+", choices=GUIDES, help="guides"
    )
    args = parser.parse()
    with session(args, "Bayesian linear regression, N=100, D=3"):
        problems = {guide: blr_problem(100, 3, guide) for guide in args.guides}
        ends = {guide: end_to_end(problem, args) for guide, problem in problems.items()}
        contenders = with_numpyro(CONTENDERS)
        steady = {
            guide: per_step(contenders, problem, args.steps, args.repeats)
            for guide, problem in problems.items()
        }
        print_per_step(steady, args.steps)
        print_end_to_end(ends, args.e2e_steps)


if __name__ == "__main__":
    main()
