"""Tables and figures of a fit: posterior summary of draws and the loss curve."""

__all__ = ["plot_losses", "posterior_summary"]

import matplotlib.pyplot as plt
import pandas as pd
import torch


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


def plot_losses(series: pd.Series, title: str, reference_loss: float | None = None) -> plt.Figure:
    """The loss per step, its running mean and, if known, the exact bound ``-log p(data)``.

    Arguments:
        series: Loss by step (:meth:`~pyroext.infer.SVIResult.loss_series`).
        title: Title of the figure.
        reference_loss: ``-log p(data)``, below every loss, to draw as a line.

    Returns:
        The figure.
    """
    figure, axis = plt.subplots(figsize=(6, 3.5))
    window = max(1, len(series) // 50)
    smooth = series.rolling(window).mean()
    axis.plot(series.index, series.values, lw=0.5, alpha=0.35, label="loss")
    axis.plot(smooth.index, smooth.values, lw=1.5, label=f"{window}-step mean")
    if reference_loss is not None:
        axis.axhline(reference_loss, color="k", ls="--", lw=1, label="-log evidence (exact)")
    # the first steps are orders of magnitude above the rest: zoom on the settled part
    settled = series.iloc[len(series) // 10 :]
    if len(settled) > 1:
        low, high = settled.quantile([0.01, 0.99])
        low = min(low, reference_loss) if reference_loss is not None else low
        pad = 0.1 * (high - low) + 1e-9
        axis.set_ylim(low - pad, high + pad)
    axis.set(xlabel="step", ylabel="loss (negative ELBO)", title=title)
    axis.legend()
    figure.tight_layout()
    return figure
