"""Callbacks cost nothing on the batches they do not look at.

Lightning calls every per-batch hook of every callback, overridden or not: its dispatcher
(``lightning.pytorch.trainer.call._call_callback_hooks``) looks each hook up with ``getattr``
and, ``if callable(fn)``, enters the profiler's context under a name formatted from the
callback's ``state_key`` (``ModelCheckpoint`` formats a dict of its settings for it, each
time) and calls the hook. A training step runs six such hooks, so each callback cost
~10-14 us per step even where all six are ``Callback``'s no-ops, and a ``ModelCheckpoint``
~20-30 us: as much as the logistic regression's own optimizer update. ``train.py`` fits with
five to seven callbacks (the config's diagnostics and two checkpoints; the CLI's interruption
checkpoint, last-step log and recorded config), most of which act at the start or the end.

``skip_noop_hooks`` sets each per-batch hook that a callback leaves at ``Callback``'s no-op
to ``None`` on the instance, which the dispatcher skips. A hook the callback's class
overrides, or one set on the instance, stays; calling a no-op or not is the same, so no
behaviour changes.
"""

from __future__ import annotations

from collections.abc import Iterable

from lightning.pytorch import Callback

#: the hooks Lightning dispatches once (or more) per batch
PER_BATCH_HOOKS = (
    "on_train_batch_start",
    "on_before_backward",
    "on_after_backward",
    "on_before_optimizer_step",
    "on_before_zero_grad",
    "on_train_batch_end",
    "on_validation_batch_start",
    "on_validation_batch_end",
    "on_test_batch_start",
    "on_test_batch_end",
    "on_predict_batch_start",
    "on_predict_batch_end",
)


def skip_noop_hooks(callbacks: Iterable[Callback]) -> None:
    """Lightning skips the per-batch hooks of ``callbacks`` that are ``Callback``'s no-ops."""
    for callback in callbacks:
        own = vars(callback)
        for name in PER_BATCH_HOOKS:
            if name not in own and getattr(type(callback), name, None) is getattr(Callback, name):
                setattr(callback, name, None)
