"""ArviZ 1.x export of Pyro results: ``xarray.DataTree`` objects that follow the ArviZ schema.

:func:`from_pyro_svi` exports a trained guide and :func:`from_pyro` an MCMC run;
:func:`collect_sample_stats` records the per-draw sampler statistics that Pyro's MCMC does not
keep, for :func:`from_pyro`'s ``sample_stats``.
"""

__all__ = ["SampleStatsHook", "collect_sample_stats", "from_pyro", "from_pyro_svi"]

from pyroext.arviz.converter import from_pyro, from_pyro_svi
from pyroext.arviz.hook import SampleStatsHook, collect_sample_stats
