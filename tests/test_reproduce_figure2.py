"""Both ``reproduce`` commands at tiny sizes: the figures are valid PNGs, the JSONs consistent."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

from lit_amsgrad import reproduce, reproduce_figure2, stats
from lit_amsgrad.real_data import SHARED_DATA, real_mnist
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
    assert summary["task"] == "mnist_logreg" and "validation" in summary["selection"]
    assert (out / "figure2_mnist_logreg.pdf").read_bytes()[:5] == b"%PDF-"
    grid = summary["grid"]
    assert sorted((g["optimizer"], g["beta2"], g["lr"]) for g in grid) == sorted(
        (o, b, 3e-3) for o in ("adam", "amsgrad") for b in (0.99, 0.999)
    )
    for point in grid:
        assert point["steps"] == 7
        assert math.isfinite(point["final_val_loss"]) and math.isfinite(point["final_train_loss"])
        assert 0.0 <= point["final_val_acc"] <= 1.0
        (seed,) = point["per_seed"]
        assert Path(seed["metrics_csv"]).is_file()
        assert not (Path(seed["metrics_csv"]).parents[1] / "wandb").exists()  # --wandb off
    assert set(summary["best"]) == {"adam", "amsgrad"}
    for optimizer, best in summary["best"].items():
        own = [g for g in grid if g["optimizer"] == optimizer]
        assert best["name"] in {g["name"] for g in own}
        assert best["final_val_loss"] == min(g["final_val_loss"] for g in own)
        curves = best["curves"]
        # held out every 3 steps, then once more after the last step
        assert [row[0] for row in curves["val/loss"]] == [3, 6, 7]
        assert curves["val/loss"][-1][1] == best["final_val_loss"]
        assert [row[0] for row in curves["diag/gamma_neg_frac"]] == [2, 4, 6]
        assert all(0.0 <= row[1] <= 1.0 for row in curves["diag/gamma_neg_frac"])
        # one seed: a mean, but no interval can be claimed
        assert best["intervals"]["test_acc"]["low"] is None
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
    assert [row[0] for row in summary["best"]["amsgrad"]["curves"]["val/loss"]] == [2, 4]
    csv_path = Path(point["per_seed"][0]["metrics_csv"])
    offline_runs = list((csv_path.parents[1] / "wandb").glob("offline-run-*"))
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


def test_a_grid_point_does_not_dispatch_its_extra_callbacks_noop_hooks(workdir, tmp_path):
    """Like the config's callbacks (lit_amsgrad.hook_dispatch): the step display only moves
    at the end of a batch, and its other per-batch hooks are not dispatched every step."""
    from unittest import mock

    write_fake_mnist(tmp_path / "data", n_train=400, n_test=50)
    point = reproduce_figure2.GridPoint("amsgrad", 0.999, 1e-3)
    run = reproduce_figure2.Figure2Run(max_steps=3, eval_every=3, data_dir=str(tmp_path / "data"),
                                       val_size=100, num_workers=0, wandb="off")  # fmt: skip
    args = reproduce_figure2.figure2_args("mnist_logreg", point, run, tmp_path / "run")
    progress = mock.Mock()
    display = reproduce_figure2._step_progress(progress, "steps")
    reproduce_figure2.fit_grid_point(args, run, [display])
    assert display.on_before_backward is None and display.on_train_batch_start is None
    assert [c.kwargs["completed"] for c in progress.update.call_args_list] == [1, 2, 3]


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


@pytest.mark.slow
def test_figure2_on_real_mnist_digits_learns_with_both_optimizers(workdir):
    """The README's setting in small: 8,000 of the 10,000 real test digits to train on,
    1,000 others for validation and 1,000 for the test split, one epoch of logistic
    regression per optimizer."""
    if real_mnist(workdir / "data") is None:
        pytest.skip(f"real MNIST digits not found in {SHARED_DATA} (only the project's machines)")
    summary = run_figure2(
        workdir / "out", "--task", "mnist_logreg", "--data-dir", str(workdir / "data"),
        "--train-size", "8000", "--val-size", "1000", "--test-size", "1000", "--beta2", "0.99",
        "--lrs", "1e-2",
        "--epochs", "1", "--eval-every", "21", "--wandb", "off",
    )  # fmt: skip
    assert_valid_png(workdir / "out" / "figure2_mnist_logreg.png")
    for best in summary["best"].values():
        assert best["steps"] == 63  # ceil(8000 / 128)
        val = best["curves"]["val/loss"]
        assert [row[0] for row in val] == [21, 42, 63]
        assert val[-1][1] < val[0][1]
        assert best["final_val_acc"] >= 0.85 and best["test_acc"] >= 0.85


def test_several_seeds_give_per_seed_values_intervals_and_a_title_from_the_data(workdir):
    """#15: three seeds per grid point, the same splits, a t interval per point, the best
    chosen on validation and compared on the test split, paired by seed."""
    write_fake_mnist(workdir / "data", n_train=400, n_test=50)
    out = workdir / "out"
    summary = run_figure2(
        out, "--task", "mnist_logreg", "--data-dir", str(workdir / "data"), "--val-size", "100",
        "--test-size", "60", "--beta2", "0.99", "--lrs", "3e-3", "1e-2", "--max-steps", "4",
        "--eval-every", "2", "--diag-every", "2", "--wandb", "off", "--seeds", "3",
    )  # fmt: skip
    assert "Student t" in summary["interval"]
    for point in summary["grid"]:
        per_seed = point["per_seed"]
        assert [s["seed"] for s in per_seed] == [0, 1, 2]
        losses = [s["final_val_loss"] for s in per_seed]
        assert len(set(losses)) == 3  # the seeds differ (initial weights, order)
        interval = point["intervals"]["final_val_loss"]
        assert interval["n"] == 3 and interval["mean"] == pytest.approx(sum(losses) / 3)
        assert interval["low"] < interval["mean"] < interval["high"]
        assert interval == stats.t_interval(losses).as_json()
        for seed in per_seed:
            assert 0.0 <= seed["test_acc"] <= 1.0 and math.isfinite(seed["test_loss"])
    # every seed trained on the same split: the datamodule's split_seed, not the seed
    configs = [Path(s["metrics_csv"]).parents[1] for s in summary["grid"][0]["per_seed"]]
    assert len(configs) == 3
    diff = summary["differences"]["amsgrad - adam"]
    assert diff["seeds"] == [0, 1, 2]
    adam, amsgrad = (summary["best"][o]["per_seed"] for o in ("adam", "amsgrad"))
    paired = [b["test_acc"] - a["test_acc"] for a, b in zip(adam, amsgrad, strict=True)]
    assert diff["test_acc"] == stats.t_interval(paired).as_json()
    # the band: every logged iteration of the best has a mean and a 95% interval
    for row in summary["best"]["adam"]["curves"]["val/loss"]:
        step, mean, low, high = row
        assert low <= mean <= high
    assert (out / "figure2_mnist_logreg.pdf").read_bytes()[:5] == b"%PDF-"
    title = reproduce_figure2.figure2_title(summary)
    assert "3 seeds" in title and "Adam" in title and "AMSGrad" in title
    assert f"{100 * diff['test_acc']['mean']:+.2f} points" in title


def test_the_selection_never_reads_the_test_split():
    def point(optimizer, name, val, test):
        return {"optimizer": optimizer, "name": name, "final_val_loss": val, "test_loss": test}

    results = [point("adam", "a1", 0.5, 9.0), point("adam", "a2", 0.6, 0.1)]
    assert reproduce_figure2.best_points(results)["adam"]["name"] == "a1"


def test_a_short_run_is_not_titled_with_a_conclusion():
    """The title says what the numbers say: an interval across 0 resolves no difference."""

    def summary(test_acc_diffs):
        best = {}
        for optimizer in ("adam", "amsgrad"):
            per_seed = [{"seed": i, "test_acc": 0.9} for i in range(len(test_acc_diffs))]
            acc = stats.t_interval([0.9] * len(per_seed)).as_json()
            best[optimizer] = {"per_seed": per_seed, "intervals": {"test_acc": acc}}
        diff = stats.t_interval(test_acc_diffs).as_json()
        return {"task": "mnist_mlp", "best": best,
                "differences": {"amsgrad - adam": {"test_acc": diff}}}  # fmt: skip

    unresolved = reproduce_figure2.figure2_title(summary([-0.01, 0.012, 0.002]))
    assert "MNIST, MLP" in unresolved and "no difference resolved" in unresolved
    ahead = reproduce_figure2.figure2_title(summary([0.010, 0.011, 0.012]))
    assert "AMSGrad ahead" in ahead and "no difference" not in ahead
    one_seed = reproduce_figure2.figure2_title(summary([0.01]))
    assert "1 seed" in one_seed and "ahead" not in one_seed and "resolved" not in one_seed
    alone = summary([0.01, 0.02])
    del alone["best"]["adam"], alone["differences"]
    title = reproduce_figure2.figure2_title(alone)  # --optimizers amsgrad: no Adam named
    assert title.startswith("MNIST, MLP: AMSGrad over the grid") and "Adam " not in title


def test_seeds_and_settings_are_checked(workdir):
    with pytest.raises(SystemExit) as exit_:
        reproduce.main(["figure2", "--task", "mnist_logreg", "--out", "o", "--seeds", "0"])
    assert exit_.value.code == "error: --seeds must be >= 1, got 0"
    with pytest.raises(SystemExit) as exit_:
        reproduce.main(["figure2", "--task", "mnist_logreg", "--out", "o", "--set=--x=1"])
    assert exit_.value.code.startswith("error: --set takes KEY=VALUE")


def test_resume_reuses_only_fits_with_the_same_arguments(workdir):
    """A grid split over processes (one beta_2 each) and drawn by a last call over all of it."""
    write_fake_mnist(workdir / "data", n_train=300, n_test=50)
    out = workdir / "out"
    common = ["--task", "mnist_logreg", "--data-dir", str(workdir / "data"), "--val-size", "50",
              "--lrs", "3e-3", "--eval-every", "2", "--wandb", "off", "--seeds", "2",
              "--optimizers", "adam", "--resume"]  # fmt: skip
    part = run_figure2(out, *common, "--beta2", "0.99", "--max-steps", "3")
    assert part["reused_fits"] == 0
    whole = run_figure2(out, *common, "--beta2", "0.99", "0.999", "--max-steps", "3")
    assert whole["reused_fits"] == 2  # both seeds of beta_2 = 0.99
    (first,) = part["grid"]
    assert whole["grid"][0]["per_seed"] == first["per_seed"]
    again = run_figure2(out, *common, "--beta2", "0.99", "0.999", "--max-steps", "4")
    assert again["reused_fits"] == 0  # other arguments: fitted again
    assert all(p["steps"] == 4 for p in again["grid"])


def test_a_curve_of_one_point_is_drawn(monkeypatch, tmp_path):
    """A diagnostic logged once (a run shorter than two logging intervals) still shows up:
    spaced markers skipped it, and a one-point line without a marker is invisible."""
    from lit_amsgrad import figure_style

    drawn = {}
    monkeypatch.setattr(figure_style, "save_figure", lambda fig, stem: drawn.update(fig=fig))
    interval = stats.t_interval([1.0, 1.1]).as_json()
    point = {"optimizer": "adam", "name": "adam_x", "beta2": 0.99, "lr": 1e-3,
             "final_val_loss": 1.0, "intervals": {"final_val_loss": interval, "test_acc": interval},
             "per_seed": [{"seed": 0}, {"seed": 1}]}  # fmt: skip
    curves = {"val/loss": [[10, 1.0, 0.9, 1.1]], "diag/gamma_neg_frac": [[5, 0.9, 0.8, 1.0]]}
    summary = {"task": "cifarnet", "best": {"adam": {**point, "curves": curves}},
               "grid": [point], "differences": {}}  # fmt: skip
    reproduce_figure2.plot_figure2(summary, tmp_path / "f")
    ax_diag = drawn["fig"].axes[2]
    (line,) = ax_diag.get_lines()
    assert list(line.get_xdata()) == [5] and line.get_marker() not in ("None", "", None)
    assert line.get_markevery() is None


def test_unusable_data_is_one_error_line_naming_the_way_out(workdir):
    """CIFAR-10 files of one's own (not the official md5s): one line, as train.py prints it,
    pointing to verify_md5; with it, the same files train."""
    write_fake_cifar10(workdir / "data", n_per_batch=20, n_test=20)
    args = ["figure2", "--task", "cifarnet", "--out", "o", "--data-dir", str(workdir / "data"),
            "--val-size", "20", "--lrs", "1e-3", "--beta2", "0.99", "--optimizers", "adam",
            "--max-steps", "1", "--wandb", "off", "--set", "data.init_args.download=false"]  # fmt: skip
    with pytest.raises(SystemExit) as exit_:
        reproduce.main(args)
    assert exit_.value.code.startswith("error: CIFAR-10 file ")
    assert "verify_md5=false" in exit_.value.code and "\n" not in exit_.value.code
    reproduce.main([*args, "--set", "data.init_args.verify_md5=false", "--eval-every", "1"])
    summary = json.loads(Path("o/figure2_cifarnet.json").read_text())
    assert math.isfinite(summary["grid"][0]["test_acc"])
