"""The paper's optimizer family on one shared core (see ``core.AdaptiveOptimizer``)."""

from .adam_family import Adam, AdamNC, AMSGrad, GenericAdam
from .adashift import AdaShift
from .core import AdaptiveOptimizer, EMAOptimizer

__all__ = [
    "AMSGrad",
    "AdaShift",
    "Adam",
    "AdamNC",
    "AdaptiveOptimizer",
    "EMAOptimizer",
    "GenericAdam",
]
