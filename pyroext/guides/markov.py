"""Base class of the MCMC-in-guide autoguides: a Gaussian base followed by K Markov steps.

The guide draws ``z_0`` from a Gaussian ``q_0`` over the model's unconstrained latents, moves
it with ``K`` steps of a Markov kernel that targets the model's own log density, and emits the
final state through the usual :class:`~pyro.infer.autoguide.AutoContinuous` sites. As in
Pyro's own continuous autoguides, the whole density of the guide sits on the auxiliary
``_latent`` site: a ``Delta`` at ``z_K`` whose ``log_density`` is ``log q_0(z_0)`` plus every
term of the extended space (``z_0``, the kernel's auxiliary variables, ``z_K``) and the
constraining Jacobians. The model's latent sites are emitted with ``log_density = 0``, so
Pyro's ``TraceMeanField_ELBO``, which drops ``Delta.log_density`` in its analytic KL, gives
the same (correct) estimate as ``Trace_ELBO``.
"""

__all__ = ["AutoMarkovGuide", "Transport"]

import warnings
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any, ClassVar

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.distributions.util import sum_rightmost
from pyro.infer.autoguide import AutoContinuous
from pyro.infer.autoguide.initialization import init_to_median
from torch import Tensor
from torch.distributions import biject_to

from pyroext.guides.base import GaussianBase, check_base_options, own_elbo_term
from pyroext.guides.compiled_target import CompiledTarget
from pyroext.guides.health import HEALTH_DRAWS, GuideHealth, measure_health
from pyroext.guides.sampling import (
    antithetic_draws,
    common_random_numbers,
    plate_batch_shape,
    unpacked_quantiles,
)
from pyroext.guides.target import (
    Arguments,
    chains_log_density,
    check_full_data,
    max_plate_nesting,
    model_trace,
    needs_data_error,
    picklable,
    unobserved_site,
    untraced_copy,
)
from pyroext.guides.transport import Transport
from pyroext.infer.checkpoint import preserved_rng_state
from pyroext.infer.compiled.capture import same_objects

SUMMARY_DRAWS = 1000
SUMMARY_SEED = 0  # median() and quantiles() share one set of draws, so repeated calls agree


class AutoMarkovGuide(GaussianBase, AutoContinuous):
    """A Gaussian base ``q_0`` over the unconstrained latents followed by ``K`` Markov steps.

    Subclasses implement :meth:`_setup_kernel` (create the kernel's parameters) and
    :meth:`_transport` (run the steps). The guide works with ``Predictive``,
    ``AutoGuideList``, ``torch.save``, ``pyroext.arviz.from_pyro_svi`` (which stores
    :attr:`sample_stats` of each draw in ``sample_stats``, per-step ones along a ``step``
    dimension) and vectorised ELBO particles, which it runs as parallel chains.

    The Markov steps target the posterior, so the guide needs the data: it remembers the
    arguments of its latest call in which every observed site was observed (the training
    data), and a call without the observations, such as ``Predictive(model, guide=guide)(x)``
    on new inputs, targets those remembered data, as a Pyro guide's draws do not depend on the
    new inputs either. In an ``AutoGuideList`` the steps target the part's own (blocked)
    model, in which the latents hidden from it are drawn from their prior at each
    evaluation: a valid bound but a noisier target, so keep dependent latents in one part.

    Arguments:
        model: A Pyro model with continuous latents and no data subsampling.
        K: Number of Markov steps, >= 0; ``K = 0`` is exactly the base Gaussian guide.
        base_dist: ``"diagonal"`` (as :class:`~pyro.infer.autoguide.AutoDiagonalNormal`) or
            ``"cholesky"`` (full rank, as
            :class:`~pyro.infer.autoguide.AutoMultivariateNormal`).
        init_loc_fn: Per-site initialisation of the base mean.
        init_scale: Initial base standard deviation, > 0.
        base_flow: ``None`` (a Gaussian base), ``"iaf"`` (inverse autoregressive flow layers,
            as :class:`~pyro.infer.autoguide.AutoIAFNormal`) or ``"spline"`` (neural spline
            autoregressive layers) between the base's noise and its affine map, starting at
            the identity; with ``K = 0`` the guide is then that flow guide.
        base_flow_layers: Number of flow layers, >= 1.
        base_training: ``"joint"``: the base is trained with the steps, on the guide's bound
            (the MetFlow and DAIS papers' way); ``"own"``: the base is trained on its own ELBO,
            as the K = 0 guide would be, and the steps on the guide's bound from the base's
            draws, which cannot pull the base away from its own optimum (one more target
            evaluation per draw).
        compile_target: Evaluate the target through
            :class:`~pyroext.infer.compiled.CompiledLogDensity`: ``"auto"`` after
            :data:`~pyroext.guides.compiled_target.TARGET_COMPILE_AFTER` training calls,
            ``True`` from the first, ``False`` never. (A compiled ELBO records the whole step,
            target included, and needs none of this.)

    Raises:
        ValueError: For options out of range; at the first call, for a model with discrete
            latents or with scaled (subsampled) sites, or without its observations.
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
        base_training: str = "joint",
        base_flow: str | None = None,
        base_flow_layers: int = 1,
        compile_target: bool | str = "auto",
    ) -> None:
        if isinstance(K, bool) or not isinstance(K, int) or K < 0:
            raise ValueError(f"K={K!r} must be an integer >= 0")
        check_base_options(base_dist, base_training, init_scale, base_flow, base_flow_layers)
        super().__init__(model, init_loc_fn=init_loc_fn)
        # Pyro's self.model runs the init strategy at each of its sites; the target must not.
        self._target_model = (model,)
        self._target = CompiledTarget(compile_target)
        self._data: Arguments | None = None
        self.K = K
        self.base_dist = base_dist
        self.base_training = base_training
        self.base_flow = base_flow
        self.base_flow_layers = base_flow_layers
        self._init_scale = float(init_scale)
        self.sample_stats: dict[str, Tensor] = {}
        self._vectorised: bool | None = None

    @property
    def target_model(self) -> Callable[..., Any]:
        """The model whose posterior the Markov steps target (without the init strategy)."""
        model = self._target_model[0]
        if model is None:
            raise RuntimeError(
                f"{type(self).__name__} was unpickled without its model, which could not be "
                "pickled (a function defined inside another, say); build the guide again with "
                "its model and load the parameters (pyroext.infer.save_guide / load_guide)"
            )
        return model

    def __getstate__(self) -> dict[str, Any]:
        # Pyro's AutoGuide.__getstate__ drops the model from the live guide itself; these
        # guides evaluate the model at every call, so both keep it wherever it pickles.
        for param in self.parameters():
            param.__dict__.pop("unconstrained", None)
        state = self.__dict__.copy()
        state["master"] = None
        if not picklable(self._target_model[0]):
            state["_model"], state["_target_model"] = (None,), (None,)
        return state

    def _setup_prototype(self, *args: Any, **kwargs: Any) -> None:
        super()._setup_prototype(*args, **kwargs)
        full = model_trace(self.target_model, self._prototype_values(), (args, kwargs))
        check_full_data(full, type(self).__name__)
        self._max_plate_nesting = max_plate_nesting(full)
        self._setup_base(self._init_loc(), self._init_scale)
        if self.K:
            self._setup_kernel()

    def _prototype_values(self) -> dict[str, Tensor]:
        return {name: site["value"] for name, site in self.prototype_trace.iter_stochastic_nodes()}

    def _setup_kernel(self) -> None:
        raise NotImplementedError

    def _transport(
        self, z0: Tensor, log_q0: Tensor, base: dist.Distribution, log_joint: Any
    ) -> Transport:
        """Runs the ``K >= 1`` Markov steps from the base draws ``z0``, ``(B, D)``, whose base
        log densities are ``log_q0``."""
        raise NotImplementedError

    def get_posterior(self, *args: Any, **kwargs: Any) -> dist.Distribution:
        raise NotImplementedError(
            f"{type(self).__name__}'s posterior (the law of the chains' final state) has no "
            "closed form; use median(), quantiles() or sample_latents(n) for summaries, "
            "Predictive for draws, or base_distribution() for q_0"
        )

    @torch.no_grad()
    def _loc_scale(self, *args: Any, **kwargs: Any) -> tuple[Tensor, Tensor]:
        """Elementwise median and standard deviation of the draws of :meth:`quantiles`, for
        Pyro code that summarises an AutoContinuous guide by its location and scale."""
        draws = self._summary_draws(args, kwargs)
        return torch.quantile(draws, 0.5, dim=0), draws.std(0)

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
        return self._log_joint_at(z, (args, kwargs))

    def _log_joint_at(self, z: Tensor, data: Arguments) -> Tensor:
        if z.shape[0] > 1 and self._vectorised is not False:
            try:
                total = self._log_joint_chains(z, data)
            except (ValueError, RuntimeError) as error:
                if self._vectorised or "needs the data" in str(error):
                    raise
                self._warn_not_vectorised(error)
            else:
                self._vectorised = True
                return total
        return torch.cat([self._log_joint_chains(row, data) for row in z.split(1)])

    def _warn_not_vectorised(self, error: Exception) -> None:
        self._vectorised = False
        warnings.warn(
            f"{type(self).__name__}: the model does not broadcast over a batch of chains "
            f"({type(error).__name__}: {str(error).partition(chr(10))[0]}); evaluating it one "
            "chain at a time, which is slower",
            UserWarning,
            stacklevel=5,
        )

    def _log_joint_chains(self, z: Tensor, data: Arguments) -> Tensor:
        chains = z.shape[0]
        if chains == 1:
            latent, nesting = z.reshape(z.shape[-1:]), 0
        else:
            nesting = self._max_plate_nesting
            latent = z.reshape((chains,) + (1,) * nesting + z.shape[-1:])
        values, inverse_log_det = self._constrain(latent)
        trace = model_trace(self.target_model, values, data)
        name = type(self).__name__
        missing = unobserved_site(trace)
        if missing is not None:
            raise needs_data_error(name, missing)
        return chains_log_density(trace, chains, nesting, name) - inverse_log_det.reshape(chains)

    def _target_data(self, args: tuple, kwargs: dict[str, Any]) -> Arguments:
        """The data of this call if it observes every observed site, else the remembered."""
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)
        if same_objects(self._data, args, kwargs):
            return self._data
        with preserved_rng_state():  # the check samples the sites it finds unobserved
            trace = model_trace(self.target_model, self._prototype_values(), (args, kwargs))
        missing = unobserved_site(trace)
        if missing is None:
            self._data = (args, kwargs)
            return self._data
        if self._data is None:
            raise needs_data_error(type(self).__name__, missing)
        if torch.jit.is_tracing():
            return untraced_copy(self._data)
        return self._data

    def _move(
        self,
        z0: Tensor,
        log_q0: Tensor,
        base: dist.Distribution,
        log_joint: Callable[[Tensor], Tensor],
    ) -> Transport:
        """Runs the Markov steps from flat base draws ``z0`` (base log densities ``log_q0``)
        and records their statistics."""
        if self.K:
            transport = self._transport(z0, log_q0, base, log_joint)
        else:
            transport = Transport(z0, z0.new_zeros(z0.shape[0]), {})
        if "log_weight" not in transport.sample_stats:
            with torch.no_grad():
                log_weight = log_joint(transport.position) - log_q0 - transport.log_density
            transport.sample_stats["log_weight"] = log_weight
        self.sample_stats = {k: v.detach() for k, v in transport.sample_stats.items()}
        return transport

    def sample_latent(self, *args: Any, **kwargs: Any) -> Tensor:
        """Draws the final states ``z_K`` as the auxiliary ``_latent`` site (see the module
        docstring), one per draw of the enclosing plates; ``(..., D)``, unconstrained."""
        return self._sample(args, kwargs)[0]

    def _sample(self, args: tuple, kwargs: dict[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        log_joint = self._target.bind(self._log_joint_at, self._target_data(args, kwargs))
        base = self.base_distribution()
        z0 = base.rsample(plate_batch_shape())
        # log q_0 of z0 itself, not of a reshaped copy: a flow base reuses its cached inverse.
        log_q0 = base.log_prob(z0).reshape(-1)
        flat = z0.reshape(-1, self.latent_dim)
        if self.base_training == "own" and self.K and torch.is_grad_enabled():
            with self.detached_base():
                chain_base = self.base_distribution()
                transport = self._move(flat.detach(), log_q0.detach(), chain_base, log_joint)
            log_q0 = log_q0.detach() - own_elbo_term(flat, log_q0, log_joint)
        else:
            transport = self._move(flat, log_q0, base, log_joint)
        position = transport.position.reshape(z0.shape)
        values, log_det = self._constrain(position)
        if poutine.get_mask() is False:
            log_det = torch.zeros_like(log_det)
        log_density = (log_q0 + transport.log_density).reshape(z0.shape[:-1]) + log_det
        latent = pyro.sample(
            f"_{self._pyro_name}_latent",
            dist.Delta(position, log_density=log_density, event_dim=1),
            infer={"is_auxiliary": True, "sample_stats": self.sample_stats},
        )
        if latent is not position:  # replayed or conditioned
            values, _ = self._constrain(latent)
        return latent, values

    def forward(self, *args: Any, **kwargs: Any) -> dict[str, Tensor]:
        """Draws the model's latents; see the module docstring for the density bookkeeping."""
        _, values = self._sample(args, kwargs)
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

    @torch.no_grad()
    def sample_latents(self, num_samples: int, *args: Any, **kwargs: Any) -> Tensor:
        """Draws ``num_samples`` final states ``z_K`` (unconstrained, flattened), ``(S, D)``."""
        log_joint = self._target.bind(self._log_joint_at, self._target_data(args, kwargs))
        base = self.base_distribution()
        z0 = base.sample((num_samples,))
        return self._move(z0, base.log_prob(z0), base, log_joint).position

    def health(self, *args: Any, num_draws: int = HEALTH_DRAWS, **kwargs: Any) -> GuideHealth:
        """Acceptance and step size per step on fresh chains (see :func:`measure_health`)."""
        return measure_health(self, num_draws, args, kwargs)

    @torch.no_grad()
    def quantiles(
        self, quantiles: list[float] | Tensor, *args: Any, **kwargs: Any
    ) -> dict[str, Tensor]:
        """Posterior quantiles of each latent site, estimated from 1000 guide draws.

        Quantiles are taken elementwise in the unconstrained space and mapped to the
        constrained one, like Pyro's own ``quantiles`` (exact for scalar supports). The draws
        start from antithetic base draws with a fixed seed (the caller's random state is
        restored), so ``median()`` equals ``quantiles([0.5])``, repeated calls agree, and a
        guide whose steps have not moved yet returns exactly its base's quantiles at 0.5.

        Arguments:
            quantiles: Levels in (0, 1).
            args: The model's positional arguments.
            kwargs: The model's keyword arguments.

        Returns:
            A dict from site name to a tensor with the levels as leading dimension.

        Raises:
            ValueError: If a level is outside (0, 1).
        """
        return unpacked_quantiles(self, self._summary_draws(args, kwargs), quantiles)

    def median(self, *args: Any, **kwargs: Any) -> dict[str, Tensor]:
        """Posterior median of each latent site: ``quantiles([0.5])`` (see there)."""
        return {name: value[0] for name, value in self.quantiles([0.5], *args, **kwargs).items()}

    def _summary_draws(self, args: tuple, kwargs: dict[str, Any]) -> Tensor:
        log_joint = self._target.bind(self._log_joint_at, self._target_data(args, kwargs))
        with common_random_numbers(self.loc.device, SUMMARY_SEED):
            base = self.base_distribution()
            z0 = antithetic_draws(base, SUMMARY_DRAWS // 2)
            return self._move(z0, base.log_prob(z0), base, log_joint).position
