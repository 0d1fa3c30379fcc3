"""The paper's optimizer family on one shared core (see ``core.AdaptiveOptimizer``)."""

from .adam_family import Adam, AdamNC, AMSGrad, GenericAdam
from .adashift import AdaShift
from .core import AdaptiveOptimizer, EMAOptimizer, check_number
from .scalars import StepScalars

__all__ = [
    "AMSGrad",
    "AdaShift",
    "Adam",
    "AdamNC",
    "AdaptiveOptimizer",
    "EMAOptimizer",
    "GenericAdam",
    "StepScalars",
    "check_number",
]
