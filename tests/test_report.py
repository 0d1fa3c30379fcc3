"""python -m lit_amsgrad.report: a run made by train.py's code, drawn from its own W&B offline
file and its CSV file; fit_end_message; the TensorBoard logger gets the scalars too."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from lit_amsgrad.cli import main as train_main
from lit_amsgrad.loggers import OPTIMIZER_STEP
from lit_amsgrad.report import DPI, find_log, fit_end_message, read_csv, read_wandb
from lit_amsgrad.report import main as report_main

SYNTHETIC = "synthetic_online_amsgrad.yaml"
SHORT = ["--data.init_args.num_rounds=600", "--data.init_args.rounds_per_step=100",
         "--diag_every", "40"]  # fmt: skip


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Iterator[Path]:
    """An empty working directory for run folders, W&B offline and quiet."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["train.py"])
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    yield tmp_path
    import wandb

    if wandb.run is not None:
        wandb.finish()


def fit_with_both_loggers(root: Path, *extra: str):
    """The synthetic counterexample through train.py's CLI, logged by the default W&B logger
    (offline) and the CSV logger at once, into ``root/run``."""
    run = root / "run"
    loggers = [
        {"class_path": "lit_amsgrad.loggers.RunWandbLogger",
         "init_args": {"save_dir": str(run), "name": "synthetic_online_amsgrad"}},
        {"class_path": "lightning.pytorch.loggers.CSVLogger",
         "init_args": {"save_dir": str(run), "name": "csv", "version": ""}},
    ]  # fmt: skip
    cli = train_main(["fit", "--config", SYNTHETIC, *SHORT, f"--trainer.default_root_dir={run}",
                      f"--trainer.logger={json.dumps(loggers)}", *extra])  # fmt: skip
    import wandb

    wandb.finish()
    wait_for_wandb_exit(run)
    return cli, run


def wait_for_wandb_exit(run: Path, seconds: float = 20.0) -> None:
    """wandb-core may still be writing the offline file after wandb.finish() returns; the
    file is whole once its exit record is in."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        files = list(run.rglob("run-*.wandb"))
        if files and all(read_wandb(f).finished for f in files):
            return
        time.sleep(0.2)
    unfinished = [str(f) for f in run.rglob("run-*.wandb") if not read_wandb(f).finished]
    raise AssertionError(f"no complete W&B run file under {run} after {seconds} s: {unfinished}")


def test_report_draws_the_same_run_from_its_wandb_file_and_its_csv(workdir):
    cli, run = fit_with_both_loggers(workdir)
    from_wandb = find_log(run, "wandb")
    from_csv = find_log(run, "csv")
    assert from_wandb.source.suffix == ".wandb" and from_csv.source.name == "metrics.csv"
    # the diagnostics at the optimizer steps they describe: 600 rounds = 600 optimizer steps
    steps = [s for s, _ in from_csv.curves["diag/eff_lr/min"]]
    assert steps == [40.0 * k for k in range(1, 16)]
    assert cli.trainer.global_step == 600
    for key in ("diag/eff_lr/min", "diag/gamma_min", "diag/vhat_max", "x", "avg_regret"):
        w, c = from_wandb.curves[key], from_csv.curves[key]
        assert [s for s, _ in w] == [s for s, _ in c], key
        assert [v for _, v in w] == pytest.approx([v for _, v in c], rel=1e-6), key
    assert from_csv.curves["x"][-1][1] == pytest.approx(float(cli.model.x.mean()), rel=1e-6)

    for source in ("wandb", "csv"):
        out = workdir / source
        paths = report_main([str(run), "--source", source, "--out", str(out)])
        assert [p.name for p in paths] == ["report.png", "report.pdf"]
        with Image.open(paths[0]) as png:
            assert png.info["dpi"][0] == pytest.approx(DPI, abs=1)
            assert png.size[0] >= 8 * DPI
        assert paths[1].read_bytes()[:5] == b"%PDF-"
    # by default: next to the run
    assert [p.parent for p in report_main([str(run)])] == [run, run]


def test_report_of_a_folder_without_logs_is_one_error_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        report_main([str(tmp_path)])
    message = str(exit_.value.code)
    assert message.startswith("error: ") and "\n" not in message
    assert "run-*.wandb" in message and "metrics.csv" in message
    with pytest.raises(SystemExit) as exit_:
        report_main([str(tmp_path / "missing")])
    assert str(exit_.value.code).startswith("error: ") and "not a folder" in str(exit_.value.code)


def test_wandb_file_defines_the_step_of_each_key(workdir):
    """define_metric, read back from the offline run file: diag/* against optimizer/step,
    the rest against trainer/global_step (Lightning's catch-all)."""
    _, run = fit_with_both_loggers(workdir)
    log = find_log(run, "wandb")
    diag_keys = [k for k in log.curves if k.startswith("diag/")]
    assert "diag/eff_lr/min/x" in diag_keys
    for key in diag_keys:
        assert log.step_metrics[key] == OPTIMIZER_STEP, key
    assert log.step_metrics["diag/*"] == OPTIMIZER_STEP
    assert log.step_metrics["*"] == "trainer/global_step"
    assert "x" not in log.step_metrics  # by the glob, not by name
    # and every diagnostics row carries its optimizer step
    assert [s for s, _ in log.curves["diag/gamma_min"]] == [
        v for _, v in log.curves[OPTIMIZER_STEP]
    ]


def test_run_name_says_config_optimizer_and_changed_settings(workdir):
    from tests.wandb_records import wandb_records

    _, run = fit_with_both_loggers(
        workdir, "--model.init_args.optimizer.class_path=lit_amsgrad.optim.Adam",
        "--model.init_args.optimizer.init_args.lr=0.25",
    )  # fmt: skip
    (run_file,) = run.rglob("run-*.wandb")
    names = [r.run.display_name for r in wandb_records(run_file) if r.HasField("run")]
    tags = [list(r.run.tags) for r in wandb_records(run_file) if r.HasField("run")]
    name = names[-1]
    assert name.startswith("synthetic_online_amsgrad Adam ")
    assert "lr=0.25" in name.split() and "log_every_n_steps=40" in name.split()
    assert "num_rounds=600" in name.split()
    assert {"Adam", "synthetic_online", "seed=0"} <= set(tags[-1])
    config = {}
    for record in wandb_records(run_file):
        if record.HasField("config"):
            config.update({u.key: json.loads(u.value_json) for u in record.config.update})
    assert config["optimizer_name"] == "Adam"
    assert config["config_name"] == "synthetic_online_amsgrad"
    assert config["task_name"] == "synthetic_online"


def test_fit_end_message_names_the_folder_the_sync_and_the_draw(workdir):
    cli, run = fit_with_both_loggers(workdir)
    message = fit_end_message(run, cli.trainer.loggers)
    lines = message.splitlines()
    assert lines[0] == f"run folder: {run}"
    (sync,) = [line for line in lines if "wandb sync" in line]
    offline_dir = Path(sync.split("wandb sync ", 1)[1])
    assert offline_dir.is_dir() and list(offline_dir.glob("run-*.wandb"))
    (draw,) = [line for line in lines if "lit_amsgrad.report" in line]
    drawn = Path(draw.split("python -m lit_amsgrad.report ", 1)[1])
    assert (drawn / "metrics.csv").is_file()  # the CSV logger's folder
    assert report_main([str(drawn)])[0].is_file()  # the command it prints works

    only_wandb = [lg for lg in cli.trainer.loggers if "Wandb" in type(lg).__name__]
    draw_wandb = fit_end_message(run, only_wandb).splitlines()[-1]
    assert draw_wandb == f"draw it: python -m lit_amsgrad.report {run}"
    assert fit_end_message(run, None) == f"run folder: {run}"


def test_csv_logger_for_train_py_as_the_readme_says(workdir):
    """README: diagnostics without W&B, train.py with the CSV logger, then report."""
    save_dir = workdir / "csv_runs"
    train_main(["fit", "--config", SYNTHETIC, *SHORT,
                "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
                f"--trainer.logger.save_dir={save_dir}"])  # fmt: skip
    (metrics,) = save_dir.rglob("metrics.csv")
    log = read_csv(metrics)
    assert {"diag/eff_lr/median", "diag/gamma_neg_frac", "x"} <= set(log.curves)
    assert report_main([str(metrics.parent)])[0] == metrics.parent / "report.png"


def test_read_wandb_of_a_cut_off_file_keeps_the_complete_records(workdir):
    _, run = fit_with_both_loggers(workdir)
    (run_file,) = run.rglob("run-*.wandb")
    whole = read_wandb(run_file)
    cut = workdir / "run-cut.wandb"
    cut.write_bytes(run_file.read_bytes()[: run_file.stat().st_size // 2])
    part = read_wandb(cut)
    key = "diag/eff_lr/min"
    assert 0 < len(part.curves.get(key, [])) < len(whole.curves[key])
    assert part.curves[key] == whole.curves[key][: len(part.curves[key])]  # same points


def test_a_later_run_in_another_working_directory_writes_into_its_own_folder(workdir, monkeypatch):
    """W&B's service outlives a run and resolved a relative run folder against the working
    directory it started in: a second fit after a chdir wrote its W&B file into the first
    directory's runs/."""
    fit_with_both_loggers(workdir / "first")
    second = workdir / "second"
    second.mkdir()
    monkeypatch.chdir(second)
    cli = train_main(["fit", "--config", SYNTHETIC, *SHORT])
    run = Path(cli.trainer.default_root_dir)
    assert not run.is_absolute()  # the CLI's relative runs/<config>/<time>
    wait_for_wandb_exit(second / run)
    assert not list((workdir / "first").glob("runs/**/*.wandb"))


def test_runs_of_a_sweep_agent_say_so_and_others_are_fits(tmp_path, monkeypatch):
    from lit_amsgrad.loggers import RunWandbLogger

    monkeypatch.delenv("WANDB_SWEEP_ID", raising=False)
    plain = RunWandbLogger(name="mnist_logreg", save_dir=str(tmp_path), offline=True)
    assert plain._wandb_init["job_type"] == "fit" and not plain._wandb_init.get("tags")
    monkeypatch.setenv("WANDB_SWEEP_ID", "abc123")
    swept = RunWandbLogger(name="mnist_logreg", save_dir=str(tmp_path), offline=True, tags=["x"])
    assert swept._wandb_init["job_type"] == "sweep" and swept._wandb_init["tags"] == ["x", "sweep"]
    grid = RunWandbLogger(name="g", save_dir=str(tmp_path), offline=True, job_type="figure2")
    assert grid._wandb_init["job_type"] == "figure2"
