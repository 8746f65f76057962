"""Per-draw sampler statistics that Pyro's MCMC does not keep, recorded by a ``hook_fn``.

The records are laid out ``(chain, draw)``, as :func:`~pyroext.arviz.from_pyro` takes them for
its ``sample_stats`` group.
"""

__all__ = ["SampleStatsHook", "collect_sample_stats"]

from collections import defaultdict
from typing import Any

import numpy as np
from pyro.infer.mcmc import HMC, NUTS


class SampleStatsHook:
    """An MCMC ``hook_fn`` that records per-draw sampler statistics.

    It records, for each post-warmup draw and where the kernel exposes them: ``lp`` (minus
    the potential energy, i.e. the log joint density in the unconstrained space including the
    log Jacobian), ``acceptance_rate``, ``diverging``, ``step_size`` and, for fixed-length
    HMC, ``n_steps``. Pyro's NUTS does not expose its tree depth, so ``tree_depth`` and
    ``reached_max_treedepth`` are not recorded.

    The hook must run in this process: with ``num_chains > 1`` Pyro runs chains in worker
    processes when enough CPUs are free, and then nothing is recorded here.
    """

    def __init__(self) -> None:
        self._chains: dict[int, dict[str, list[Any]]] = {}
        self._mean_accept: dict[int, float] = {}

    def __call__(self, kernel: Any, params: Any, stage: str, i: int) -> None:
        """Records the statistics of draw ``i`` (called by :class:`pyro.infer.MCMC`)."""
        if not stage.startswith("Sample"):
            return
        chain = int(stage[stage.index("[") + 1 : stage.index("]")]) if "[" in stage else 0
        if i == 0:
            self._chains[chain] = defaultdict(list)
        for name, value in self._read(kernel, chain, i).items():
            self._chains[chain][name].append(value)

    @property
    def records(self) -> dict[str, np.ndarray]:
        """The statistics, each of shape ``(chain, draw)``; pass them as ``sample_stats``."""
        chains = [self._chains[chain] for chain in sorted(self._chains)]
        names = chains[0] if chains else {}
        return {name: np.array([chain[name] for chain in chains]) for name in names}

    def _read(self, kernel: Any, chain: int, i: int) -> dict[str, Any]:
        stats = {}
        energy = getattr(kernel, "_potential_energy_last", getattr(kernel, "_energy_last", None))
        if energy is not None:
            stats["lp"] = -float(energy)
        mean = getattr(kernel, "_mean_accept_prob", None)
        if mean is not None:
            # Kernels keep only the running mean over the chain's draws; undo the averaging.
            previous = self._mean_accept.get(chain, 0.0) if i else 0.0
            stats["acceptance_rate"] = min(max((i + 1) * mean - i * previous, 0.0), 1.0)
            self._mean_accept[chain] = mean
        divergences = getattr(kernel, "_divergences", None)
        if divergences is not None:
            stats["diverging"] = bool(divergences) and divergences[-1] == i
        if isinstance(kernel, HMC):
            stats["step_size"] = float(kernel.step_size)
            if not isinstance(kernel, NUTS):
                stats["n_steps"] = kernel.num_steps
        return stats


def collect_sample_stats() -> SampleStatsHook:
    """A ``hook_fn`` for :class:`pyro.infer.MCMC` that records per-draw sampler statistics.

    Example::

        hook = collect_sample_stats()
        mcmc = MCMC(NUTS(model), num_samples=500, hook_fn=hook)
        mcmc.run(data)
        dt = from_pyro(mcmc, sample_stats=hook.records)

    Returns:
        A fresh :class:`SampleStatsHook`.
    """
    return SampleStatsHook()
