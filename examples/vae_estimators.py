"""VAE estimators on embedded digits: ELBO estimators A and B, and reparameterised versus
score-function gradients, each with its variance.

A small VAE (64-16-4 encoder, binarised 8x8 digits). On a batch of images, prints the mean and
variance of the two one-draw ELBO estimators before and after a short training run (B wins far
from the posterior; once q is close to it, A's log-weight is nearly constant and A wins), and,
after training, the summed variance of the two one-draw gradient estimators of the encoder
against a 50,000-particle reference.

    python examples/vae_estimators.py --steps 500 --draws 2000
"""

import argparse
import math

import pyro
import torch
from pyro import poutine
from torch.utils.data import DataLoader

from pyroext.data import load_digits
from pyroext.infer import run_svi
from pyroext.models.vae import VAE, MLPDecoder, MLPEncoder, vae_loss
from pyroext.models.vae.estimators import elbo_estimates, encoder_gradients

LATENT = 4


def main(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    images = torch.bernoulli(load_digits(dtype=torch.float64).x)
    vae = VAE(MLPEncoder(64, LATENT, (16,)), MLPDecoder(LATENT, 64, (16,)), LATENT).double()
    batch = images[:10]
    report_elbo(vae, batch, args.draws, "untrained")
    loader = DataLoader(images, batch_size=100, shuffle=True)
    pyro.clear_param_store()
    run_svi(
        vae.model,
        vae.guide,
        data=loader,
        num_steps=args.steps,
        model_kwargs={"num_data": len(images)},
        optim=pyro.optim.Adam({"lr": 3e-3}),
        loss=vae_loss("trace"),
        progress=False,
        seed=0,
    )
    report_elbo(vae, batch, args.draws, f"after {args.steps} steps")
    reference = reference_gradient(vae, batch)
    print("Encoder gradient, one-draw estimators:")
    variances = {}
    for estimator in ("reparameterised", "score-function"):
        draws = encoder_gradients(vae, batch, estimator, args.draws)
        variances[estimator] = draws.var(0).sum().item()
        error = (draws.mean(0) - reference).norm().item()
        print(
            f"  {estimator:15s} summed variance {variances[estimator]:12.1f}  "
            f"|mean - reference| {error:8.3f}  (|reference| {reference.norm():.3f})"
        )
    ratio = variances["score-function"] / variances["reparameterised"]
    print(f"variance ratio score-function / reparameterised: {ratio:.0f}")


def report_elbo(vae: VAE, batch: torch.Tensor, draws: int, label: str) -> None:
    print(f"ELBO of {len(batch)} images ({label}), {draws} one-draw estimates each:")
    for estimator in ("monte-carlo", "analytic-kl"):
        values = elbo_estimates(vae, batch, estimator, draws)
        se = values.std().item() / math.sqrt(draws)
        print(
            f"  {estimator:12s} mean {values.mean():9.3f} ± {se:.3f}  variance {values.var():8.3f}"
        )


def reference_gradient(vae: VAE, x: torch.Tensor) -> torch.Tensor:
    elbo = vae_loss("trace", num_particles=50_000)
    with poutine.block():
        loss = elbo.differentiable_loss(vae.model, vae.guide, x)
    grads = torch.autograd.grad(-loss, list(vae.encoder.parameters()))
    return torch.cat([g.reshape(-1) for g in grads])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--steps", type=int, default=500, help="training steps")
    parser.add_argument("--draws", type=int, default=2000, help="estimates per estimator")
    main(parser.parse_args())
