"""Test NLL of VAE, IWAE, L-MCVAE, A-MCVAE and MetVAE on MNIST at equal epochs.

784-200-200-50 tanh MLP, dynamic binarisation, batch 100, Adam 1e-3 (one fused optimiser),
the same seed for every model. The test NLL is importance-sampled from each model's encoder
(``--samples`` draws, Burda et al. use 5000) on the first ``--test-images`` test images, fixed
binarisation; the test ELBO is each model's own bound under its trained guide. Wall time per
training epoch is reported beside the quality, so that quality per compute is visible.
``--quick`` trains on the embedded 8x8 digits (8 latents) instead of MNIST.

    python benchmarks/vae_quality.py --data-dir ../shared/data --epochs 5 --device cpu
        [--test-images 1000] [--samples 5000] [--models VAE "MetVAE (K=5)"] [--quick]
"""

import time

import torch
from _harness import Options, Table, begin

from pyroext.data import load_vae_data
from pyroext.models.vae.eval import importance_log_likelihood
from pyroext.models.vae.job import fit_vae

MODELS = {
    "VAE": {"guide": "normal", "objective": "trace", "num_particles": 1},
    "IWAE (k=5)": {"guide": "normal", "objective": "iwae", "num_particles": 5},
    "L-MCVAE (K=5)": {"guide": "langevin", "objective": "trace", "num_particles": 1},
    "A-MCVAE (K=5)": {"guide": "annealed", "objective": "trace", "num_particles": 1},
    "MetVAE (K=5)": {"guide": "metflow", "objective": "trace", "num_particles": 1},
}


def main() -> None:
    options = Options(__doc__)
    options.data("mnist")
    options.add("--epochs", full=5, quick=1, type=int, help="training epochs of every model")
    options.add("--test-images", full=1000, quick=100, type=int, help="images of the test NLL")
    options.add("--samples", full=5000, quick=50, type=int, help="importance samples per image")
    options.threads(2)
    options.add("--seed", full=0, type=int, help="seed of every model")
    options.device()
    options.add("--models", full=list(MODELS), nargs="+", choices=list(MODELS), help="models")
    args = options.parse()
    begin(
        args,
        f"{args.data}, {args.epochs} epochs, test NLL on {args.test_images} test images with "
        f"k={args.samples}, seed {args.seed}",
    )
    test = load_vae_data(args.data, args.data_dir).test[: args.test_images].to(args.device)
    table = Table("model", "test NLL (nats)", "test ELBO, all test images", "s/epoch", "total s")
    for name in args.models:
        start = time.perf_counter()
        fit = fit_vae(
            data=args.data,
            data_dir=args.data_dir,
            epochs=args.epochs,
            num_samples=1,  # the job's own evaluation is replaced by the one below
            device=args.device,
            seed=args.seed,
            progress=False,
            **MODELS[name],
        )
        generator = torch.Generator(args.device).manual_seed(args.seed)
        log_lik = importance_log_likelihood(fit.vae, test, args.samples, generator=generator)
        nll, total = -log_lik.mean().item(), time.perf_counter() - start
        table.row(
            name,
            f"{nll:.2f}",
            f"{fit.test_elbo:.2f}",
            f"{fit.seconds_per_epoch:.1f}",
            round(total),
        )


if __name__ == "__main__":
    main()
