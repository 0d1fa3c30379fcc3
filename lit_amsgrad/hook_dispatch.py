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

``ModelCheckpoint``'s ``on_train_batch_end`` is the one per-batch hook of the configs'
checkpoints, and without a ``train_time_interval`` it returns at once unless
``every_n_train_steps`` divides the global step: after its checks of the trainer's state
(fast_dev_run, the trainer's stage, sanity checking), ~5-10 us a step. So a checkpoint with
neither trigger (the configs' best one, which saves after validation) does not have it
dispatched, and a periodic one has it called on its steps only.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from lightning.pytorch import Callback
from lightning.pytorch.callbacks import ModelCheckpoint

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
    """Lightning skips the per-batch hooks of ``callbacks`` that are ``Callback``'s no-ops,
    and a ``ModelCheckpoint``'s ``on_train_batch_end`` on the steps where it saves nothing."""
    for callback in callbacks:
        own = vars(callback)
        for name in PER_BATCH_HOOKS:
            if name not in own and getattr(type(callback), name, None) is getattr(Callback, name):
                setattr(callback, name, None)
        if isinstance(callback, ModelCheckpoint):
            _checkpoint_on_its_steps(callback)


def _checkpoint_on_its_steps(checkpoint: ModelCheckpoint) -> None:
    """``on_train_batch_end`` of a checkpoint without a time trigger: not dispatched without
    a step trigger, else called on the steps ``every_n_train_steps`` divides (on the others
    Lightning's own returns without an effect, in automatic and manual optimization)."""
    if (
        "on_train_batch_end" in vars(checkpoint)
        or type(checkpoint).on_train_batch_end is not ModelCheckpoint.on_train_batch_end
        or checkpoint._train_time_interval is not None
    ):
        return
    if checkpoint._every_n_train_steps < 1:
        checkpoint.on_train_batch_end = None
    else:
        checkpoint.on_train_batch_end = _OnItsSteps(checkpoint)


class _OnItsSteps:
    """A periodic checkpoint's ``on_train_batch_end``, called on its steps only (a class, not
    a closure: a trainer pickled for a spawned process takes its callbacks along)."""

    def __init__(self, checkpoint: ModelCheckpoint) -> None:
        self.checkpoint = checkpoint

    def __call__(self, trainer: Any, *args: Any, **kwargs: Any) -> None:
        every = self.checkpoint._every_n_train_steps
        if every >= 1 and trainer.global_step % every == 0:
            ModelCheckpoint.on_train_batch_end(self.checkpoint, trainer, *args, **kwargs)
