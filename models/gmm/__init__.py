"""Gaussian mixture: the Pyro models and guides (``model``), EM and CAVI references (``em``,
``vb``), label switching (``labels``), the fitting job and its figure.

The names below come from :mod:`pyroext.models.gmm.model`.
"""

from pyroext.models.gmm.model import *  # noqa: F403
from pyroext.models.gmm.model import __all__ as __all__
