"""Cost of the Gaussian mixture's closed-form references (EM, CAVI) against SVI per step.

Old Faithful (standardised, K=2) and the synthetic 3-cluster data (N=2000), float64, full
covariances, one torch thread. EM (5 k-means++ restarts) and CAVI run to convergence; SVI runs
``--steps`` steps of ``TraceEnum_ELBO`` with the MAP guide (assignments enumerated in the model)
and the full mean-field guide (``q(z_n)`` enumerated in the guide). Prints a Markdown table.

    python benchmarks/gmm.py [--steps 500]
"""

import argparse
import functools
import time
from collections.abc import Callable

import pyro
import torch
from pyro.infer import TraceEnum_ELBO
from pyro.infer.autoguide import AutoDelta

from pyroext.data import load_faithful, synthetic_mixture
from pyroext.infer import run_svi
from pyroext.models.gmm import gmm_marginal_model, gmm_model, init_from_data, mean_field_guide
from pyroext.models.gmm.em import em
from pyroext.models.gmm.vb import vb_gmm


def seconds(function: Callable[[], object]) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def steps_per_second(x: torch.Tensor, k: int, guide_name: str, steps: int) -> float:
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


def main(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    datasets = {
        "Old Faithful": (load_faithful(standardize=True, dtype=torch.float64).x, 2),
        "synthetic": (synthetic_mixture(dtype=torch.float64).x, 3),
    }
    print(f"torch {torch.__version__}, pyro {pyro.__version__}, {args.steps} SVI steps")
    print("| data | EM (s) | CAVI (s) | SVI-MAP (steps/s) | SVI mean-field (steps/s) |")
    print("|---|---|---|---|---|")
    for name, (x, k) in datasets.items():
        em_time = seconds(lambda x=x, k=k: em(x, k))
        vb_time = seconds(lambda x=x, k=k: vb_gmm(x, k))
        rates = [steps_per_second(x, k, guide, args.steps) for guide in ("delta", "mean-field")]
        print(
            f"| {name} (N={len(x)}, K={k}) | {em_time:.2f} | {vb_time:.2f} | "
            f"{rates[0]:.0f} | {rates[1]:.0f} |"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--steps", type=int, default=500, help="SVI steps per guide")
    main(parser.parse_args())
