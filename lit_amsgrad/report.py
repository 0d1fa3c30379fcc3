"""A finished run drawn from its own logs, without W&B: ``python -m lit_amsgrad.report RUN_DIR``.

Reads the W&B offline file (``RUN_DIR/**/run-*.wandb``) or the CSV logger's ``metrics.csv``,
whichever is there (``--source`` picks one where both are), and writes
``RUN_DIR/report.png`` (200 dpi) and ``RUN_DIR/report.pdf``: the training curves and the
diagnostics, in the panels of the W&B workspace (``lit_amsgrad.dashboard``). Diagnostics are
drawn against the optimizer step they describe, training keys against the training step.
``fit_end_message`` is the note the end of a fit prints: where the run is, how to sync it,
how to draw it.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import struct
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lit_amsgrad import figure_style
from lit_amsgrad.dashboard import DIAGNOSTICS, TRAINER_STEP, TRAINING, Panel
from lit_amsgrad.loggers import DIAG_PREFIX, OPTIMIZER_STEP

SOURCES = ("auto", "wandb", "csv")
DPI = figure_style.PNG_DPI


@dataclass
class RunLog:
    """What a run logged: each key's (step, value) points, and W&B's metric definitions
    (metric name or glob -> its step metric; empty for CSV)."""

    source: Path
    curves: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    step_metrics: dict[str, str] = field(default_factory=dict)
    #: W&B: the run's exit record is in the file (a run still writing, or being flushed, has none)
    finished: bool = True

    def add(self, key: str, step: Any, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float) or step is None:
            return
        self.curves.setdefault(key, []).append((float(step), float(value)))


# ------------------------------------------------------------------ reading the logs
def wandb_records(path: Path) -> Iterator[Any]:
    """The protobuf ``Record``s of a ``.wandb`` file, in order.

    The file is W&B's LevelDB-style log: a 7-byte header (":W&B", magic, version), then
    32 KiB blocks of chunks, each with a (crc32, length, type) header; types FULL=1, FIRST=2,
    MIDDLE=3, LAST=4. A chunk cut off at the end (a run still writing) is ignored.
    """
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a W&B run file (no :W&B header)")
    block, pos, pending = 32768, 7, b""
    while pos + 7 <= len(data):
        room = block - pos % block
        if room < 7:  # block trailer
            pos += room
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if len(chunk) < length:
            return
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending + chunk if kind == 4 else chunk)
            pending = b""
            yield record
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk


def read_wandb(paths: Path | Sequence[Path]) -> RunLog:
    """History and metric definitions of one W&B run (several files: one run resumed)."""
    paths = [paths] if isinstance(paths, Path) else list(paths)
    log = RunLog(source=paths[-1], finished=False)
    for path in paths:
        for record in wandb_records(path):
            kind = record.WhichOneof("record_type")
            log.finished = log.finished or kind == "exit"
            if kind == "metric" and record.metric.step_metric:
                log.step_metrics[record.metric.name or record.metric.glob_name] = (
                    record.metric.step_metric
                )
            elif kind == "history":
                row = {
                    (i.key or "/".join(i.nested_key)): json.loads(i.value_json)
                    for i in record.history.item
                }
                for key, value in row.items():
                    log.add(key, _step_of(key, row), value)
    return log


def _step_of(key: str, row: dict[str, Any]) -> Any:
    """A W&B row's step for ``key``: diagnostics by the optimizer step, the rest by the
    training step (W&B's own ``_step`` where neither is there)."""
    if key.startswith(DIAG_PREFIX) and OPTIMIZER_STEP in row:
        return row[OPTIMIZER_STEP]
    return row.get(TRAINER_STEP, row.get("_step"))


def read_csv(path: Path) -> RunLog:
    """Lightning's CSVLogger file: one column per key, the step (the optimizer step for the
    diagnostics, the training step otherwise) in ``step``."""
    log = RunLog(source=path)
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            step = row.get("step")
            for key, text in row.items():
                if key in ("step", None) or not text:
                    continue
                try:
                    log.add(key, float(step) if step else None, float(text))
                except ValueError:
                    continue
    return log


def find_log(run_dir: Path, source: str = "auto") -> RunLog:
    """The run's W&B offline file(s) or ``metrics.csv`` under ``run_dir`` (``auto``: W&B's
    where both are); ``FileNotFoundError`` saying what was looked for."""
    if source not in SOURCES:
        raise ValueError(f"--source must be one of {', '.join(SOURCES)}, got {source!r}")
    run_dir = Path(run_dir)
    if source in ("auto", "wandb"):
        files = sorted(run_dir.rglob("run-*.wandb"), key=lambda p: p.stat().st_mtime)
        if files:
            run_id = files[-1].stem.removeprefix("run-")
            return read_wandb([p for p in files if p.stem == f"run-{run_id}"])
    if source in ("auto", "csv"):
        files = sorted(run_dir.rglob("metrics.csv"), key=lambda p: p.stat().st_mtime)
        if files:
            return read_csv(files[-1])
    wanted = {"auto": "a W&B run file (run-*.wandb) or a metrics.csv",
              "wandb": "a W&B run file (run-*.wandb)", "csv": "a metrics.csv"}[source]  # fmt: skip
    raise FileNotFoundError(f"{run_dir}: no {wanted} under it")


# ------------------------------------------------------------------ drawing
def draw(log: RunLog, out_dir: Path, title: str | None = None) -> list[Path]:
    """``report.png`` and ``report.pdf`` in ``out_dir``: every panel that has data, drawn
    and saved as every figure of the project (``lit_amsgrad.figure_style``)."""
    plt = figure_style.pyplot()

    panels = [p for p in (*TRAINING, *DIAGNOSTICS) if any(k in log.curves for k in p.keys)]
    if not panels:
        raise ValueError(f"{log.source}: none of the training or diag/ keys was logged")
    cols = 3
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax, panel in zip(axes.flat, panels, strict=False):
        _draw_panel(ax, panel, log)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle(title or str(log.source), fontsize=10)
    fig.tight_layout()
    return figure_style.save_figure(fig, Path(out_dir) / "report")


def _draw_panel(ax: Any, panel: Panel, log: RunLog) -> None:
    for key in panel.keys:
        points = sorted(log.curves.get(key, []))
        if not points:
            continue
        steps, values = zip(*points, strict=True)
        style = {"marker": "o", "markersize": 3} if len(points) < 30 else {}
        ax.plot(steps, values, label=key, linewidth=1.2, **style)
    positive = all(v > 0 for k in panel.keys for _, v in log.curves.get(k, []))
    if panel.log_y and positive:
        ax.set_yscale("log")
    ax.set_title(panel.title, fontsize=9)
    ax.set_xlabel("optimizer step" if panel.x == OPTIMIZER_STEP else "training step", fontsize=8)
    ax.tick_params(which="both", labelsize=7)
    ax.grid(alpha=0.3)
    if len(panel.keys) > 1:
        ax.legend(fontsize=7)


# ------------------------------------------------------------------ the end of a fit
def fit_end_message(run_dir: Path | str, loggers: Any) -> str:
    """Where the run is and how to look at it: the run folder, ``wandb sync`` for an
    offline W&B run, the run's W&B folder for an online one, and the ``report`` command
    for the folder that holds its logs. ``loggers``: the trainer's loggers (one, a list,
    or None)."""
    from lightning.pytorch.loggers import CSVLogger, WandbLogger

    run_dir = Path(run_dir)
    if loggers is None or loggers is False:
        loggers = []
    elif not isinstance(loggers, list | tuple):
        loggers = [loggers]
    lines = [f"run folder: {run_dir}"]
    drawable = None
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            save_dir = Path(logger.save_dir or run_dir)
            runs = sorted((save_dir / "wandb").glob("*run-*"), key=lambda p: p.stat().st_mtime)
            runs = [p for p in runs if p.is_dir()]
            if runs and runs[-1].name.startswith("offline-run-"):
                lines.append(f"sync to W&B: wandb sync {runs[-1]}")
            elif runs:
                lines.append(f"W&B run files: {runs[-1]} (logged online)")
            drawable = drawable or save_dir
        elif isinstance(logger, CSVLogger):
            drawable = Path(logger.log_dir)
    if drawable is not None:
        lines.append(f"draw it: python -m lit_amsgrad.report {drawable}")
    return "\n".join(lines)


# ------------------------------------------------------------------ command line
def main(argv: Sequence[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(
        prog="python -m lit_amsgrad.report",
        description="Draw a finished run's training curves and diagnostics from its own "
        "logs (W&B offline file or CSV logger), as RUN_DIR/report.png and report.pdf.",
    )
    parser.add_argument("run_dir", type=Path, help="the run folder (or the CSV logger's)")
    parser.add_argument("--source", choices=SOURCES, default="auto",
                        help="which log to read (auto: the W&B file where both are)")  # fmt: skip
    parser.add_argument("--out", type=Path, help="where to write (default: RUN_DIR)")
    args = parser.parse_args(argv)
    if not args.run_dir.is_dir():
        sys.exit(f"error: {args.run_dir} is not a folder: pass a run folder (runs/<config>/<time>)")
    try:
        log = find_log(args.run_dir, args.source)
        if not log.finished:
            print(f"note: {log.source} has no exit record: the run is still running or "
                  "was killed; drawing what it holds", file=sys.stderr)  # fmt: skip
        paths = draw(log, args.out or args.run_dir, title=f"{args.run_dir}  ({log.source.name})")
    except (FileNotFoundError, ValueError) as err:
        sys.exit(f"error: {err}")
    for path in paths:
        print(path)
    return paths


if __name__ == "__main__":
    main()
