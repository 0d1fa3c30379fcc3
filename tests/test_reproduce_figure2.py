"""Both ``reproduce`` commands at tiny sizes: the figures are valid PNGs, the JSONs consistent."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

from lit_amsgrad import reproduce, reproduce_figure2
from tests.fakedata import skip_cifar10_md5, write_fake_cifar10, write_fake_mnist


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setattr(sys, "argv", ["reproduce"])
    yield tmp_path
    import wandb

    if wandb.run is not None:
        wandb.finish()


def assert_valid_png(path: Path, min_height: int = 400, min_width: int = 600) -> None:
    import matplotlib.image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(path)
    assert image.shape[0] >= min_height and image.shape[1] >= min_width
    assert image.shape[2] in (3, 4)
    assert image[..., :3].std() > 0.05  # something is drawn, not a blank canvas


def run_figure2(out: Path, *extra: str) -> dict:
    reproduce.main(["figure2", "--out", str(out), "--log-every", "1", "--num-workers", "0", *extra])
    return json.loads((out / f"figure2_{extra[extra.index('--task') + 1]}.json").read_text())


def test_figure2_on_fake_mnist_writes_a_consistent_figure_and_json(workdir):
    write_fake_mnist(workdir / "data", n_train=400, n_test=50)
    out = workdir / "out"
    summary = run_figure2(
        out, "--task", "mnist_logreg", "--data-dir", str(workdir / "data"), "--val-size", "100",
        "--beta2", "0.99", "0.999", "--lrs", "3e-3", "--max-steps", "7",
        "--eval-every", "3", "--diag-every", "2", "--wandb", "off",
    )  # fmt: skip
    assert_valid_png(out / "figure2_mnist_logreg.png")
    assert summary["task"] == "mnist_logreg" and "lowest final held-out" in summary["selection"]
    grid = summary["grid"]
    assert sorted((g["optimizer"], g["beta2"], g["lr"]) for g in grid) == sorted(
        (o, b, 3e-3) for o in ("adam", "amsgrad") for b in (0.99, 0.999)
    )
    for point in grid:
        assert point["steps"] == 7
        assert math.isfinite(point["final_val_loss"]) and math.isfinite(point["final_train_loss"])
        assert 0.0 <= point["final_val_acc"] <= 1.0
        assert Path(point["metrics_csv"]).is_file()
        assert not (Path(point["metrics_csv"]).parents[1] / "wandb").exists()  # --wandb off
    assert set(summary["best"]) == {"adam", "amsgrad"}
    for optimizer, best in summary["best"].items():
        own = [g for g in grid if g["optimizer"] == optimizer]
        assert best["name"] in {g["name"] for g in own}
        assert best["final_val_loss"] == min(g["final_val_loss"] for g in own)
        curves = best["curves"]
        # held out every 3 steps, then once more after the last step
        assert [s for s, _ in curves["val/loss"]] == [3, 6, 7]
        assert curves["val/loss"][-1][1] == best["final_val_loss"]
        assert [s for s, _ in curves["diag/gamma_neg_frac"]] == [2, 4, 6]
        assert all(0.0 <= v <= 1.0 for _, v in curves["diag/gamma_neg_frac"])
    # only AMSGrad keeps v_hat, so only it reports how often v_hat > v
    assert "diag/vhat_active_frac" in summary["best"]["amsgrad"]["curves"]
    assert "diag/vhat_active_frac" not in summary["best"]["adam"]["curves"]


def test_figure2_rerun_into_the_same_folder_logs_to_wandb_and_reads_only_its_own_csv(workdir):
    write_fake_mnist(workdir / "data", n_train=300, n_test=50)
    common = ["--task", "mnist_mlp", "--data-dir", str(workdir / "data"), "--val-size", "50",
              "--optimizers", "amsgrad", "--beta2", "0.999", "--lrs", "1e-3", "--wandb", "offline",
              "--eval-every", "2"]  # fmt: skip
    run_figure2(workdir / "out", *common, "--max-steps", "6")
    summary = run_figure2(workdir / "out", *common, "--max-steps", "4")
    (point,) = summary["grid"]
    assert point["steps"] == 4
    assert [s for s, _ in summary["best"]["amsgrad"]["curves"]["val/loss"]] == [2, 4]
    offline_runs = list((Path(point["metrics_csv"]).parents[1] / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 2  # one W&B run per fit


def test_best_points_prefers_the_lowest_finite_final_loss():
    results = [
        {"optimizer": "adam", "name": "a1", "final_val_loss": float("nan")},
        {"optimizer": "adam", "name": "a2", "final_val_loss": 0.7},
        {"optimizer": "adam", "name": "a3", "final_val_loss": 0.5},
        {"optimizer": "amsgrad", "name": "m1", "final_val_loss": 0.6},
        {"optimizer": "amsgrad", "name": "m2", "final_val_loss": float("inf")},
    ]
    best = reproduce_figure2.best_points(results)
    assert {k: v["name"] for k, v in best.items()} == {"adam": "a3", "amsgrad": "m1"}


def test_figure2_needs_the_diagnostics_callback(workdir, tmp_path):
    point = reproduce_figure2.GridPoint("adam", 0.999, 1e-3)
    run = reproduce_figure2.Figure2Run(max_steps=1, data_dir=str(tmp_path / "data"), wandb="off")
    args = reproduce_figure2.figure2_args("mnist_logreg", point, run, tmp_path / "run")
    with pytest.raises(ValueError, match="OptimizerDiagnostics"):
        reproduce_figure2.fit_grid_point([*args, "--trainer.callbacks=[]"], run)


@pytest.mark.slow
def test_figure2_on_fake_cifar10(workdir, monkeypatch):
    skip_cifar10_md5(monkeypatch)
    write_fake_cifar10(workdir / "data", n_per_batch=40, n_test=20)
    summary = run_figure2(
        workdir / "out", "--task", "cifarnet", "--data-dir", str(workdir / "data"),
        "--val-size", "40", "--beta2", "0.99", "--lrs", "3e-4", "--max-steps", "2",
        "--eval-every", "1", "--diag-every", "1", "--wandb", "off",
    )  # fmt: skip
    assert_valid_png(workdir / "out" / "figure2_cifarnet.png")
    assert {g["optimizer"] for g in summary["grid"]} == {"adam", "amsgrad"}
    assert all(math.isfinite(g["final_val_loss"]) for g in summary["grid"])


def test_figure1_at_a_tiny_size(workdir):
    out = workdir / "out"
    reproduce.main(["figure1", "--out", str(out), "--optimizers", "adam", "amsgrad",
                    "--online-rounds", "3000", "--stochastic-rounds", "2000", "--seeds", "2"])  # fmt: skip
    assert_valid_png(out / "figure1.png")
    summary = json.loads((out / "figure1.json").read_text())
    assert set(summary) == {"online", "stochastic"}
    for problem, rounds in (("online", 3000), ("stochastic", 2000)):
        assert set(summary[problem]) == {"adam", "amsgrad"}
        for result in summary[problem].values():
            assert result["rounds"] == rounds
            assert len(result["final_x_per_seed"]) == 2
            assert all(-1.0 <= x <= 1.0 for x in result["final_x_per_seed"])  # projected onto F
            assert result["final_x"] == pytest.approx(sum(result["final_x_per_seed"]) / 2)
            assert math.isfinite(result["avg_regret"])


SHARED_MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"


@pytest.mark.slow
def test_figure2_on_real_mnist_digits_learns_with_both_optimizers(workdir):
    """The README's setting in small: 8,000 of the 10,000 real test digits to train on,
    2,000 others held out, one epoch of logistic regression per optimizer."""
    import gzip

    files = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    if not all((SHARED_MNIST / f"{name}.gz").is_file() for name in files):
        pytest.skip(f"real MNIST digits not found in {SHARED_MNIST} (only the project's machines)")
    raw = workdir / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in files:
        data = gzip.decompress((SHARED_MNIST / f"{name}.gz").read_bytes())
        (raw / name).write_bytes(data)
        (raw / name.replace("t10k", "train")).write_bytes(data)
    summary = run_figure2(
        workdir / "out", "--task", "mnist_logreg", "--data-dir", str(workdir / "data"),
        "--train-size", "8000", "--val-size", "2000", "--beta2", "0.99", "--lrs", "1e-2",
        "--epochs", "1", "--eval-every", "21", "--wandb", "off",
    )  # fmt: skip
    assert_valid_png(workdir / "out" / "figure2_mnist_logreg.png")
    for best in summary["best"].values():
        assert best["steps"] == 63  # ceil(8000 / 128)
        val = best["curves"]["val/loss"]
        assert [s for s, _ in val] == [21, 42, 63]
        assert val[-1][1] < val[0][1]
        assert best["final_val_acc"] >= 0.85
