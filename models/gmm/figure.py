"""The figure of a fitted Gaussian mixture: data coloured by responsibility, with ellipses."""

__all__ = ["plot_mixture"]

import math

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import Ellipse

# 1 and 2 standard deviations of a 2-D Gaussian hold 39% and 86% of its mass.
ELLIPSE_RADII = (1.0, 2.0)
MAX_LEGEND = 10  # the palette's colours: beyond them entries repeat, and placing them is slow


def plot_mixture(
    x: torch.Tensor,
    *,
    responsibilities: torch.Tensor,
    weights: torch.Tensor,
    locs: torch.Tensor,
    covariances: torch.Tensor,
    feature_names: tuple[str, ...],
    title: str,
) -> plt.Figure:
    """Scatter of the first two features, each point coloured by its responsibilities.

    A point's colour mixes the components' colours with its responsibilities as weights, so
    points between clusters show as blends; each component gets its 1- and 2-sd ellipses (the
    marginal of its first two features) and, for up to ten components, its weight in the
    legend.

    Arguments:
        x: Data ``(N, D)``, ``D >= 2``.
        responsibilities: ``(N, K)``, rows summing to 1.
        weights: ``(K,)``.
        locs: ``(K, D)``.
        covariances: ``(K, D, D)``.
        feature_names: ``D`` names; the first two label the axes.
        title: Title of the plot.

    Returns:
        The figure.

    Raises:
        ValueError: If the data have fewer than two features.
    """
    if x.ndim != 2 or x.shape[1] < 2:
        raise ValueError(f"x must have shape (N, D) with D >= 2, got {tuple(x.shape)}")
    k = locs.shape[0]
    palette = plt.get_cmap("tab10")(np.arange(k) % 10)[:, :3]
    colours = np.clip(responsibilities.double().numpy() @ palette, 0.0, 1.0)
    figure, axis = plt.subplots(figsize=(6, 5))
    points = x[:, :2].double().numpy()
    axis.scatter(points[:, 0], points[:, 1], c=colours, s=12, alpha=0.8, linewidths=0)
    for j in range(k):
        centre = locs[j, :2].double().numpy()
        cov = covariances[j, :2, :2].double()
        for radius in ELLIPSE_RADII:
            axis.add_patch(_ellipse(centre, cov, radius, palette[j]))
        label = f"component {j}: weight {float(weights[j]):.2f}" if k <= MAX_LEGEND else None
        axis.plot(*centre, marker="x", color=palette[j], ms=9, mew=2, ls="", label=label)
    axis.set(xlabel=feature_names[0], ylabel=feature_names[1], title=title)
    if k <= MAX_LEGEND:
        axis.legend(loc="best", fontsize=8)
    figure.tight_layout()
    return figure


def _ellipse(centre: np.ndarray, cov: torch.Tensor, radius: float, colour: np.ndarray) -> Ellipse:
    values, vectors = torch.linalg.eigh(cov)
    angle = math.degrees(math.atan2(float(vectors[1, 1]), float(vectors[0, 1])))
    width, height = (2 * radius * values.clamp_min(0).sqrt()).flip(0).tolist()
    return Ellipse(
        centre, width, height, angle=angle, fill=False, color=colour, lw=1.5 / radius, alpha=0.9
    )
