"""Where a resumed fit starts: Lightning's loop counters in a checkpoint made unambiguous.

Lightning resumes correctly from a checkpoint taken in the middle of an epoch's training
batches and from one taken after the epoch's validation. Two positions the template also
writes it resumes wrongly:

- **at the train-batch end of an epoch's last batch** (the periodic ``ModelCheckpoint`` whose
  step falls on it): Lightning counts the epoch as done and starts the next one, so that
  epoch's validation and epoch-end hooks never run;
- **during validation** (SIGTERM between two validation batches): Lightning either skips the
  rest of the validation (the SIGTERM check comes after the batch's counters are complete, so
  it looks finished) or resumes it from the next batch of a loader that cannot fast-forward,
  having lost the metrics of the batches before.

``normalise_fit_position(checkpoint)`` rewrites both into the one position Lightning resumes
exactly: "the epoch's training batches are done, its validation is to run from its first
batch". Validation changes no training state (eval mode, no gradients, its own loader), so
running it again from the start is what an uninterrupted run logs. Call it from a
``LightningModule.on_load_checkpoint``: Lightning restores the loops after that hook.
"""

from __future__ import annotations

from typing import Any

#: the counters of a progress tracker, in the order Lightning increments them
_COUNTERS = ("ready", "started", "processed", "completed")


def normalise_fit_position(checkpoint: dict[str, Any]) -> None:
    """Rewrite ``checkpoint["loops"]["fit_loop"]`` in place (see the module docstring)."""
    fit = checkpoint.get("loops", {}).get("fit_loop")
    if not fit or "epoch_loop.batch_progress" not in fit:
        return
    train = fit["epoch_loop.batch_progress"]
    val = fit.get("epoch_loop.val_loop.batch_progress")
    if val is None:
        return
    if _at_last_train_batch_end(train):
        # count the batch as completed, as Lightning's restart would, but stay in this epoch
        train["current"]["completed"] += 1
        train["total"]["completed"] += 1
        _validation_to_run_from_start(val)
    elif _trained_epoch(train) and _validation_started(val):
        _validation_to_run_from_start(val)


def _at_last_train_batch_end(train: dict) -> bool:
    current = train["current"]
    return bool(
        train.get("is_last_batch")
        and current["ready"] == current["started"] == current["processed"]
        and current["completed"] == current["processed"] - 1
    )


def _trained_epoch(train: dict) -> bool:
    current = train["current"]
    return bool(train.get("is_last_batch")) and len({current[k] for k in _COUNTERS}) == 1


def _validation_started(val: dict) -> bool:
    """A validation of this epoch began and did not reach its last batch."""
    return (
        not val.get("is_last_batch") and val["current"]["ready"] > 0 and val["total"]["ready"] > 0
    )


def _validation_to_run_from_start(val: dict) -> None:
    """Lightning's "restarted mid-evaluation" state with no batch done: it reruns all of it."""
    earlier = (
        val["total"]["completed"] - val["current"]["completed"]
    )  # other validations this epoch
    earlier = max(earlier, 0)
    val["total"] = {"ready": earlier + 1, "started": earlier + 1, "processed": earlier,
                    "completed": earlier}  # fmt: skip
    val["current"] = {"ready": 1, "started": 1, "processed": 0, "completed": 0}
    val["is_last_batch"] = False
