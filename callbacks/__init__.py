"""Diagnostic callbacks: effective step sizes, the sign of Gamma_t and the growth of vhat."""

from callbacks.adapters import MomentView, TorchAdamAdapter, moment_view
from callbacks.diagnostics import OptimizerDiagnostics
from callbacks.nonfinite import NonFiniteError
from callbacks.probe import OptimizerProbe

__all__ = [
    "MomentView",
    "NonFiniteError",
    "OptimizerDiagnostics",
    "OptimizerProbe",
    "TorchAdamAdapter",
    "moment_view",
]
