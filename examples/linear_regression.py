"""Bayesian linear regression on the diabetes data: SVI guides against the exact posterior.

Fits a mean-field and a full-rank Gaussian guide with pyroext's runner, then prints, for each,
the KL divergence to the exact conjugate posterior and the posterior predictive interval of the
first five patients beside the exact one.

    python examples/linear_regression.py --steps 3000
"""

import argparse
import functools

import pyro
import torch

from pyroext.data import load_diabetes
from pyroext.guides import gaussian_moments, make_guide
from pyroext.infer import run_svi
from pyroext.models import linear_regression as lr

NOISE, PRIOR_PRECISION = 0.7, 1.0


def main(args: argparse.Namespace) -> None:
    data = load_diabetes(dtype=torch.float64)
    options = {"noise_scale": NOISE, "prior_precision": PRIOR_PRECISION}
    model = functools.partial(lr.model_known_noise, **options)
    exact = lr.conjugate_posterior(data.x, data.y, **options)
    mean, low, high = lr.predictive_interval_known_noise(exact, data.x[:5], noise_scale=NOISE)
    print(f"exact log evidence: {lr.log_evidence_known_noise(data.x, data.y, **options):.3f}")
    for name in ("normal", "mvn"):
        pyro.clear_param_store()
        guide = make_guide(name, model)
        optim = pyro.optim.ClippedAdam({"lr": 0.03, "lrd": 0.05 ** (1 / args.steps)})
        result = run_svi(
            model,
            guide,
            data.x,
            data.y,
            num_steps=args.steps,
            optim=optim,
            seed=args.seed,
            progress=False,
        )
        q_mean, q_cov = gaussian_moments(guide)
        kl = lr.kl_gaussian(q_mean, q_cov, exact.mean, exact.cov)
        print(f"{name:>7}: final ELBO {-result.losses[-200:].mean():.3f}, KL(q || exact) {kl:.4f}")
        q_pred, q_low, q_high = lr.posterior_predictive(model, guide, data.x[:5], num_samples=2000)
        for row in range(5):
            guide_text = f"q {q_pred[row]:+.3f} [{q_low[row]:+.3f}, {q_high[row]:+.3f}]"
            exact_text = f"exact {mean[row]:+.3f} [{low[row]:+.3f}, {high[row]:+.3f}]"
            print(f"    patient {row}: {guide_text}  {exact_text}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    main(parser.parse_args())
