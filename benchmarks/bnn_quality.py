"""Test error, NLL and calibration of Bayes-by-backprop networks against the same deterministic
network (issue 7).

Each row trains a ReLU MLP (hidden widths ``--hidden``, 400-400 by default) for ``--epochs``
passes with Adam(lr=1e-3) on minibatches of 100:

- ``deterministic``: plain PyTorch, cross-entropy, the network's own default initialisation;
- ``bbb`` and ``bbb-lrt``: :func:`pyroext.models.bnn.job.fit_bnn` with the scale-mixture prior
  (pi 1/2, sigma1 1, sigma2 e^-6), its posterior predictive averaged over 100 weight draws.

Metrics are on the test split (digits: the last 297 of scikit-learn's 1797 images; MNIST: the
10000 test images), NLL in nats per image, ECE with 10 bins. Blundell et al. (2015) report 1.32%
MNIST test error for 2x1200 units trained far longer; the ``--epochs`` budget is what a CPU
affords.

    python benchmarks/bnn_quality.py --data digits [--epochs 100]
    python benchmarks/bnn_quality.py --data mnist --data-dir ../shared/data [--epochs 20]
        [--hidden 1200,1200] [--device cuda]
"""

import argparse
import datetime
import platform
import time

import pyro
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import pyroext
from pyroext.data import BNNData, load_bnn_data
from pyroext.models.bnn import relu_mlp
from pyroext.models.bnn.job import fit_bnn
from pyroext.models.bnn.predict import predictive_metrics

ROWS = ("deterministic", "bbb", "bbb-lrt")


def deterministic(
    data: BNNData, hidden: tuple[int, ...], args: argparse.Namespace, seed: int
) -> dict:
    torch.manual_seed(seed)
    net = relu_mlp([data.x_train.shape[1], *hidden, int(data.y_train.max()) + 1])
    net = net.to(args.device)
    optim = torch.optim.Adam(net.parameters(), lr=1e-3)
    loader = DataLoader(
        TensorDataset(data.x_train, data.y_train), batch_size=100, shuffle=True, drop_last=True
    )
    start = time.perf_counter()
    for _ in range(args.epochs):
        for x, y in loader:
            x, y = x.to(args.device, non_blocking=True), y.to(args.device, non_blocking=True)
            loss = nn.functional.cross_entropy(net(x), y)
            optim.zero_grad()
            loss.backward()
            optim.step()
    if torch.device(args.device).type == "cuda":
        torch.cuda.synchronize(args.device)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        logits = net(data.x_test.to(args.device)).cpu()
    metrics = predictive_metrics(logits[None], data.y_test)
    return {**metrics, "epochs": args.epochs, "seconds": seconds}


def bayes_by_backprop(
    guide: str, args: argparse.Namespace, hidden: tuple[int, ...], seed: int
) -> dict:
    fit = fit_bnn(
        guide,
        data=args.data,
        data_dir=args.data_dir,
        hidden=hidden,
        epochs=args.epochs,
        device=args.device,
        seed=seed,
        progress=False,
    )
    epochs = fit.summary.loc["epochs", "value"]
    return {**fit.metrics, "epochs": epochs, "seconds": fit.result.wall_time}


def main(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    hidden = tuple(int(width) for width in args.hidden.split(","))
    data = load_bnn_data("classification", args.data, args.data_dir)
    machine = (
        torch.cuda.get_device_name(args.device)
        if torch.device(args.device).type == "cuda"
        else platform.machine()
    )
    print(
        f"# {datetime.date.today()}, {machine}, {args.threads} threads; torch "
        f"{torch.__version__}, pyro {pyro.__version__}, pyroext {pyroext.__version__}"
    )
    print(
        f"# {args.data}: {len(data.y_train)} train / {len(data.y_test)} test, hidden "
        f"{args.hidden}, {args.epochs} epochs, batch 100, Adam 1e-3, seed {args.seed}"
    )
    print("| network | test error (%) | test NLL | ECE | entropy | epochs | train s |")
    print("|---|---|---|---|---|---|---|", flush=True)
    for row in args.rows.split(","):
        if row == "deterministic":
            result = deterministic(data, hidden, args, args.seed)
        else:
            result = bayes_by_backprop(row, args, hidden, args.seed)
        print(
            f"| {row} | {100 * result['error']:.2f} | {result['nll']:.4f} | "
            f"{result['ece']:.4f} | {result['entropy']:.4f} | {result['epochs']:g} | "
            f"{result['seconds']:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--data", default="digits", choices=("digits", "mnist"))
    parser.add_argument("--data-dir", default=None, help="folder holding MNIST/raw")
    parser.add_argument("--hidden", default="400,400")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--rows", default=",".join(ROWS), help="comma-separated subset of rows")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    main(parser.parse_args())
