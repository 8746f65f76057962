"""Test NLL of VAE, IWAE, L-MCVAE, A-MCVAE and MetVAE on MNIST at equal epochs (issue 6, table 2).

784-200-200-50 tanh MLP, dynamic binarisation, batch 100, Adam 1e-3 (one fused optimiser),
the same seed for every model. The test NLL is importance-sampled from each model's encoder
(``--samples`` draws, Burda et al. use 5000) on the first ``--test-images`` test images, fixed
binarisation; the test ELBO is each model's own bound under its trained guide. Wall time per
training epoch is reported beside the quality, so that quality per compute is visible.

    python benchmarks/vae_quality.py --data-dir ../shared/data --epochs 5 --device cpu
        [--test-images 1000] [--samples 5000] [--models VAE "MetVAE (K=5)"]
"""

import argparse
import platform
import time

import pyro
import torch

import pyroext
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


def main(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    test = load_vae_data("mnist", args.data_dir).test[: args.test_images].to(args.device)
    versions = f"torch {torch.__version__}, pyro {pyro.__version__}, pyroext {pyroext.__version__}"
    print(f"# {platform.machine()}, {args.threads} threads, {args.device}; {versions}")
    print(
        f"# {args.epochs} epochs, test NLL on {len(test)} test images with k={args.samples}, "
        f"seed {args.seed}"
    )
    print("| model | test NLL (nats) | test ELBO, all 10000 images | s/epoch | total s |")
    print("|---|---|---|---|---|", flush=True)
    for name in args.models:
        start = time.perf_counter()
        fit = fit_vae(
            data="mnist",
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
        print(
            f"| {name} | {nll:.2f} | {fit.test_elbo:.2f} | {fit.seconds_per_epoch:.1f} "
            f"| {total:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--data-dir", required=True, help="folder holding MNIST/raw")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--test-images", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    main(parser.parse_args())
