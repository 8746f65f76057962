"""Guides: pyroext's MCMC-in-guide autoguides (global latents) and the amortised Markov guide
(per-datum latents), free categorical factors for local discrete latents, a name registry over
them and Pyro's autoguides, and Gaussian moments."""

__all__ = [
    "GUIDES",
    "AmortisedMarkovGuide",
    "AutoDAIS",
    "AutoLocalCategorical",
    "AutoMarkovGuide",
    "AutoMetFlow",
    "GuideHealth",
    "gaussian_moments",
    "guide_health",
    "make_guide",
]

from pyroext.guides.amortised import AmortisedMarkovGuide
from pyroext.guides.categorical import AutoLocalCategorical
from pyroext.guides.dais import AutoDAIS
from pyroext.guides.gaussian import gaussian_moments
from pyroext.guides.health import GuideHealth, guide_health
from pyroext.guides.markov import AutoMarkovGuide
from pyroext.guides.metflow import AutoMetFlow
from pyroext.guides.registry import GUIDES, make_guide
