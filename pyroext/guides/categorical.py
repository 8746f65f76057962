"""A free categorical factor per plate element for a model's local discrete site.

The local half of a mean-field guide over mixed latents: combined with an autoguide over the
continuous globals in an :class:`~pyro.infer.autoguide.AutoGuideList`, it gives
``q(theta) prod_n q(z_n)``, the family of variational EM (e.g.
:func:`pyroext.models.gmm.mean_field_guide`).
"""

__all__ = ["AutoLocalCategorical"]

from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro.infer.autoguide import AutoGuide
from pyro.nn import PyroParam
from torch import Tensor


class AutoLocalCategorical(AutoGuide):
    """``q(z_n) = Categorical(softmax(logits_n))`` with free logits for each element of the
    plates around one categorical site of the model.

    With ``enumerate=True`` the site is marked for parallel enumeration, so that
    ``TraceEnum_ELBO`` sums over it exactly (guide-side enumeration); otherwise it is sampled and
    ``Trace_ELBO`` estimates its gradient by the score function. Subsampled plates index the
    logits with the plates' indices, so each data point keeps its own factor. The logits start
    at zero (uniform factors), with the dtype and device of the model's site.

    Arguments:
        model: A Pyro model with a ``Categorical`` site named ``site``.
        site: Name of the local categorical site.
        enumerate: Enumerate the site (``TraceEnum_ELBO``) or sample it.

    Raises:
        ValueError: If the model has no categorical latent site named ``site``.

    References:
        Neal, R. M. and Hinton, G. E. (1998). A view of the EM algorithm that justifies
        incremental, sparse, and other variants. Learning in Graphical Models.
        Hoffman, M. D., Blei, D. M., Wang, C. and Paisley, J. (2013). Stochastic variational
        inference. JMLR 14.
    """

    def __init__(
        self, model: Callable[..., Any], *, site: str = "assignment", enumerate: bool = True
    ) -> None:
        self.site, self.enumerate = site, enumerate
        super().__init__(model)

    def _setup_prototype(self, *args: Any, **kwargs: Any) -> None:
        super()._setup_prototype(*args, **kwargs)
        node = self.prototype_trace.nodes.get(self.site)
        fn = None if node is None else node["fn"]
        while isinstance(fn, dist.MaskedDistribution | dist.Independent):
            fn = fn.base_dist
        if not isinstance(fn, torch.distributions.Categorical) or node["is_observed"]:
            raise ValueError(f"site={self.site!r} is not a categorical latent site of the model")
        shape = list(fn.batch_shape)
        for frame in node["cond_indep_stack"]:
            if frame.vectorized:
                shape[frame.dim] = frame.full_size or frame.size
        probs = fn.probs
        self.logits = PyroParam(
            torch.zeros(*shape, probs.shape[-1], dtype=probs.dtype, device=probs.device)
        )

    def forward(self, *args: Any, **kwargs: Any) -> dict[str, Tensor]:
        """Draws (or enumerates) the site, under the model's plates.

        Returns:
            ``{site: value}``.
        """
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)
        plates = self._create_plates(*args, **kwargs)
        node = self.prototype_trace.nodes[self.site]
        logits = self.logits
        with ExitStack() as stack:
            for frame in node["cond_indep_stack"]:
                if frame.vectorized:
                    indices = stack.enter_context(plates[frame.name])
                    logits = logits.index_select(frame.dim - 1, indices)
            infer = {"enumerate": "parallel"} if self.enumerate else {}
            value = pyro.sample(self.site, dist.Categorical(logits=logits), infer=infer)
        return {self.site: value}

    def probs(self) -> Tensor:
        """``q(z = k)`` of every plate element, shape ``(*plates, K)``."""
        return torch.softmax(self.logits.detach(), -1)
