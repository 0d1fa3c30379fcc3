"""What a W&B offline run file (``run-<id>.wandb``) holds, read without the network through
the project's own reader (``lit_amsgrad.report.wandb_records``)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from lit_amsgrad.report import wandb_records as _records

#: how long to wait for W&B's writer to finish a run file (its ``exit`` record)
FINISH_TIMEOUT_S = 60.0


def wandb_records(run_file: Path) -> list[Any]:
    """The run file's records once W&B has written its ``exit`` record: ``wandb.finish`` can
    return while the writer still flushes (a CI run read the file without its config records).
    After ``FINISH_TIMEOUT_S`` the records read so far, for the assertions to judge."""
    deadline = time.monotonic() + FINISH_TIMEOUT_S
    while True:
        records = list(_records(run_file))
        if any(r.WhichOneof("record_type") == "exit" for r in records):
            return records
        if time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def read_history(run_file: Path) -> list[dict[str, object]]:
    """The history rows, in order, each as {key: value}."""
    return [
        {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in r.history.item}
        for r in wandb_records(run_file)
        if r.WhichOneof("record_type") == "history"
    ]


def read_config(run_file: Path) -> dict[str, Any]:
    """The run's config as W&B holds it: every config update merged, in order."""
    config: dict[str, Any] = {}
    for record in wandb_records(run_file):
        kind = record.WhichOneof("record_type")
        if kind == "config":
            updates = record.config.update
        elif kind == "run":
            updates = record.run.config.update
        else:
            continue
        for item in updates:
            config[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return config
