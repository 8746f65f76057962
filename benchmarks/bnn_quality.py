"""Test error, NLL and calibration of Bayes-by-backprop networks against the same deterministic
network.

Each row trains a ReLU MLP (hidden widths ``--hidden``, 400-400 by default) for ``--epochs``
passes with Adam(lr=1e-3) on minibatches of 100:

- ``deterministic``: plain PyTorch, cross-entropy, the network's own default initialisation;
- ``bbb`` and ``bbb-lrt``: :func:`pyroext.models.bnn.job.fit_bnn` with the scale-mixture prior
  (pi 1/2, sigma1 1, sigma2 e^-6), its posterior predictive averaged over 100 weight draws.

Metrics are on the test split (digits: the last 297 of scikit-learn's 1797 images; MNIST: the
10000 test images), NLL in nats per image, ECE with 10 bins. Blundell et al. (2015) report 1.32%
MNIST test error for 2x1200 units trained far longer; the ``--epochs`` budget is what a CPU
affords.

    python benchmarks/bnn_quality.py --data digits [--epochs 100] [--quick]
    python benchmarks/bnn_quality.py --data mnist --data-dir ../shared/data [--epochs 20]
        [--hidden 1200,1200] [--device cuda]
"""

import argparse
import time

import torch
from _harness import Options, Table, begin, synchronize
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from pyroext.data import BNNData, load_bnn_data
from pyroext.models.bnn import relu_mlp
from pyroext.models.bnn.job import fit_bnn
from pyroext.models.bnn.predict import predictive_metrics

ROWS = ("deterministic", "bbb", "bbb-lrt")


def deterministic(data: BNNData, hidden: tuple[int, ...], args: argparse.Namespace) -> dict:
    """Trains the plain network; its test metrics, epochs and training seconds."""
    torch.manual_seed(args.seed)
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
    synchronize(args.device)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        logits = net(data.x_test.to(args.device)).cpu()
    metrics = predictive_metrics(logits[None], data.y_test)
    return {**metrics, "epochs": args.epochs, "seconds": seconds}


def bayes_by_backprop(guide: str, hidden: tuple[int, ...], args: argparse.Namespace) -> dict:
    """Trains ``guide`` with ``fit_bnn``; its test metrics, epochs and training seconds."""
    fit = fit_bnn(
        guide=guide,
        data=args.data,
        data_dir=args.data_dir,
        hidden=hidden,
        epochs=args.epochs,
        device=args.device,
        seed=args.seed,
        progress=False,
    )
    epochs = fit.summary.loc["epochs", "value"]
    return {**fit.metrics, "epochs": epochs, "seconds": fit.result.wall_time}


def main() -> None:
    options = Options(__doc__)
    options.data("digits")
    options.add("--hidden", full="400,400", help="hidden widths")
    options.add("--epochs", full=100, quick=1, type=int, help="training epochs of every row")
    options.add("--rows", full=",".join(ROWS), help="comma-separated subset of rows")
    options.threads(2)
    options.add("--seed", full=0, type=int, help="seed of every row")
    options.device()
    args = options.parse()
    hidden = tuple(int(width) for width in args.hidden.split(","))
    begin(
        args,
        f"{args.data}, hidden {args.hidden}, {args.epochs} epochs, batch 100, Adam 1e-3, "
        f"seed {args.seed}",
    )
    data = load_bnn_data("classification", args.data, args.data_dir)
    print(f"# {len(data.y_train)} train / {len(data.y_test)} test")
    table = Table("network", "test error (%)", "test NLL", "ECE", "entropy", "epochs", "train s")
    for row in args.rows.split(","):
        if row == "deterministic":
            result = deterministic(data, hidden, args)
        else:
            result = bayes_by_backprop(row, hidden, args)
        table.row(
            row,
            f"{100 * result['error']:.2f}",
            *(f"{result[key]:.4f}" for key in ("nll", "ece", "entropy")),
            f"{result['epochs']:g}",
            f"{result['seconds']:.0f}",
        )


if __name__ == "__main__":
    main()
