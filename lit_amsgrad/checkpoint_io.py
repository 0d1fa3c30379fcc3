"""Checkpoints that are either whole or refused: atomic writes and a verified checksum.

Lightning's own ``TorchCheckpointIO`` writes through fsspec, which stages the file elsewhere
and moves it; across filesystems that move is a copy, so a kill during a save can leave a
stub where the good checkpoint was. Here a save writes a temporary file in the checkpoint's
own folder, flushes and fsyncs it, and ``os.replace``s it over the old one (atomic on POSIX):
a reader sees the old checkpoint or the new one, never a part. A failed save (full disk,
exception) removes its temporary file and leaves the old checkpoint as it was; temporary
files of writers that were killed are removed by the next save into that folder.

The checksum is the one a checkpoint already carries: ``torch.save`` writes a zip archive
with a CRC-32 per record. Loading reads every record and checks it (``zipfile.testzip``), so
a truncated file or a few kB of foreign bytes is refused with a :class:`CorruptCheckpointError`
naming the file and the record, instead of loading silently into a state tensor.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from lit_amsgrad.errors import ConfigError

TEMP_SUFFIX = ".tmp"


class CorruptCheckpointError(ConfigError):
    """A checkpoint file that is truncated or whose bytes do not match its checksums."""


def _temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}{TEMP_SUFFIX}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Temporary files of writers that no longer run (killed during a save)."""
    removed = []
    for temp in folder.glob(f".*{TEMP_SUFFIX}"):
        pid = temp.name.removesuffix(TEMP_SUFFIX).rsplit(".", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            temp.unlink(missing_ok=True)
            removed.append(temp)
    return removed


def atomic_save(checkpoint: dict[str, Any], path: str | os.PathLike) -> None:
    """torch.save into a temporary file beside ``path``, fsync, then replace ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(path.parent)
    temp = _temp_name(path)
    try:
        with open(temp, "wb") as file:
            torch.save(checkpoint, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)  # the rename itself survives a power cut
    finally:
        os.close(folder)


def verify_checkpoint(path: str | os.PathLike) -> None:
    """Raise CorruptCheckpointError unless every record of the file matches its CRC-32."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, EOFError, OSError) as error:
        size = path.stat().st_size if path.exists() else 0
        raise CorruptCheckpointError(
            f"checkpoint {path} is not a whole checkpoint ({size} bytes, {error}); "
            "resume from another one (--ckpt_path last takes the newest intact one)"
        ) from error
    if bad is not None:
        raise CorruptCheckpointError(
            f"checkpoint {path} is corrupt: record {bad!r} does not match its checksum; "
            "resume from another one (--ckpt_path last takes the newest intact one)"
        )


def is_intact(path: str | os.PathLike) -> bool:
    try:
        verify_checkpoint(path)
    except CorruptCheckpointError:
        return False
    return True


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO with :func:`atomic_save` and :func:`verify_checkpoint`."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        atomic_save(checkpoint, path)

    def load_checkpoint(self, path: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        verify_checkpoint(path)
        return super().load_checkpoint(path, *args, **kwargs)
