"""Read the records of a W&B offline run file (``run-<id>.wandb``) without the network.

The file is W&B's LevelDB-style log of protobuf ``Record``s: a 7-byte header (":W&B", magic,
version), then 32 KiB blocks of chunks, each with a (crc32, length, type) header; types
FULL=1, FIRST=2, MIDDLE=3, LAST=4.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any


def read_records(run_file: Path) -> list[Any]:
    """Every ``wandb_internal_pb2.Record`` in ``run_file``, in order."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = run_file.read_bytes()
    assert data[:4] == b":W&B"
    block, pos, pending, records = 32768, 7, b"", []
    while pos + 7 <= len(data):
        room = block - pos % block
        if room < 7:  # trailer padding
            pos += room
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending + chunk if kind == 4 else chunk)
            records.append(record)
            pending = b""
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
    return records


def read_config(run_file: Path) -> dict[str, Any]:
    """The run's config as W&B holds it: every config update merged, in order."""
    config: dict[str, Any] = {}
    for record in read_records(run_file):
        kind = record.WhichOneof("record_type")
        updates = (
            record.config.update
            if kind == "config"
            else record.run.config.update
            if kind == "run"
            else []
        )
        for item in updates:
            key = item.key or "/".join(item.nested_key)
            config[key] = json.loads(item.value_json)
    return config
