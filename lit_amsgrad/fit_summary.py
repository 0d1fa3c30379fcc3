"""The last line of a fit: what the result means, in the task's own terms.

A first user who trains the counterexample sees a progress bar end at ``x: 0.984`` and
cannot tell a success from the paper's failure mode; this line says where the optimum is.
"""

from __future__ import annotations

from typing import Any


def _metric(trainer: Any, key: str) -> float | None:
    value = trainer.callback_metrics.get(key)
    return None if value is None else float(value)


def classifier_summary(trainer: Any) -> str:
    parts = [f"{key} {value:.4f}" for key in ("train/loss", "val/loss", "val/acc")
             if (value := _metric(trainer, key)) is not None]  # fmt: skip
    best = getattr(trainer.checkpoint_callback, "best_model_score", None)
    if best is not None and trainer.checkpoint_callback.monitor:
        parts.append(f"best {trainer.checkpoint_callback.monitor} {float(best):.4f}")
    step = f"after {trainer.global_step:,} optimizer steps"
    return f"result {step}: {', '.join(parts) or 'no metrics logged'}"


def fit_summary(trainer: Any, model: Any) -> str:
    """The model's own ``result_line(trainer)`` where it has one (the counterexample: the
    iterate against the optimum; a fork's module can say what its result means), else the
    last losses and accuracy and the best monitored score."""
    result_line = getattr(model, "result_line", None)
    if callable(result_line):
        return result_line(trainer)
    return classifier_summary(trainer)
