"""Base class of the MCMC-in-guide autoguides: a Gaussian base followed by K Markov steps.

The guide draws ``z_0`` from a Gaussian ``q_0`` over the model's unconstrained latents, moves
it with ``K`` steps of a Markov kernel that targets the model's own log density, and emits the
final state through the usual :class:`~pyro.infer.autoguide.AutoContinuous` sites. Its
density on the extended space (``z_0``, the kernel's auxiliary variables, ``z_K``) enters the
ELBO through one auxiliary ``Delta`` site whose ``log_density`` holds every term beyond
``log q_0(z_0)``, the constraining Jacobians included. The model's latent sites are emitted
with ``log_density = 0``, so Pyro's ``TraceMeanField_ELBO``, which drops
``Delta.log_density`` in its analytic KL, gives the same (correct) estimate as ``Trace_ELBO``.
"""

__all__ = ["AutoMarkovGuide", "Transport"]

import warnings
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any, ClassVar, NamedTuple

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.distributions import constraints
from pyro.distributions.util import sum_rightmost
from pyro.infer.autoguide import AutoContinuous
from pyro.infer.autoguide.initialization import init_to_median
from pyro.nn import PyroParam
from pyro.poutine import runtime
from pyro.poutine.util import site_is_subsample
from torch import Tensor, nn
from torch.distributions import biject_to

BASE_DISTS = ("diagonal", "cholesky")
QUANTILE_SAMPLES = 1000


@contextmanager
def _own_plate_dims() -> Iterator[None]:
    """Runs the model's plates at the dims they had in the prototype trace.

    The guide evaluates the model inside whatever plates enclose the guide (ELBO particles,
    ``Predictive``'s draws). Blocking hides the model from them, but Pyro's global dim
    allocator would still shift or collide the model's plates; the chains broadcast at a dim
    left of the model's plates, which no plate declares.
    """
    allocator = runtime._DIM_ALLOCATOR
    saved, allocator._stack = allocator._stack, []
    try:
        yield
    finally:
        allocator._stack = saved


class Transport(NamedTuple):
    """What the Markov steps did to a batch of ``B`` base draws.

    Fields:
        position: Final unconstrained latents ``z_K``, ``(B, D)``.
        log_density: ``log q(z_0, aux, z_K) - log r(aux | z_K) - log q_0(z_0)``: the guide's
            extended-space log density beyond the base, ``(B,)``. It may carry a zero-valued
            score-function (DiCE) term for discrete choices.
        sample_stats: Per-draw diagnostics, each with leading dimension ``B``; the guide adds
            ``log_weight`` (``log p - log q`` of the extended space) where it is missing.
    """

    position: Tensor
    log_density: Tensor
    sample_stats: dict[str, Tensor]


class AutoMarkovGuide(AutoContinuous):
    """A Gaussian base ``q_0`` over the unconstrained latents followed by ``K`` Markov steps.

    Subclasses implement :meth:`_setup_kernel` (create the kernel's parameters) and
    :meth:`_transport` (run the steps). The guide works with ``Predictive``,
    ``AutoGuideList``, ``pyroext.arviz.from_pyro_svi`` (which stores :attr:`sample_stats` of
    each draw in ``sample_stats``, per-step ones along a ``step`` dimension) and vectorised
    ELBO particles, which it runs as parallel chains.

    Arguments:
        model: A Pyro model with continuous latents and no data subsampling.
        K: Number of Markov steps, >= 0; ``K = 0`` is exactly the base Gaussian guide.
        base_dist: ``"diagonal"`` (as :class:`~pyro.infer.autoguide.AutoDiagonalNormal`) or
            ``"cholesky"`` (full rank, as
            :class:`~pyro.infer.autoguide.AutoMultivariateNormal`).
        init_loc_fn: Per-site initialisation of the base mean.
        init_scale: Initial base standard deviation, > 0.

    Raises:
        ValueError: For options out of range; at the first call, for a model with discrete
            latents or with scaled (subsampled) sites.
    """

    sample_stats_dims: ClassVar[dict[str, tuple[str, ...]]] = {
        "acceptance_rate": ("step",),
        "accepted": ("step",),
        "step_size": ("step",),
    }

    def __init__(
        self,
        model: Callable[..., Any],
        *,
        K: int,
        base_dist: str = "diagonal",
        init_loc_fn: Callable[..., Tensor] = init_to_median,
        init_scale: float = 0.1,
    ) -> None:
        if isinstance(K, bool) or not isinstance(K, int) or K < 0:
            raise ValueError(f"K={K!r} must be an integer >= 0")
        if base_dist not in BASE_DISTS:
            raise ValueError(f"base_dist={base_dist!r} must be one of {', '.join(BASE_DISTS)}")
        if not init_scale > 0:
            raise ValueError(f"init_scale={init_scale!r} must be > 0")
        super().__init__(model, init_loc_fn=init_loc_fn)
        self.K = K
        self.base_dist = base_dist
        self._init_scale = float(init_scale)
        self.sample_stats: dict[str, Tensor] = {}
        self._vectorised: bool | None = None

    def _setup_prototype(self, *args: Any, **kwargs: Any) -> None:
        super()._setup_prototype(*args, **kwargs)
        # The prototype trace hides observed sites; the Markov steps' target needs them all.
        values = {
            name: site["value"] for name, site in self.prototype_trace.iter_stochastic_nodes()
        }
        model = poutine.condition(self.model, values)
        full = poutine.block(poutine.trace(model).get_trace)(*args, **kwargs)
        self._check_full_data(full)
        self._max_plate_nesting = max(
            (
                -frame.dim
                for site in full.nodes.values()
                if site["type"] == "sample"
                for frame in site["cond_indep_stack"]
                if frame.vectorized
            ),
            default=0,
        )
        self.loc = nn.Parameter(self._init_loc())
        self.scale = PyroParam(
            self.loc.new_full((self.latent_dim,), self._init_scale), constraints.softplus_positive
        )
        if self.base_dist == "cholesky":
            self.scale_tril = PyroParam(
                torch.eye(self.latent_dim, dtype=self.loc.dtype, device=self.loc.device),
                constraints.unit_lower_cholesky,
            )
        if self.K:
            self._setup_kernel()

    def _check_full_data(self, trace: poutine.Trace) -> None:
        name = type(self).__name__
        for site in trace.nodes.values():
            if site["type"] != "sample" or site_is_subsample(site):
                continue
            scale = site["scale"]
            if isinstance(scale, Tensor) or scale != 1.0:
                raise ValueError(
                    f"{name}: site {site['name']!r} is scaled by {scale} (a subsampled plate or "
                    "poutine.scale); the Markov steps need the full-data log density, and "
                    "subsampled gradients make them inconsistent. Use subsample_size=None."
                )

    def _setup_kernel(self) -> None:
        raise NotImplementedError

    def _transport(self, z0: Tensor, base: dist.Distribution, log_joint: Any) -> Transport:
        """Runs the ``K >= 1`` Markov steps from the base draws ``z0``, ``(B, D)``."""
        raise NotImplementedError

    def base_distribution(self) -> dist.TorchDistribution:
        """The base ``q_0`` over the flattened unconstrained latents."""
        if self.base_dist == "cholesky":
            scale_tril = self.scale.unsqueeze(-1) * self.scale_tril
            return dist.MultivariateNormal(self.loc, scale_tril=scale_tril)
        return dist.Normal(self.loc, self.scale).to_event(1)

    def get_posterior(self, *args: Any, **kwargs: Any) -> dist.Distribution:
        raise NotImplementedError(
            f"{type(self).__name__} has no closed-form posterior; draw from the guide "
            "(Predictive, or base_distribution() for q_0)"
        )

    def log_joint(self, z: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        """The model's log density over unconstrained latents, per chain.

        ``log p(x, T(z)) + log|det dT/dz|`` with ``T`` the map to the constrained supports;
        the target of the Markov steps. Several chains are evaluated in one model call, with
        the chains at a dim left of the model's plates (as Pyro's vectorised particles); a
        model that cannot broadcast so is evaluated one chain at a time, with a warning.

        Arguments:
            z: Unconstrained latents ``(B, D)``.
            args: The model's positional arguments.
            kwargs: The model's keyword arguments.

        Returns:
            Log densities ``(B,)``.
        """
        if z.shape[0] > 1 and self._vectorised is not False:
            try:
                total = self._log_joint_chains(z, args, kwargs)
            except ValueError as error:
                if self._vectorised or "needs the data" in str(error):
                    raise
                self._warn_not_vectorised(error)
            except RuntimeError as error:
                if self._vectorised:
                    raise
                self._warn_not_vectorised(error)
            else:
                self._vectorised = True
                return total
        return torch.cat([self._log_joint_chains(row, args, kwargs) for row in z.split(1)])

    def _warn_not_vectorised(self, error: Exception) -> None:
        self._vectorised = False
        warnings.warn(
            f"{type(self).__name__}: the model does not broadcast over a batch of chains "
            f"({type(error).__name__}: {str(error).partition(chr(10))[0]}); evaluating it one "
            "chain at a time, which is slower",
            UserWarning,
            stacklevel=4,
        )

    def _log_joint_chains(self, z: Tensor, args: tuple, kwargs: dict[str, Any]) -> Tensor:
        chains = z.shape[0]
        if chains == 1:
            latent, nesting = z.reshape(z.shape[-1:]), 0
        else:
            nesting = self._max_plate_nesting
            latent = z.reshape((chains,) + (1,) * nesting + z.shape[-1:])
        values, inverse_log_det = self._constrain(latent)
        total = -inverse_log_det.reshape(chains)
        with poutine.block(), _own_plate_dims():
            trace = poutine.trace(poutine.condition(self.model, values)).get_trace(*args, **kwargs)
        self._check_observed(trace)
        trace.compute_log_prob()
        for site in trace.nodes.values():
            if site["type"] == "sample" and "log_prob" in site:
                total = total + self._per_chain(site["log_prob"], chains)
        return total

    def _check_observed(self, trace: poutine.Trace) -> None:
        for site in trace.nodes.values():
            if (
                site["type"] == "sample"
                and not site["is_observed"]
                and not site_is_subsample(site)
            ):
                raise ValueError(
                    f"{type(self).__name__} targets the posterior, so it needs the data: call "
                    f"it with the arguments it was trained with (site {site['name']!r} is not "
                    "observed). For predictions, draw the latents with Predictive(model, "
                    "guide=guide, return_sites=[...])(*data), then Predictive(model, "
                    "posterior_samples=...)(*new_inputs)."
                )

    def _per_chain(self, log_prob: Tensor, chains: int) -> Tensor:
        nesting = self._max_plate_nesting
        if chains == 1 or log_prob.dim() <= nesting:
            return log_prob.sum().expand(chains)
        if log_prob.dim() > nesting + 1:
            raise ValueError(
                f"{type(self).__name__}: a log density of shape {tuple(log_prob.shape)} has "
                f"more batch dimensions than the model's {nesting} plates"
            )
        return log_prob.reshape(log_prob.shape[0], -1).sum(-1).expand(chains)

    def forward(self, *args: Any, **kwargs: Any) -> dict[str, Tensor]:
        """Draws the model's latents; see the class docstring for the density bookkeeping."""
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)
        base = self.base_distribution()
        z0 = pyro.sample(f"_{self._pyro_name}_base", base, infer={"is_auxiliary": True})
        batch_shape = z0.shape[:-1]
        flat = z0.reshape(-1, self.latent_dim)

        def log_joint(z: Tensor) -> Tensor:
            return self.log_joint(z, *args, **kwargs)

        if self.K:
            transport = self._transport(flat, base, log_joint)
        else:
            transport = Transport(flat, flat.new_zeros(flat.shape[0]), {})
        if "log_weight" not in transport.sample_stats:
            with torch.no_grad():
                log_weight = (
                    log_joint(transport.position) - base.log_prob(flat) - transport.log_density
                )
            transport.sample_stats["log_weight"] = log_weight
        latent = transport.position.reshape(z0.shape)
        values, log_det = self._constrain(latent)
        if poutine.get_mask() is False:
            log_det = torch.zeros_like(log_det)
        self.sample_stats = {k: v.detach() for k, v in transport.sample_stats.items()}
        correction = transport.log_density.reshape(batch_shape) + log_det
        pyro.sample(
            f"_{self._pyro_name}_latent",
            dist.Delta(latent, log_density=correction, event_dim=1),
            infer={"is_auxiliary": True, "sample_stats": self.sample_stats},
        )
        plates = self._create_plates(*args, **kwargs)
        result = {}
        for name, value in values.items():
            with ExitStack() as stack:
                for frame in self._cond_indep_stacks[name]:
                    stack.enter_context(plates[frame.name])
                event_dim = self.prototype_trace.nodes[name]["fn"].event_dim
                result[name] = pyro.sample(name, dist.Delta(value, event_dim=event_dim))
        return result

    def _constrain(self, latent: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        """Constrained values by site, and ``log|det dT^-1/dx|`` summed to the batch shape of
        ``latent`` (the negative of the log-Jacobian of constraining)."""
        batch_shape = latent.shape[:-1]
        values, log_det = {}, latent.new_zeros(batch_shape)
        for site, unconstrained in self._unpack_latent(latent):
            transform = biject_to(site["fn"].support)
            values[site["name"]] = value = transform(unconstrained)
            term = transform.inv.log_abs_det_jacobian(value, unconstrained)
            term = sum_rightmost(term, term.dim() - value.dim() + site["fn"].event_dim)
            log_det = log_det + term.sum_to_size(batch_shape)
        return values, log_det

    def _loc_scale(self, *args: Any, **kwargs: Any) -> tuple[Tensor, Tensor]:
        raise NotImplementedError(f"{type(self).__name__} has no location-scale form")

    @torch.no_grad()
    def sample_latents(self, num_samples: int, *args: Any, **kwargs: Any) -> Tensor:
        """Draws ``num_samples`` final states ``z_K`` (unconstrained, flattened), ``(S, D)``."""
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)
        name = f"_{self._pyro_name}_latent"
        with (
            poutine.block(),
            pyro.plate("_pyroext_draws", num_samples, dim=-self._max_plate_nesting - 1),
        ):
            trace = poutine.trace(self).get_trace(*args, **kwargs)
        return trace.nodes[name]["value"].reshape(num_samples, self.latent_dim)

    def quantiles(
        self, quantiles: list[float] | Tensor, *args: Any, **kwargs: Any
    ) -> dict[str, Tensor]:
        """Posterior quantiles of each latent site, estimated from 1000 guide draws.

        Quantiles are taken elementwise in the unconstrained space and mapped to the
        constrained one, like Pyro's own ``quantiles`` (exact for scalar supports).

        Arguments:
            quantiles: Levels in (0, 1).
            args: The model's positional arguments.
            kwargs: The model's keyword arguments.

        Returns:
            A dict from site name to a tensor with the levels as leading dimension.
        """
        draws = self.sample_latents(QUANTILE_SAMPLES, *args, **kwargs)
        levels = torch.as_tensor(quantiles, dtype=draws.dtype, device=draws.device)
        latent = torch.quantile(draws, levels, dim=0)
        values, _ = self._constrain(latent)
        return values

    def median(self, *args: Any, **kwargs: Any) -> dict[str, Tensor]:
        """Posterior median of each latent site, estimated from 1000 guide draws."""
        return {name: value[0] for name, value in self.quantiles([0.5], *args, **kwargs).items()}
