"""Cost of the Gaussian mixture's closed-form references (EM, CAVI) against SVI per step.

Old Faithful (standardised, K=2) and the synthetic 3-cluster data (N=2000), float64, full
covariances, one torch thread. EM (5 k-means++ restarts) and CAVI run to convergence; SVI runs
``--steps`` steps of ``TraceEnum_ELBO`` with the MAP guide (assignments enumerated in the model)
and the full mean-field guide (``q(z_n)`` enumerated in the guide). Prints a Markdown table.

    python benchmarks/gmm.py [--steps 500] [--quick]
"""

import functools
import time
from collections.abc import Callable

import pyro
import torch
from _harness import Options, Table, begin
from pyro.infer import TraceEnum_ELBO
from pyro.infer.autoguide import AutoDelta

from pyroext.data import load_faithful, synthetic_mixture
from pyroext.infer import run_svi
from pyroext.models.gmm import gmm_marginal_model, gmm_model, init_from_data, mean_field_guide
from pyroext.models.gmm.em import em
from pyroext.models.gmm.vb import vb_gmm


def seconds(function: Callable[[], object]) -> float:
    """Wall seconds of one call."""
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def steps_per_second(x: torch.Tensor, k: int, guide_name: str, steps: int) -> float:
    """SVI steps per second with the ``delta`` (MAP) or ``mean-field`` guide."""
    model = functools.partial(gmm_model, k=k, covariance="full")
    pyro.clear_param_store()
    if guide_name == "delta":
        marginal = functools.partial(gmm_marginal_model, k=k, covariance="full")
        guide = AutoDelta(marginal, init_loc_fn=init_from_data(x, k))
    else:
        guide = mean_field_guide(x, k, covariance="full")
    loss = TraceEnum_ELBO(max_plate_nesting=1)
    result = run_svi(model, guide, x, num_steps=steps, loss=loss, progress=False, seed=0)
    return result.num_steps / result.wall_time


def main() -> None:
    options = Options(__doc__)
    options.add("--steps", full=500, quick=20, type=int, help="SVI steps per guide")
    args = options.parse()
    begin(args, f"float64, full covariances; {args.steps} SVI steps per guide")
    datasets = {
        "Old Faithful": (load_faithful(standardize=True, dtype=torch.float64).x, 2),
        "synthetic": (synthetic_mixture(dtype=torch.float64).x, 3),
    }
    table = Table("data", "EM (s)", "CAVI (s)", "SVI-MAP (steps/s)", "SVI mean-field (steps/s)")
    for name, (x, k) in datasets.items():
        em_time = seconds(lambda x=x, k=k: em(x, k))
        vb_time = seconds(lambda x=x, k=k: vb_gmm(x, k))
        rates = [steps_per_second(x, k, guide, args.steps) for guide in ("delta", "mean-field")]
        table.row(
            f"{name} (N={len(x)}, K={k})", f"{em_time:.2f}", f"{vb_time:.2f}", *map(round, rates)
        )


if __name__ == "__main__":
    main()
