"""How the compiled SVI step's cost against NumPyro, PyTorch and Pyro grows with the data.

The regression of ``compiled_svi.py`` (``w ~ N(0, 1)^D``, ``sigma ~ LogNormal(0, 1)``) with
``AutoNormal``, over N at D=3 and over D at N=1000: NumPyro's jitted ``svi.update`` loop, a
hand-written eager PyTorch ELBO, Pyro's ``SVI`` with ``Trace_ELBO`` and pyroext's
``TensorSVI`` with ``CompiledTrace_ELBO``. Configurations with more than 100,000 values in
``x`` get proportionally fewer timed steps. Without NumPyro its column is left out.

    python benchmarks/compiled_scaling.py [--n 100 10000 1000000] [--d 3 30 300] [--quick]
"""

import math

from _compiled import (
    BLR_LR,
    COMPILED,
    HAND_TORCH,
    NUMPYRO_LOOP,
    PYRO_TRACE,
    WARMUP,
    blr_problem,
    numpyro_loop,
    options,
    per_step,
    pyro_svi,
    pyroext_step,
    session,
    torch_blr,
    with_numpyro,
)
from _harness import Table, fmt, ratio

ELEMENTS = 100_000  # configurations with more N * D get proportionally fewer steps
SWEEP_D_AT_N = 1000
CONTENDERS = {
    NUMPYRO_LOOP: numpyro_loop,
    HAND_TORCH: torch_blr,
    PYRO_TRACE: pyro_svi,
    COMPILED: pyroext_step,
}


def scaled_steps(steps: int, n: int, d: int) -> int:
    """``steps``, cut for large ``n * d`` so that each configuration takes similar time."""
    return max(WARMUP, min(steps, steps * ELEMENTS // (n * d)))


def main() -> None:
    parser = options(__doc__, steps=2000, quick_steps=20)
    parser.add("--n", full=[100, 10_000, 1_000_000], quick=[100], type=int, nargs="+", help="N")
    parser.add("--d", full=[3, 30, 300], quick=[3], type=int, nargs="+", help="D at N=1000")
    args = parser.parse()
    with session(args, f"AutoNormal regression, Adam lr {BLR_LR}; ms/step"):
        contenders = with_numpyro(CONTENDERS)
        configs = [(n, 3) for n in args.n] + [(SWEEP_D_AT_N, d) for d in args.d]
        table = Table("N", "D", "steps", *contenders, "compiled / NumPyro")
        for n, d in dict.fromkeys(configs):
            steps = scaled_steps(args.steps, n, d)
            times = per_step(contenders, blr_problem(n, d, "AutoNormal"), steps, args.repeats)
            compared = ratio(times[COMPILED], times.get(NUMPYRO_LOOP, math.nan))
            table.row(f"{n:,}", d, steps, *map(fmt, times.values()), compared)


if __name__ == "__main__":
    main()
