"""Files a fit writes: loss history, posterior summary table and loss curve."""

__all__ = ["posterior_summary", "write_fit_outputs"]

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # the CLI runs headless (CI, servers); never open a window

import matplotlib.pyplot as plt
import pandas as pd
import torch

from pyroext.infer import SVIResult


def posterior_summary(samples: torch.Tensor, names: list[str], prob: float = 0.9) -> pd.DataFrame:
    """Mean, sd and central interval of each coordinate of posterior draws.

    Arguments:
        samples: Draws of shape ``(num_draws, len(names))``.
        names: One label per coordinate.
        prob: Mass of the central interval.

    Returns:
        A table indexed by ``names`` with columns ``mean``, ``sd`` and the two quantiles.
    """
    if samples.ndim != 2 or samples.shape[1] != len(names):
        raise ValueError(
            f"samples of shape {tuple(samples.shape)} do not match {len(names)} names"
        )
    draws = samples.detach().double().cpu()
    tails = torch.tensor([(1 - prob) / 2, (1 + prob) / 2], dtype=draws.dtype)
    low, high = torch.quantile(draws, tails, dim=0)
    percent = [f"{100 * t:g}%" for t in tails.tolist()]
    table = {"mean": draws.mean(0), "sd": draws.std(0), percent[0]: low, percent[1]: high}
    return pd.DataFrame(
        {k: v.numpy() for k, v in table.items()}, index=pd.Index(names, name="parameter")
    )


def write_fit_outputs(
    out: str | Path, result: SVIResult, summary: pd.DataFrame, title: str
) -> Path:
    """Writes ``losses.csv``, ``summary.csv`` and ``loss.png`` into ``out``.

    Arguments:
        out: Output folder, created if missing.
        result: The training result.
        summary: The posterior summary table.
        title: Title of the loss plot.

    Returns:
        The output folder.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    result.loss_series().to_csv(out / "losses.csv")
    summary.to_csv(out / "summary.csv")
    figure, axis = plt.subplots(figsize=(6, 3.5))
    series = result.loss_series()
    axis.plot(series.index, series.values, lw=0.6, alpha=0.4, label="loss")
    window = max(1, len(series) // 50)
    axis.plot(series.rolling(window).mean(), lw=1.5, label=f"{window}-step mean")
    axis.set(xlabel="step", ylabel="loss (negative ELBO)", title=title)
    axis.set_yscale("symlog")
    axis.legend()
    figure.tight_layout()
    figure.savefig(out / "loss.png", dpi=120)
    plt.close(figure)
    return out
