"""The last line of a fit: what the result means, in the task's own terms.

A first user who trains the counterexample sees a progress bar end at ``x: 0.984`` and
cannot tell a success from the paper's failure mode; this line says where the optimum is.
"""

from __future__ import annotations

from typing import Any


def _metric(trainer: Any, key: str) -> float | None:
    value = trainer.callback_metrics.get(key)
    return None if value is None else float(value)


def synthetic_summary(trainer: Any, model: Any) -> str:
    from lit_amsgrad.models.synthetic import mean_coefficient

    hp = model.hparams
    mu = mean_coefficient(
        hp.problem, big=hp.big, small=hp.small, period=hp.period, spike_prob=hp.spike_prob
    )
    optimum = -1.0 if mu > 0 else 1.0  # the minimiser of the expected loss mu * x on [-1, 1]
    x = float(model.x.detach().mean())
    rounds = int(model.rounds_played)
    where = (
        "at the optimum"
        if abs(x - optimum) < 0.05
        else "on the wrong side: the failure the paper proves for Adam"
        if x * optimum < 0
        else "between the start and the optimum"
    )
    regret = _metric(trainer, "avg_regret")
    regret_text = f", average regret {regret:.4g}" if regret is not None else ""
    return (
        f"result: x = {x:+.3f} after {rounds:,} rounds; the optimum is x = {optimum:+.0f} "
        f"({where}){regret_text}"
    )


def classifier_summary(trainer: Any) -> str:
    parts = [f"{key} {value:.4f}" for key in ("train/loss", "val/loss", "val/acc")
             if (value := _metric(trainer, key)) is not None]  # fmt: skip
    best = getattr(trainer.checkpoint_callback, "best_model_score", None)
    if best is not None and trainer.checkpoint_callback.monitor:
        parts.append(f"best {trainer.checkpoint_callback.monitor} {float(best):.4f}")
    step = f"after {trainer.global_step:,} optimizer steps"
    return f"result {step}: {', '.join(parts) or 'no metrics logged'}"


def fit_summary(trainer: Any, model: Any) -> str:
    """One line for the synthetic counterexample (the iterate against the optimum) or a
    classifier (the last losses and accuracy, the best monitored score)."""
    if hasattr(model, "rounds_played") and hasattr(model, "x"):
        return synthetic_summary(trainer, model)
    return classifier_summary(trainer)
