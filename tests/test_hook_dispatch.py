"""A callback's per-batch hooks that are Callback's no-ops are not dispatched; the others are."""

from __future__ import annotations

import pickle
import sys
from collections import Counter

import pytest
import torch
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
            if isinstance(callback, ModelCheckpoint) and name == "on_train_batch_end":
                continue  # see the next tests
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
        ("ModelCheckpoint", "on_train_batch_end"): steps,  # the periodic one; the best one
    }  # saves after validation and has no per-batch hook left


def test_a_checkpoint_without_a_step_or_time_trigger_has_no_batch_hook_and_others_keep_theirs():
    from datetime import timedelta

    class OwnBatchEnd(ModelCheckpoint):
        def on_train_batch_end(self, *args) -> None:
            pass

    best = ModelCheckpoint(monitor="val/acc", mode="max", save_last=True)
    periodic = ModelCheckpoint(every_n_train_steps=3, filename="last-periodic")
    timed = ModelCheckpoint(train_time_interval=timedelta(minutes=5))
    own = OwnBatchEnd(every_n_train_steps=3)
    skip_noop_hooks([best, periodic, timed, own])
    assert best.on_train_batch_end is None
    assert callable(periodic.on_train_batch_end) and "on_train_batch_end" in vars(periodic)
    assert "on_train_batch_end" not in vars(timed) and "on_train_batch_end" not in vars(own)
    # a trainer pickled for a spawned process takes its callbacks along
    copy = pickle.loads(pickle.dumps(periodic))
    assert copy.on_train_batch_end.checkpoint is copy


def test_the_periodic_checkpoint_saves_on_its_steps_and_only_calls_lightning_there(
    workdir, monkeypatch
):
    calls: list[int] = []
    lightning_hook = ModelCheckpoint.on_train_batch_end

    def recording(self, trainer, *args, **kwargs):
        calls.append(trainer.global_step)
        return lightning_hook(self, trainer, *args, **kwargs)

    monkeypatch.setattr(ModelCheckpoint, "on_train_batch_end", recording)
    root = workdir / "periodic"
    # the config's last callback is the periodic checkpoint: every 2 steps instead of 500
    cli = main(["fit", *LOGREG, "--trainer.max_steps=5", "--trainer.max_epochs=-1",
                f"--trainer.default_root_dir={root}",
                "--trainer.callbacks.every_n_train_steps=2"])  # fmt: skip
    (periodic,) = [c for c in cli.trainer.callbacks
                   if isinstance(c, ModelCheckpoint) and c._every_n_train_steps]  # fmt: skip
    assert periodic._every_n_train_steps == 2
    assert calls == [2, 4]  # Lightning's hook on the periodic checkpoint's steps only
    (saved,) = root.rglob("last-periodic.ckpt")
    assert torch.load(saved, map_location="cpu", weights_only=False)["global_step"] == 4
