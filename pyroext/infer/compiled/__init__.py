"""Compiled Pyro programs: a model and guide traced once, every later step one fused graph.

See :mod:`pyroext.infer.compiled.capture` for what is recorded and what is refused,
:mod:`pyroext.infer.compiled.elbo` for the compiled ELBOs, and
:mod:`pyroext.infer.compiled.log_density` for a model's compiled log density.
"""

__all__ = [
    "CompileFallbackWarning",
    "CompileStats",
    "CompiledELBO",
    "CompiledLogDensity",
    "CompiledTraceMeanField_ELBO",
    "CompiledTrace_ELBO",
    "NotCompilable",
    "compile_log_density",
    "compiled_elbo",
]

from pyroext.infer.compiled.backend import CompileStats
from pyroext.infer.compiled.capture import NotCompilable
from pyroext.infer.compiled.elbo import (
    CompiledELBO,
    CompiledTrace_ELBO,
    CompiledTraceMeanField_ELBO,
    CompileFallbackWarning,
    compiled_elbo,
)
from pyroext.infer.compiled.log_density import CompiledLogDensity, compile_log_density
