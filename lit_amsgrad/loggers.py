"""The default logger: W&B that runs offline when this machine has no W&B credentials."""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import WandbLogger


def has_wandb_credentials() -> bool:
    """True when W&B could authenticate: an API key in the environment or in ~/.netrc."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


class RunWandbLogger(WandbLogger):
    """WandbLogger whose files go to the run folder and that goes offline by itself.

    ``offline=None`` (the default) means offline exactly when there are no credentials or
    ``WANDB_MODE`` says so; sync an offline run later with ``wandb sync <run dir>``.
    """

    def __init__(
        self,
        name: str | None = None,
        save_dir: str | None = None,
        project: str = "lit_amsgrad",
        offline: bool | None = None,
        id: str | None = None,
        log_model: bool = False,
        **kwargs: Any,
    ) -> None:
        if offline is None:
            mode = os.environ.get("WANDB_MODE", "")
            offline = mode in ("offline", "dryrun") or (
                mode != "online" and not has_wandb_credentials()
            )
        save_dir = str(save_dir if save_dir is not None else Path("runs"))
        Path(save_dir).mkdir(parents=True, exist_ok=True)
        super().__init__(
            name=name, save_dir=save_dir, project=project, offline=offline, id=id,
            log_model=log_model, **kwargs,
        )  # fmt: skip
