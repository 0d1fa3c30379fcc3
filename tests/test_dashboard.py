"""python -m lit_amsgrad.dashboard: the workspace and the figure-2 report, built and serialised
offline; every key a panel names is one that real train.py runs made in this test logged."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from lit_amsgrad.cli import load_config
from lit_amsgrad.cli import main as train_main
from lit_amsgrad.dashboard import main as dashboard_main
from tests.fakedata import write_fake_mnist
from tests.test_diagnostics_loggers import read_wandb_history
from tests.test_report import SHORT, SYNTHETIC, wait_for_wandb_exit


@pytest.fixture(scope="module")
def logged(tmp_path_factory) -> Iterator[dict[str, object]]:
    """What real runs logged: an MNIST logistic regression (fit on fake digits, then test),
    W&B offline with histograms, and the synthetic counterexample with the CSV logger.
    Returns the union of their keys, read back from the W&B files and the CSV file, and the
    W&B config of the fit."""
    root = tmp_path_factory.mktemp("runs")
    data = root / "data"
    write_fake_mnist(data, n_train=400, n_test=64)
    config = load_config("mnist_logreg_amsgrad.yaml")
    diag = config["trainer"]["callbacks"][0]["init_args"]
    diag.update(log_every_n_steps=2, histogram_every_n_steps=4)
    (root / "mnist_logreg_amsgrad.yaml").write_text(yaml.safe_dump(config))
    common = ["--config", str(root / "mnist_logreg_amsgrad.yaml"), f"--data.data_dir={data}",
              "--data.val_size=100", "--data.batch_size=32", "--data.num_workers=0"]  # fmt: skip
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setattr(sys, "argv", ["train.py"])
        mp.setenv("WANDB_MODE", "offline")
        mp.setenv("WANDB_SILENT", "true")
        train_main(["fit", *common, "--trainer.max_epochs=1", "--trainer.limit_val_batches=2",
                    "--trainer.log_every_n_steps=2"])  # fmt: skip
        train_main(["test", *common, "--ckpt_path", "last"])
        train_main(["fit", "--config", SYNTHETIC, *SHORT,
                    "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
                    f"--trainer.logger.save_dir={root / 'csv'}"])  # fmt: skip
        import wandb

        if wandb.run is not None:
            wandb.finish()
    wait_for_wandb_exit(root / "runs")
    keys: set[str] = set()
    for run_file in (root / "runs").rglob("run-*.wandb"):
        for row in read_wandb_history(run_file):
            keys |= set(row)
    (metrics,) = (root / "csv").rglob("metrics.csv")
    keys |= set(metrics.read_text().splitlines()[0].split(","))
    from tests.wandb_records import wandb_records

    wandb_config: dict[str, object] = {}
    (fit_file, *_) = sorted((root / "runs").rglob("run-*.wandb"), key=lambda p: p.stat().st_mtime)
    for record in wandb_records(fit_file):
        if record.HasField("config"):
            wandb_config.update({u.key: json.loads(u.value_json) for u in record.config.update})
    yield {"keys": keys, "config": wandb_config}


def dry_run(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "definition.json"
    dashboard_main(["--entity", "someone", "--project", "lit_amsgrad", *args,
                    "--dry-run", "--out", str(out)])  # fmt: skip
    return json.loads(out.read_text())


def panels_of(node: object) -> list[dict]:
    """Every line-plot panel's config anywhere in a definition."""
    found = []
    if isinstance(node, dict):
        if node.get("viewType") == "Run History Line Plot":
            found.append(node["config"])
        for value in node.values():
            found += panels_of(value)
    elif isinstance(node, list):
        for value in node:
            found += panels_of(value)
    return found


def test_workspace_definition_names_only_keys_the_runs_logged(tmp_path, logged, capsys):
    keys = logged["keys"]
    definition = dry_run(tmp_path)
    sections = definition["spec"]["section"]["panelBankConfig"]["sections"]
    names = [s["name"] for s in sections]
    assert names == ["training", "diagnostics", "diagnostics per parameter", "histograms"]
    by_section = {s["name"]: panels_of(s) for s in sections}

    named = {m for s in ("training", "diagnostics") for p in by_section[s] for m in p["metrics"]}
    assert {"train/loss", "val/loss", "val/acc", "test/acc"} <= named
    assert {"diag/eff_lr/min", "diag/eff_lr/median", "diag/eff_lr/max", "diag/gamma_neg_frac",
            "diag/gamma_min", "diag/vhat_active_frac", "diag/vhat_max", "diag/vhat_growth",
            "diag/nonfinite"} <= named  # fmt: skip
    assert named <= keys, sorted(named - keys)
    for section in ("training", "diagnostics"):
        for panel in by_section[section]:
            assert panel["xAxis"] in keys, panel
    (eff_lr,) = [p for p in by_section["diagnostics"] if "diag/eff_lr/min" in p["metrics"]]
    assert eff_lr["yLogScale"] is True and eff_lr["xAxis"] == "optimizer/step"

    # regex panels: each matches real per-parameter keys, and only those of its statistic
    per_parameter = by_section["diagnostics per parameter"]
    assert len(per_parameter) >= 8
    for panel in [*per_parameter, *by_section["histograms"]]:
        assert panel["useMetricRegex"] is True
        pattern = re.compile(panel["metricRegex"])
        matched = {k for k in keys if pattern.search(k)}
        assert matched, panel["metricRegex"]
        assert not any(k.count("/") < 2 for k in matched), matched
    histogram_keys = {k for k in keys if k.startswith("diag_hist/eff_lr/")}
    assert {"diag_hist/eff_lr/net.1.weight", "diag_hist/eff_lr/net.1.bias"} <= {
        k.rsplit("/", 1)[0] for k in histogram_keys
    }

    # runs grouped by keys the runs' W&B config really holds
    (runset,) = definition["spec"]["section"]["runSets"]
    grouping = [g["name"].removesuffix(".value") for g in runset["grouping"]]
    assert grouping == ["config_name", "optimizer_name"]
    assert logged["config"]["config_name"] == "mnist_logreg_amsgrad"
    assert logged["config"]["optimizer_name"] == "AMSGrad"
    assert f"({len((tmp_path / 'definition.json').read_text())} bytes)" in capsys.readouterr().out


def test_figure2_report_selects_the_grid_and_names_logged_keys(tmp_path, logged):
    definition = dry_run(tmp_path, "--figure2-report", "mnist_logreg")
    text = json.dumps(definition)
    assert "figure2_mnist_logreg" in text
    panels = panels_of(definition)
    assert panels and {m for p in panels for m in p["metrics"]} <= logged["keys"]
    runsets = [r for block in definition["spec"]["blocks"] for r in block.get("metadata", {})
               .get("runSets", [])]  # fmt: skip
    assert runsets
    for runset in runsets:
        (leaf,) = runset["filters"]["filters"]
        assert (leaf["key"]["name"], leaf["value"]) == ("group", "figure2_mnist_logreg")
        assert [g["name"] for g in runset["grouping"]] == ["optimizer_name.value"]


def test_figure2_report_of_an_unknown_task_is_one_error_line(tmp_path):
    with pytest.raises(SystemExit) as exit_:
        dry_run(tmp_path, "--figure2-report", "imagenet")
    message = str(exit_.value.code)
    assert message.startswith("error: ") and "\n" not in message
    assert "imagenet" in message and "mnist_logreg" in message


def test_save_without_credentials_is_one_error_line(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    with pytest.raises(SystemExit) as exit_:
        dashboard_main(["--entity", "someone", "--project", "lit_amsgrad"])
    message = str(exit_.value.code)
    assert message.startswith("error: ") and "\n" not in message
    assert "wandb login" in message and "--dry-run" in message


def test_out_without_dry_run_is_one_error_line(tmp_path):
    with pytest.raises(SystemExit) as exit_:
        dashboard_main(["--entity", "someone", "--out", str(tmp_path / "ws.json")])
    message = str(exit_.value.code)
    assert message.startswith("error: ") and "\n" not in message and "--dry-run" in message
    assert not (tmp_path / "ws.json").exists()
