"""A Gaussian mixture on Old Faithful fitted three ways: EM, variational EM (CAVI) and SVI.

EM maximises the log-likelihood in closed-form steps; CAVI (Bishop's conjugate
Dirichlet / Normal-Wishart priors) maximises the ELBO in closed-form coordinate steps; SVI fits
the Pyro model with its assignments summed out by enumeration, as MAP (``AutoDelta``) and with
the full mean-field guide ``q(theta) prod_n q(z_n)``. The table shows each one's
log-likelihood at its point estimate (posterior means for the Bayesian fits) and its ELBO, and
the component means sorted by eruption time (standardised units).

    python examples/gmm.py --steps 2000
"""

import argparse
import functools
from collections.abc import Callable

import pandas as pd
import pyro
import torch
from pyro.infer import TraceEnum_ELBO
from pyro.infer.autoguide import AutoDelta
from torch import Tensor

from pyroext.data import load_faithful
from pyroext.infer import run_svi
from pyroext.models.gmm import (
    gmm_marginal_model,
    gmm_model,
    init_from_data,
    mean_field_guide,
    mixture_log_likelihood,
)
from pyroext.models.gmm.em import em
from pyroext.models.gmm.vb import vb_gmm

K = 2


def plug_in_log_likelihood(x: Tensor, weights: Tensor, locs: Tensor, covariances: Tensor) -> float:
    scales = covariances.diagonal(dim1=-2, dim2=-1).sqrt()
    corr_chol = torch.linalg.cholesky(covariances / (scales.unsqueeze(-1) * scales.unsqueeze(-2)))
    return mixture_log_likelihood(x, weights, locs, scales, corr_chol).item()


def svi(x: Tensor, guide: Callable[..., object], steps: int) -> float:
    model = functools.partial(gmm_model, k=K, covariance="full")
    run_svi(
        model,
        guide,
        x,
        num_steps=steps,
        optim=pyro.optim.ClippedAdam({"lr": 0.05, "lrd": 0.02 ** (1 / steps)}),
        loss=TraceEnum_ELBO(max_plate_nesting=1),
        progress=False,
        seed=0,
    )
    with torch.no_grad():
        return -TraceEnum_ELBO(max_plate_nesting=1, num_particles=100).loss(model, guide, x)


def posterior_means(guide: Callable[..., dict], x: Tensor, num: int = 2000) -> tuple[Tensor, ...]:
    """Posterior means of the weights, the component means and the covariances."""
    with torch.no_grad(), pyro.plate("draws", num, dim=-2):
        draws = guide(x)
    tril = draws["scales"].unsqueeze(-1) * draws["corr_chol"]
    weights = draws["weights"].reshape(num, K).mean(0)
    return weights, draws["locs"].mean(0), (tril @ tril.mT).mean(0)


def row(method: str, log_lik: float, elbo: float, locs: Tensor) -> dict[str, object]:
    first, second = (f"({a:.3f}, {b:.3f})" for a, b in locs[locs[:, 0].argsort()].tolist())
    return {"method": method, "log_lik": log_lik, "elbo": elbo, "mean 1": first, "mean 2": second}


def main(args: argparse.Namespace) -> None:
    x = load_faithful(standardize=True, dtype=torch.float64).x
    rows = []
    ml = em(x, K)
    rows.append(row("EM (maximum likelihood)", ml.log_likelihood, float("nan"), ml.means))
    vb = vb_gmm(x, K)
    covariances = torch.linalg.inv(vb.nu[:, None, None] * vb.w)
    vb_log_lik = plug_in_log_likelihood(x, vb.alpha / vb.alpha.sum(), vb.m, covariances)
    rows.append(row("CAVI (variational EM)", vb_log_lik, vb.elbo, vb.m))

    marginal = functools.partial(gmm_marginal_model, k=K, covariance="full")
    pyro.clear_param_store()
    map_guide = AutoDelta(marginal, init_loc_fn=init_from_data(x, K))
    log_joint = svi(x, map_guide, args.steps)
    point = map_guide.median(x)
    map_log_lik = mixture_log_likelihood(
        x, *(point[n] for n in ("weights", "locs", "scales", "corr_chol"))
    )
    rows.append(row("SVI MAP (enumerated)", map_log_lik.item(), log_joint, point["locs"]))

    pyro.clear_param_store()
    guide = mean_field_guide(x, K, covariance="full")
    elbo = svi(x, guide, args.steps)
    weights, locs, covariances = posterior_means(guide[0], x)
    mf_log_lik = plug_in_log_likelihood(x, weights, locs, covariances)
    rows.append(row("SVI mean-field, q(z_n) enumerated", mf_log_lik, elbo, locs))

    with pd.option_context("display.width", 140, "display.max_colwidth", 40):
        print(pd.DataFrame(rows).set_index("method").round(4).to_string())
    print(
        "log_lik: at the method's point estimate (posterior means for CAVI and mean-field"
        " SVI; for the MAP fit its 'elbo' is the log joint at the MAP point). The CAVI and SVI"
        " ELBOs differ in their priors (Normal-Wishart vs Normal/LogNormal/LKJ)."
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--steps", type=int, default=2000, help="SVI steps per fit")
    main(parser.parse_args())
