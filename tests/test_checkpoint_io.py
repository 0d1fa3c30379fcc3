"""Checkpoints are written atomically and verified on load: a writer killed at any moment, a
full disk or foreign bytes never leave a file that loads wrongly."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from lit_amsgrad.checkpoint_io import (
    AtomicCheckpointIO,
    CorruptCheckpointError,
    atomic_save,
    verify_checkpoint,
)

WRITER = """
import sys, torch
from lit_amsgrad.checkpoint_io import atomic_save
path = sys.argv[1]
for i in range(10**6):
    atomic_save({"i": i, "w": torch.full((2_000_000,), float(i))}, path)
    print(i, flush=True)
"""


def _checkpoint(value: float = 1.0) -> dict:
    return {"state_dict": {"w": torch.full((50_000,), value)}, "global_step": 3}


def test_round_trip(tmp_path):
    io = AtomicCheckpointIO()
    io.save_checkpoint(_checkpoint(2.0), tmp_path / "a.ckpt")
    loaded = io.load_checkpoint(tmp_path / "a.ckpt")
    assert torch.equal(loaded["state_dict"]["w"], torch.full((50_000,), 2.0))
    assert [p.name for p in tmp_path.iterdir()] == ["a.ckpt"]


def test_foreign_bytes_inside_a_checkpoint_are_refused(tmp_path):
    """4 kB of random bytes in the middle loaded silently into a tensor before (torch does
    not check the CRC-32 of its zip records)."""
    path = tmp_path / "a.ckpt"
    atomic_save(_checkpoint(), path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 4096] = os.urandom(4096)
    path.write_bytes(bytes(data))
    torch.load(path, weights_only=True)  # what torch alone does: no complaint
    with pytest.raises(CorruptCheckpointError, match=r"a.ckpt is corrupt: record .* checksum"):
        AtomicCheckpointIO().load_checkpoint(path)


@pytest.mark.parametrize("size", [0, 1000])
def test_a_truncated_checkpoint_is_refused(tmp_path, size):
    path = tmp_path / "a.ckpt"
    atomic_save(_checkpoint(), path)
    path.write_bytes(path.read_bytes()[:size])
    with pytest.raises(
        CorruptCheckpointError, match=rf"a.ckpt is not a whole checkpoint \({size} bytes"
    ):
        verify_checkpoint(path)


def test_a_failed_save_keeps_the_old_checkpoint_and_no_temp_file(tmp_path, monkeypatch):
    """A full disk: the write fails half way; the old checkpoint stays whole."""
    path = tmp_path / "last.ckpt"
    atomic_save(_checkpoint(1.0), path)

    def disk_full(obj, file, *args, **kwargs):
        file.write(b"PK\x03\x04partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match="No space"):
        atomic_save(_checkpoint(2.0), path)
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]
    loaded = AtomicCheckpointIO().load_checkpoint(path)
    assert torch.equal(loaded["state_dict"]["w"], torch.full((50_000,), 1.0))


def test_a_writer_killed_at_random_points_leaves_a_whole_checkpoint(tmp_path):
    """kill -9 while a 8 MB checkpoint is being rewritten in a loop: the file is always the
    last complete save (or absent before the first one), and the next save removes the
    killed writer's temporary file."""
    rng = random.Random(0)
    path = tmp_path / "last.ckpt"
    for trial in range(4):
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True
        )
        writer.stdout.readline()  # one save done: from here on there is a good file
        time.sleep(rng.uniform(0.0, 0.3))
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        loaded = AtomicCheckpointIO().load_checkpoint(path)  # whole, or this raises
        assert torch.all(loaded["w"] == float(loaded["i"])), trial
    leftovers = [p for p in tmp_path.iterdir() if p.name != "last.ckpt"]
    atomic_save({"i": -1}, path)  # the next save into the folder cleans up
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"], leftovers
