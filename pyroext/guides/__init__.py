"""Guides: a name registry over Pyro's autoguides and pyroext's own, and Gaussian moments."""

__all__ = ["GUIDES", "gaussian_moments", "make_guide"]

from pyroext.guides.gaussian import gaussian_moments
from pyroext.guides.registry import GUIDES, make_guide
