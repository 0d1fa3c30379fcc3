"""A callback's per-batch hooks that are Callback's no-ops are not dispatched; the others are."""

from __future__ import annotations

import sys
from collections import Counter

import pytest
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import LambdaCallback, ModelCheckpoint
from lightning.pytorch.profilers import Profiler

from lit_amsgrad.checkpointing import InterruptionCheckpoint
from lit_amsgrad.cli import main
from lit_amsgrad.hook_dispatch import PER_BATCH_HOOKS, skip_noop_hooks
from lit_amsgrad.last_step import LogTheLastStep
from tests.fakedata import write_fake_mnist

LOGREG = ["--config", "mnist_logreg_amsgrad.yaml", "--data.data_dir=data", "--data.val_size=200",
          "--data.num_workers=0", "--trainer.logger=false", "--trainer.enable_progress_bar=false",
          "--trainer.enable_model_summary=false"]  # fmt: skip


class CountingBatches(Callback):
    def __init__(self) -> None:
        self.ends = 0

    def on_train_batch_end(self, *args) -> None:
        self.ends += 1


class RecordingProfiler(Profiler):
    """Records every action Lightning profiles: a callback hook it calls is one of them."""

    def __init__(self) -> None:
        super().__init__()
        self.actions: Counter[str] = Counter()

    def start(self, action_name: str) -> None:
        self.actions[action_name] += 1

    def stop(self, action_name: str) -> None:
        pass

    def summary(self) -> str:
        return ""


def test_noop_hooks_are_skipped_and_overridden_or_instance_hooks_kept():
    counting, checkpoint = CountingBatches(), ModelCheckpoint(every_n_train_steps=5)
    on_start = LambdaCallback(on_train_batch_start=lambda *a: None)
    skip_noop_hooks([counting, checkpoint, on_start])
    for callback in (counting, checkpoint):
        assert callable(callback.on_train_batch_end)  # its class's own hook
        assert callback.on_before_backward is None and callback.on_train_batch_start is None
    assert callable(on_start.on_train_batch_start)  # set on the instance
    assert on_start.on_train_batch_end is None
    assert callable(checkpoint.on_train_epoch_end)  # not a per-batch hook: untouched
    counting.on_train_batch_end(None, None, None, None, 0)
    assert counting.ends == 1


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["train.py"])
    write_fake_mnist(tmp_path / "data", n_train=1200, n_test=50)
    return tmp_path


def test_a_train_py_fit_dispatches_only_the_hooks_its_callbacks_define(workdir):
    steps = 4
    cli = main(["fit", *LOGREG, f"--trainer.max_steps={steps}", "--trainer.max_epochs=-1",
                "--trainer.profiler=tests.test_hook_dispatch.RecordingProfiler"])  # fmt: skip
    callbacks = cli.trainer.callbacks
    kinds = Counter(type(c).__name__ for c in callbacks)
    assert kinds["ModelCheckpoint"] == 2 and kinds["OptimizerDiagnostics"] == 1
    assert any(isinstance(c, InterruptionCheckpoint) for c in callbacks)
    assert any(isinstance(c, LogTheLastStep) for c in callbacks)
    for callback in callbacks:
        for name in PER_BATCH_HOOKS:
            noop = getattr(type(callback), name) is getattr(Callback, name)
            assert (getattr(callback, name) is None) == noop, (type(callback).__name__, name)
    # what Lightning dispatched: each callback's own per-batch hooks once per step, no others
    dispatched = Counter()
    for action, count in cli.trainer.profiler.actions.items():
        if action.startswith("[Callback]"):
            key, _, hook = action.removeprefix("[Callback]").rpartition(".")
            if hook in PER_BATCH_HOOKS:
                dispatched[(key.split("{")[0], hook)] += count
    assert dispatched == {
        ("OptimizerDiagnostics", "on_before_optimizer_step"): steps,
        ("OptimizerDiagnostics", "on_train_batch_end"): steps,
        ("ModelCheckpoint", "on_train_batch_end"): 2 * steps,
    }
