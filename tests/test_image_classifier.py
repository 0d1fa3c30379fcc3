"""The paper's networks and ImageClassifier: shapes, sizes, logged metrics, injected optimizers."""

from __future__ import annotations

import csv
import functools
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger

from datamodules import MNISTDataModule
from lit_amsgrad.models import ImageClassifier
from lit_amsgrad.models.networks import CIFARNet, build_network
from lit_amsgrad.optim import AMSGrad
from tests.fakedata import write_fake_mnist


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(
    ("name", "shape"),
    [("logreg", (4, 1, 28, 28)), ("mlp", (4, 1, 28, 28)), ("cifarnet", (4, 3, 32, 32))],
)
def test_networks_map_images_to_ten_logits(name, shape):
    assert build_network(name)(torch.randn(shape)).shape == (4, 10)


def test_network_sizes_follow_the_paper():
    assert n_params(build_network("logreg")) == 784 * 10 + 10
    assert n_params(build_network("mlp")) == (784 * 100 + 100) + (100 * 10 + 10)
    conv = (3 * 36 + 1) * 64 + (64 * 36 + 1) * 64  # two 6x6 convolutions of 64 channels
    dense = (64 * 8 * 8 + 1) * 384 + (384 + 1) * 192 + (192 + 1) * 10  # after two stride-2 pools
    assert n_params(CIFARNet()) == conv + dense
    kinds = {type(m).__name__ for m in CIFARNet().modules()}
    assert {"LocalResponseNorm", "MaxPool2d", "Dropout"} <= kinds


def test_cifarnet_dropout_only_in_training():
    net = CIFARNet()
    x = torch.randn(8, 3, 32, 32)
    net.eval()
    torch.testing.assert_close(net(x), net(x))
    net.train()
    assert not torch.allclose(net(x), net(x))


def test_unknown_net_names_the_allowed_ones():
    with pytest.raises(ValueError, match=r"\['cifarnet', 'logreg', 'mlp'\].*'resnet'"):
        ImageClassifier(net="resnet")


def test_default_optimizer_is_the_papers_amsgrad():
    optimizer = ImageClassifier().configure_optimizers()
    assert isinstance(optimizer, AMSGrad)
    assert optimizer.defaults["bias_correction"] == "none"


def test_injected_optimizer_and_scheduler_are_used():
    model = ImageClassifier(
        net="mlp",
        optimizer=functools.partial(torch.optim.SGD, lr=0.5),
        lr_scheduler=functools.partial(torch.optim.lr_scheduler.StepLR, step_size=1),
    )
    config = model.configure_optimizers()
    assert isinstance(config["optimizer"], torch.optim.SGD)
    assert config["optimizer"].param_groups[0]["lr"] == 0.5
    assert isinstance(config["lr_scheduler"]["scheduler"], torch.optim.lr_scheduler.StepLR)
    assert config["optimizer"].param_groups[0]["params"] == list(model.parameters())


def test_trainer_logs_loss_and_accuracy_of_every_stage(tmp_path):
    write_fake_mnist(tmp_path, n_train=200, n_test=64)
    dm = MNISTDataModule(tmp_path, batch_size=32, val_size=40, num_workers=0)
    model = ImageClassifier(net="logreg", optimizer=functools.partial(torch.optim.Adam, lr=1e-2))
    logger = CSVLogger(tmp_path, name="logs")
    trainer = L.Trainer(
        max_epochs=2, logger=logger, log_every_n_steps=1, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(model, dm)
    (test_metrics,) = trainer.test(model, dm, verbose=False)
    logger.save()
    with open(Path(logger.log_dir) / "metrics.csv") as f:
        logged = set(next(csv.reader(f)))
    # the contract's keys, exactly: no _step/_epoch variants
    stages = ("train", "val", "test")
    assert {f"{s}/{m}" for s in stages for m in ("loss", "acc")} <= logged
    assert not {key for key in logged if key.endswith(("_step", "_epoch"))}

    # test/acc is plain top-1 accuracy over all test images (not a per-class mean)
    model.eval()
    x = torch.stack([dm.test_set[i][0] for i in range(len(dm.test_set))])
    y = torch.tensor([dm.test_set[i][1] for i in range(len(dm.test_set))])
    with torch.no_grad():
        logits = model(x)
    expected_acc = (logits.argmax(1) == y).float().mean().item()
    expected_loss = torch.nn.functional.cross_entropy(logits, y).item()
    assert test_metrics["test/acc"] == pytest.approx(expected_acc, abs=1e-6)
    assert test_metrics["test/loss"] == pytest.approx(expected_loss, rel=1e-4)


def test_training_reduces_the_loss_with_the_papers_amsgrad():
    torch.manual_seed(0)
    model = ImageClassifier(net="mlp", optimizer=functools.partial(AMSGrad, lr=1e-3))
    optimizer = model.configure_optimizers()
    x, y = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))
    losses = []
    for _ in range(30):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
