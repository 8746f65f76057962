"""Pareto k-hat of the importance ratios p/q: does the variational approximation work?

Yao et al. (2018) fit a generalized Pareto distribution to the largest importance ratios
``p(y, theta_s) / q(theta_s)`` at draws ``theta_s ~ q``. Its shape ``k`` measures how heavy the
tail of the ratios is, that is how badly ``q`` misses mass of the posterior:

* ``k < 0.5``: good, the approximation is close to the posterior;
* ``0.5 <= k <= 0.7``: ok, usable, best after Pareto-smoothed importance-sampling correction;
* ``k > 0.7``: unreliable, the importance ratios have heavy tails.

Vehtari et al. (2024) add a sample-size-dependent threshold ``min(1 - 1/log10(S), 0.7)``: above
it, ``S`` draws are too few to trust PSIS estimates, which the interpretation reports as
"borderline" (it is below 0.7 for ``S < 2155`` and below 0.5 for ``S < 100``).
"""

__all__ = ["KhatResult", "khat_from_log_ratios", "khat_threshold", "vi_khat", "vi_khat_from_model"]

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch
import xarray as xr
from arviz_stats.base import array_stats
from pyro import poutine
from pyro.infer.importance import vectorized_importance_weights

MIN_SAMPLES = 30  # below 30 draws the PSIS tail has too few points for a finite k-hat
CONSTANT_TOLERANCE = 1e-8  # log ratios this close mean weights equal to 8 digits


class KhatResult(NamedTuple):
    """What :func:`vi_khat` and :func:`vi_khat_from_model` return.

    Fields:
        khat: Pareto shape estimate of the right tail of the importance ratios; ``-inf`` when
            all log ratios agree to within ``1e-8`` (the guide is proportional to the posterior
            on the draws).
        interpretation: One line starting with ``"good"``, ``"ok"``, ``"borderline"`` or
            ``"unreliable"`` that says what ``khat`` means.
        num_samples: Number of guide draws ``S`` the estimate is based on.
        threshold: The sample-size-dependent threshold ``min(1 - 1/log10(S), 0.7)``.
        log_weights: Raw log importance ratios ``log p(y, theta_s) - log q(theta_s)``, shape
            ``(S,)``, unnormalised and unsmoothed.
    """

    khat: float
    interpretation: str
    num_samples: int
    threshold: float
    log_weights: np.ndarray

    def __repr__(self) -> str:
        # The log weights are one per draw: a thousand numbers would hide the verdict.
        return (
            f"KhatResult(khat={self.khat:.3f}, threshold={self.threshold:.3f}, "
            f"num_samples={self.num_samples}, interpretation={self.interpretation!r})"
        )


def khat_threshold(num_samples: int) -> float:
    """The largest k-hat for which ``num_samples`` draws give reliable PSIS estimates.

    Arguments:
        num_samples: Number of draws ``S``, >= 2.

    Returns:
        ``min(1 - 1/log10(S), 0.7)``.

    Raises:
        ValueError: If ``num_samples`` is not an integer >= 2.

    References:
        Vehtari, Simpson, Gelman, Yao, Gabry. "Pareto smoothed importance sampling".
        JMLR 25 (2024). https://arxiv.org/abs/1507.02646
    """
    _check_int("num_samples", num_samples, minimum=2)
    return min(1.0 - 1.0 / np.log10(num_samples), 0.7)


def vi_khat(dt: xr.DataTree) -> KhatResult:
    """Pareto k-hat of the importance ratios stored in a variational-inference DataTree.

    The ratios are ``sample_stats.lp - sample_stats.lq`` over all draws, as exported by
    :func:`pyroext.arviz.from_pyro_svi`.

    Arguments:
        dt: A DataTree whose ``sample_stats`` group holds ``lp`` (``log p(y, theta)``) and
            ``lq`` (``log q(theta)``) at the same guide draws, with at least 30 draws.

    Returns:
        A :class:`KhatResult`.

    Raises:
        ValueError: If ``lp`` or ``lq`` is missing, their dims or sizes differ, there are
            fewer than 30 draws, or a ratio is NaN or ``+inf`` (the message counts them).

    References:
        Yao, Vehtari, Simpson, Gelman. "Yes, but did it work?: Evaluating variational
        inference". ICML 2018. https://arxiv.org/abs/1802.02538

        Vehtari, Simpson, Gelman, Yao, Gabry. "Pareto smoothed importance sampling".
        JMLR 25 (2024). https://arxiv.org/abs/1507.02646
    """
    stats = dt.get("sample_stats")
    missing = [name for name in ("lp", "lq") if stats is None or name not in stats]
    if missing:
        raise ValueError(
            f"vi_khat needs sample_stats variables lp (log p(y, theta)) and lq (log q(theta)) "
            f"at the guide draws; missing: {', '.join(missing)}"
        )
    lp, lq = stats["lp"], stats["lq"]
    if set(lp.dims) != set(lq.dims) or dict(lp.sizes) != dict(lq.sizes):
        raise ValueError(
            f"sample_stats.lp has sizes {dict(lp.sizes)} but lq has sizes {dict(lq.sizes)}; "
            "both must hold the same draws"
        )
    ratios = lp.values - lq.transpose(*lp.dims).values
    bad = np.isnan(ratios) | np.isposinf(ratios)
    if bad.any():
        raise ValueError(
            f"{int(bad.sum())} of {bad.size} draws have a NaN or +inf log ratio lp - lq "
            f"(non-finite: sample_stats.lp at {int((~np.isfinite(lp.values)).sum())} draws, "
            f"lq at {int((~np.isfinite(lq.values)).sum())}); drop those draws "
            "(pyroext.diagnostics.drop_nonfinite_draws) or refit"
        )
    return khat_from_log_ratios(ratios.ravel())


def vi_khat_from_model(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    *args: Any,
    num_samples: int = 1000,
    max_plate_nesting: int | None = None,
    **kwargs: Any,
) -> KhatResult:
    """Pareto k-hat of ``p(y, theta) / q(theta)`` for a fitted guide, drawn in one batch.

    Model and guide must be vectorizable: all ``num_samples`` draws run at once inside a plate.

    Arguments:
        model: A Pyro model with its observations conditioned.
        guide: The fitted guide.
        args: Arguments of model and guide.
        num_samples: Number of guide draws, >= 30.
        max_plate_nesting: Number of nested plates in model and guide (>= 0); guessed from one
            trace when None.
        kwargs: Keyword arguments of model and guide.

    Returns:
        A :class:`KhatResult`.

    Raises:
        ValueError: If ``num_samples`` < 30, ``max_plate_nesting`` < 0, or a ratio is NaN.

    References:
        Yao, Vehtari, Simpson, Gelman. "Yes, but did it work?: Evaluating variational
        inference". ICML 2018. https://arxiv.org/abs/1802.02538

        Vehtari, Simpson, Gelman, Yao, Gabry. "Pareto smoothed importance sampling".
        JMLR 25 (2024). https://arxiv.org/abs/1507.02646
    """
    _check_int("num_samples", num_samples, minimum=MIN_SAMPLES)
    if max_plate_nesting is None:
        max_plate_nesting = _guess_max_plate_nesting(model, guide, *args, **kwargs)
    _check_int("max_plate_nesting", max_plate_nesting, minimum=0)
    with torch.no_grad():
        log_weights, _, _ = vectorized_importance_weights(
            model,
            guide,
            *args,
            num_samples=num_samples,
            max_plate_nesting=max_plate_nesting,
            **kwargs,
        )
    return khat_from_log_ratios(log_weights.detach().cpu().double().numpy())


def khat_from_log_ratios(log_ratios: np.ndarray) -> KhatResult:
    """Pareto k-hat and its interpretation for raw log importance ratios.

    Arguments:
        log_ratios: ``log p - log q`` at ``S >= 30`` draws from ``q``, any shape (flattened).

    Returns:
        A :class:`KhatResult`; k-hat is ``inf`` when the ratios spread over so many nats that
        one draw carries all the weight and the tail cannot be fitted.

    Raises:
        ValueError: If there are fewer than 30 ratios or one is NaN or ``+inf``.
    """
    log_ratios = np.asarray(log_ratios, dtype=float).ravel()
    if log_ratios.size < MIN_SAMPLES:
        raise ValueError(f"k-hat needs at least {MIN_SAMPLES} draws, got {log_ratios.size}")
    if np.isnan(log_ratios).any() or np.isposinf(log_ratios).any():
        raise ValueError("the log importance ratios contain NaN or +inf")
    if np.ptp(log_ratios) < CONSTANT_TOLERANCE:
        # A Pareto fit would only see rounding noise (or raise on ties); a point mass is the
        # k -> -inf limit of the generalized Pareto.
        khat = -np.inf
    else:
        # Sign trap: arviz_stats' psislw takes log-likelihood-like input and negates it.
        _, khat = array_stats.psislw(-log_ratios, r_eff=1.0)
        if np.isnan(khat):
            # The tail's ratios underflow to 0 beside the largest one (a spread of hundreds of
            # nats, e.g. a network's weights): one draw holds all the weight.
            khat = np.inf
    threshold = khat_threshold(log_ratios.size)
    return KhatResult(
        float(khat), _interpret(float(khat), threshold), log_ratios.size, threshold, log_ratios
    )


def _interpret(khat: float, threshold: float) -> str:
    """One line starting with good, ok, borderline or unreliable."""
    if khat > 0.7:
        return f"unreliable (k-hat {khat:.2f} > 0.7): the importance ratios have heavy tails"
    if khat > threshold:
        return (
            f"borderline (k-hat {khat:.2f} > {threshold:.2f}, the threshold for this many "
            "draws): draw more samples to trust importance-sampling estimates"
        )
    if khat < 0.5:
        return f"good (k-hat {khat:.2f} < 0.5): the approximation is close to the posterior"
    return (
        f"ok (0.5 <= k-hat {khat:.2f} <= {threshold:.2f}): the approximation is usable, "
        "best after importance-sampling correction"
    )


def _guess_max_plate_nesting(
    model: Callable[..., Any], guide: Callable[..., Any], *args: Any, **kwargs: Any
) -> int:
    """Depth of the deepest vectorized plate in a guide trace and the model replayed on it."""
    with torch.no_grad(), poutine.block():
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
            *args, **kwargs
        )
    dims = [
        frame.dim
        for trace in (guide_trace, model_trace)
        for site in trace.nodes.values()
        if site["type"] == "sample"
        for frame in site["cond_indep_stack"]
        if frame.vectorized
    ]
    return -min(dims, default=0)


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name}={value!r} must be an integer >= {minimum}")
