"""Exact quantities of AutoMetFlow by enumerating its discrete paths on a 2-D target (for
``tests/guides/test_metflow_exact.py``, whose docstring describes them): a perturbed guide on a
normalised Gaussian mixture, the backward (``3^K``) and forward (``4^K``) recursions written
from the MetFlow definitions, and Monte Carlo gradient estimates."""

import functools
import math
from collections.abc import Iterator
from typing import NamedTuple

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.infer import Trace_ELBO
from torch import Tensor
from torch.distributions import constraints

from pyroext.guides.metflow import AutoMetFlow

F64 = torch.float64
MIX_PROBS = (0.4, 0.6)
MIX_LOCS = ((-1.5, 0.0), (1.5, 0.5))
MIX_COVS = (((0.5, 0.2), (0.2, 0.4)), ((0.3, -0.1), (-0.1, 0.6)))

GUIDE_SEED = 4
PERTURBATION = 0.3  # sd of the noise added to every flow parameter
REVERSE_PERTURBATION = 0.5  # sd of the noise added to a learned reverse model's logits
DIRECTION_LOGIT = 0.4
GRID_HALF_WIDTH = 8.0
GRID_POINTS = 201
# MH's log(1 - alpha) has a log singularity where alpha reaches 1, which a coarse grid resolves
# poorly in the gradient (201 points: 8% off for K = 1; 401 points: 0.5%).
GRADIENT_GRID_POINTS = 401
GRID_CHUNK = 20_000
NUM_DRAWS = 20_000
NUM_WEIGHT_DRAWS = 50_000
WEIGHT_CAP = 5.0  # E[min(w, cap)] has a valid CLT error; the weights' variance is infinite
GRADIENT_BATCHES = 10
GRADIENT_PARTICLES = 20_000
ABLATION_BATCHES = 4
SOFT_BIN_CUTS = (-1.0, 1.0)
SOFT_BIN_WIDTH = 0.25


class _RealVectorMixture(dist.MixtureSameFamily):
    """A Gaussian mixture on R^2: torch registers no bijection for the mixture's own support."""

    support = constraints.real_vector


def mixture_model() -> None:
    mixture = _RealVectorMixture(
        dist.Categorical(torch.tensor(MIX_PROBS, dtype=F64)),
        dist.MultivariateNormal(
            torch.tensor(MIX_LOCS, dtype=F64), torch.tensor(MIX_COVS, dtype=F64)
        ),
    )
    pyro.sample("z", mixture)


def _perturbed_guide(K: int, acceptance: str, reverse_model: str) -> AutoMetFlow:
    """A guide with q_0 = N(loc, I), a clearly non-identity flow and, when learned, a reverse
    model away from the fixed one (fixed seed)."""
    pyro.set_rng_seed(GUIDE_SEED)
    guide = AutoMetFlow(
        mixture_model, K=K, acceptance=acceptance, init_scale=1.0, reverse_model=reverse_model
    )
    guide()
    torch.manual_seed(GUIDE_SEED)  # the flow does not depend on what the call drew
    with torch.no_grad():
        for param in guide.flow.parameters():
            param.add_(PERTURBATION * torch.randn_like(param))
        guide.direction_logit.fill_(DIRECTION_LOGIT)
        if reverse_model == "learned":
            logits = guide.reverse_logits
            logits.add_(REVERSE_PERTURBATION * torch.randn_like(logits))
        if reverse_model == "conditional":  # its output starts at zero: made to depend on z_K
            for param in guide.reverse_net.parameters():
                param.add_(REVERSE_PERTURBATION * torch.randn_like(param))
    return guide


def _grid(points: int = GRID_POINTS) -> tuple[Tensor, Tensor]:
    """Points ``(n^2, 2)`` of a square grid and their 2-D trapezoid weights ``(n^2,)``."""
    axis = torch.linspace(-GRID_HALF_WIDTH, GRID_HALF_WIDTH, points, dtype=F64)
    step = float(axis[1] - axis[0])
    weights = torch.full_like(axis, step)
    weights[[0, -1]] = step / 2
    return torch.cartesian_prod(axis, axis), torch.outer(weights, weights).reshape(-1)


# The MetFlow kernel, written from its definition.


def _log_q0(guide: AutoMetFlow, z: Tensor) -> Tensor:
    return dist.Normal(guide.loc, guide.scale).to_event(1).log_prob(z)


def _log_p_direction(guide: AutoMetFlow, v: int) -> Tensor:
    """``log P(v)``: ``v = +1`` proposes ``T``, ``v = -1`` proposes ``T^-1``."""
    return F.logsigmoid(v * guide.direction_logit)


def _move(guide: AutoMetFlow, step: int, z: Tensor, v: int) -> tuple[Tensor, Tensor]:
    """``(T^v(z), log|det dT^v/dz|)`` for the flow of ``step`` (innovation ``u_step``)."""
    forward, inverse = guide.moves()[step]
    return (forward if v > 0 else inverse)(z)


def _log_reverse_over_direction(guide: AutoMetFlow, step: int, v: int, accepted: bool) -> Tensor:
    """``log r_step(v, b) - log P(v)``: ``-log 2`` for the authors' fixed reverse model; 0 for
    a conditional one, which :func:`_log_conditional_reverse` adds once ``z_K`` is known."""
    if guide.reverse_model == "conditional":
        return torch.tensor(0.0, dtype=F64)
    logits = getattr(guide, "reverse_logits", None)
    if logits is None:
        return torch.tensor(-math.log(2), dtype=F64)
    outcome = 2 * int(v < 0) + int(not accepted)
    return torch.log_softmax(logits[step], -1)[outcome] - _log_p_direction(guide, v)


def _log_conditional_reverse(
    guide: AutoMetFlow, outcomes: tuple[tuple[int, bool], ...], z: Tensor
) -> Tensor:
    """``sum_k log r_k(v_k, b_k | z_K) - log P(v_k)`` of a path's outcomes ``(v_k, b_k)``
    ending at ``z_K`` (0 for the reverse models that do not look at ``z_K``)."""
    if guide.reverse_model != "conditional":
        return torch.zeros(z.shape[:-1], dtype=F64)
    log_r = torch.log_softmax(guide.conditional_reverse_logits(z), -1)
    total = torch.zeros(z.shape[:-1], dtype=F64)
    for step, (v, accepted) in enumerate(outcomes):
        outcome = 2 * int(v < 0) + int(not accepted)
        total = total + log_r[..., step, outcome] - _log_p_direction(guide, v)
    return total


def _log_accept_reject(log_ratio: Tensor, acceptance: str) -> tuple[Tensor, Tensor, Tensor]:
    """``(log alpha, log(1 - alpha), 1 - alpha > 0)``; ``log(1 - alpha) = -inf`` where MH
    accepts surely, with no NaN in its gradient."""
    if acceptance == "barker":
        return F.logsigmoid(log_ratio), F.logsigmoid(-log_ratio), torch.ones_like(log_ratio) > 0
    can_reject = log_ratio < 0
    safe = torch.where(can_reject, log_ratio, -1.0)
    log_reject = torch.where(can_reject, torch.log(-torch.expm1(safe)), -math.inf)
    return log_ratio.clamp(max=0.0), log_reject, can_reject


def _log_ratio(
    guide: AutoMetFlow, step: int, z: Tensor, v: int, log_gamma: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(log t, T^v(z), log gamma(T^v z), log|det|)`` of proposing ``T^v`` from ``z``."""
    if log_gamma is None:
        log_gamma = guide.log_joint(z)
    moved, log_det = _move(guide, step, z, v)
    log_gamma_moved = guide.log_joint(moved)
    log_ratio = (
        log_gamma_moved
        - log_gamma
        + log_det
        + _log_p_direction(guide, -v)
        - _log_p_direction(guide, v)
    )
    return log_ratio, moved, log_gamma_moved, log_det


def _log_marginal(guide: AutoMetFlow, acceptance: str, z: Tensor, steps: int) -> Tensor:
    """``log q_steps(z)``, the density of the state after ``steps`` steps.

    ``q_k(z) = sum_v P(v) alpha_v(x_v) |det dT^v(x_v)|^-1 q_{k-1}(x_v)`` with
    ``x_v = T^-v(z)`` (the accepted moves landing on ``z``) ``+ P(reject | z) q_{k-1}(z)``.
    """
    if steps == 0:
        return _log_q0(guide, z)
    step = steps - 1
    log_gamma = guide.log_joint(z)
    terms, log_rejects = [], []
    for v in (1, -1):
        previous, _ = _move(guide, step, z, -v)
        log_ratio, _, _, log_det = _log_ratio(guide, step, previous, v)
        log_accept, _, _ = _log_accept_reject(log_ratio, acceptance)
        log_previous = _log_marginal(guide, acceptance, previous, step)
        terms.append(log_previous + _log_p_direction(guide, v) + log_accept - log_det)
        log_ratio, _, _, _ = _log_ratio(guide, step, z, v, log_gamma)
        _, log_reject, _ = _log_accept_reject(log_ratio, acceptance)
        log_rejects.append(_log_p_direction(guide, v) + log_reject)
    log_stay = torch.logsumexp(torch.stack(log_rejects), 0)
    terms.append(_log_marginal(guide, acceptance, z, step) + log_stay)
    return torch.logsumexp(torch.stack(terms), 0)


class _Path(NamedTuple):
    """One of the ``4^K`` paths from each ``z_0``.

    Fields:
        log_prob: ``log q_0(z_0) + sum_k log P(v_k) + log P(b_k | v_k, z_{k-1})``.
        log_weight: ``log gamma(z_K) - log q_0(z_0) + sum_k ldj_k
            - sum_k log P(v_k, b_k | z_{k-1}) + sum_k log r_k(v_k, b_k)`` (the bound's
            integrand; ``r_k = P(v) / 2`` for the fixed reverse model).
        position: ``z_K``.
        possible: Where the path has positive probability (MH never rejects ``alpha = 1``).
    """

    log_prob: Tensor
    log_weight: Tensor
    position: Tensor
    possible: Tensor


def _paths(guide: AutoMetFlow, acceptance: str, z0: Tensor) -> Iterator[_Path]:
    """The ``4^K`` paths from ``z_0``, depth first (one path's tensors alive at a time)."""
    log_q0 = _log_q0(guide, z0)
    reverse = functools.partial(_log_reverse_over_direction, guide)

    def walk(step, z, log_gamma, log_prob, log_weight, possible, outcomes=()):
        if step == guide.K:
            log_weight = log_weight + log_gamma + _log_conditional_reverse(guide, outcomes, z)
            yield _Path(log_prob, log_weight, z, possible)
            return
        for v in (1, -1):
            log_ratio, moved, log_gamma_moved, log_det = _log_ratio(guide, step, z, v, log_gamma)
            log_accept, log_reject, can_reject = _log_accept_reject(log_ratio, acceptance)
            log_prob_v = log_prob + _log_p_direction(guide, v)
            yield from walk(
                step + 1,
                moved,
                log_gamma_moved,
                log_prob_v + log_accept,
                log_weight
                + log_det
                - log_accept
                + _log_reverse_over_direction(guide, step, v, True),
                possible,
                (*outcomes, (v, True)),
            )
            log_reject = torch.where(can_reject, log_reject, 0.0)
            yield from walk(
                step + 1,
                z,
                log_gamma,
                log_prob_v + log_reject,
                log_weight - log_reject + reverse(step, v, False),
                possible & can_reject,
                (*outcomes, (v, False)),
            )

    log_weight = -log_q0
    yield from walk(0, z0, guide.log_joint(z0), log_q0, log_weight, torch.ones_like(log_q0) > 0)


class _ForwardSums(NamedTuple):
    """Expectations under the guide, summed over paths and integrated over ``z_0``."""

    mass: Tensor  # sum over paths of the path probabilities (must be 1)
    mean: Tensor  # E[z_K]
    bound: Tensor  # L_ext = E[log w]
    weight: Tensor  # E[w]
    capped_weight: Tensor  # E[min(w, WEIGHT_CAP)]


def _forward_sums(
    guide: AutoMetFlow, acceptance: str, z0: Tensor, weights: Tensor
) -> _ForwardSums:
    """Sums over the paths from the grid points ``z0`` with integration weights ``weights``."""
    sums = dict.fromkeys(_ForwardSums._fields, 0.0)
    for path in _paths(guide, acceptance, z0):
        prob = torch.where(path.possible, weights * path.log_prob.exp(), 0.0)
        # q w = gamma(z_K) |det dz_K/dz_0| r: finite where q underflows and w overflows.
        prob_weight = torch.where(
            path.possible, weights * (path.log_prob + path.log_weight).exp(), 0.0
        )
        capped = path.log_weight.clamp(max=math.log(WEIGHT_CAP)).exp()
        sums["mass"] = sums["mass"] + prob.sum()
        sums["mean"] = sums["mean"] + prob @ path.position
        sums["bound"] = sums["bound"] + (prob * path.log_weight).sum()
        sums["weight"] = sums["weight"] + prob_weight.sum()
        sums["capped_weight"] = sums["capped_weight"] + (prob * capped).sum()
    return _ForwardSums(**sums)


class _Case(NamedTuple):
    guide: AutoMetFlow
    acceptance: str
    grid: Tensor
    grid_weights: Tensor
    log_gamma: Tensor  # on the grid
    log_marginal: Tensor  # log q_K on the grid
    forward: _ForwardSums


@functools.cache
def _case(K: int, acceptance: str, reverse_model: str = "fixed") -> _Case:
    """The perturbed guide and its exact grid quantities, shared by the tests of one setup."""
    guide = _perturbed_guide(K, acceptance, reverse_model)
    grid, grid_weights = _grid()
    with torch.no_grad():
        log_gamma = guide.log_joint(grid)
        log_marginal = _log_marginal(guide, acceptance, grid, K)
        forward = _forward_sums(guide, acceptance, grid, grid_weights)
    return _Case(guide, acceptance, grid, grid_weights, log_gamma, log_marginal, forward)


def _outcome_frequencies(guide: AutoMetFlow, acceptance: str) -> Tensor:
    """The probabilities ``(4,)`` of one step's outcomes (forward accepted, forward rejected,
    inverse accepted, inverse rejected) from ``z_0 ~ q_0``, integrated on the grid."""
    grid, weights = _grid()
    q0 = weights * _log_q0(guide, grid).exp()
    log_gamma = guide.log_joint(grid)
    outcomes = []
    for v in (1, -1):
        log_ratio, _, _, _ = _log_ratio(guide, 0, grid, v, log_gamma)
        log_accept, _, _ = _log_accept_reject(log_ratio, acceptance)
        accept = _log_p_direction(guide, v).exp() * log_accept.exp()
        outcomes += [q0 @ accept, q0 @ (_log_p_direction(guide, v).exp() - accept)]
    return torch.stack(outcomes)


def _mean_se(values: Tensor) -> tuple[float, float]:
    return float(values.mean()), float(values.std() / math.sqrt(values.shape[0]))


def _soft_bins(z: Tensor) -> Tensor:
    """Smooth 3 x 3 histogram cells ``(N, 9)`` summing to 1 (smooth, so the grid integrates
    them accurately)."""
    low, high = SOFT_BIN_CUTS
    per_axis = []
    for axis in range(z.shape[-1]):
        left = torch.sigmoid((low - z[:, axis]) / SOFT_BIN_WIDTH)
        right = torch.sigmoid((z[:, axis] - high) / SOFT_BIN_WIDTH)
        per_axis.append(torch.stack([left, 1 - left - right, right], -1))
    return (per_axis[0].unsqueeze(-1) * per_axis[1].unsqueeze(-2)).reshape(z.shape[0], -1)


def _features(z: Tensor) -> Tensor:
    """Moments (means, second moments) and soft histogram cells of draws ``(N, 2)``."""
    second = torch.stack([z[:, 0] ** 2, z[:, 1] ** 2, z[:, 0] * z[:, 1]], -1)
    return torch.cat([z, second, _soft_bins(z)], -1)


# The bound and its gradient with respect to the direction logit.


def _exact_bound(guide: AutoMetFlow, acceptance: str, points: int = GRID_POINTS) -> float:
    """L_ext by enumeration."""
    grid, weights = _grid(points)
    with torch.no_grad():
        return float(_forward_sums(guide, acceptance, grid, weights).bound)


def _exact_bound_gradient(
    guide: AutoMetFlow, acceptance: str, points: int = GRID_POINTS, wrt: str = "direction_logit"
) -> Tensor:
    """d L_ext / d ``wrt`` (a parameter's dotted name) by autograd through the enumeration, in
    chunks of the grid (to bound the memory of the autograd graph)."""
    grid, weights = _grid(points)
    parameter = guide.get_parameter(wrt)
    gradient = torch.zeros_like(parameter)
    for z0, chunk_weights in zip(grid.split(GRID_CHUNK), weights.split(GRID_CHUNK), strict=True):
        bound = _forward_sums(guide, acceptance, z0, chunk_weights).bound
        (chunk_gradient,) = torch.autograd.grad(bound, parameter)
        gradient += chunk_gradient
    return gradient


def _mc_gradients(guide: AutoMetFlow, batches: int, wrt: str = "direction_logit") -> Tensor:
    """Per-batch Monte Carlo estimates of d L_ext / d ``wrt`` ``(batches, *shape)``."""
    elbo = Trace_ELBO(
        num_particles=GRADIENT_PARTICLES, vectorize_particles=True, max_plate_nesting=0
    )
    gradients = []
    for _ in range(batches):
        loss = elbo.differentiable_loss(mixture_model, guide)
        (gradient,) = torch.autograd.grad(-loss, guide.get_parameter(wrt))
        gradients.append(gradient)
    return torch.stack(gradients)
