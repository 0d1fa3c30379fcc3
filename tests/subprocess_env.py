"""The environment for a train.py subprocess started from the test process."""

import os


def offline_env() -> dict[str, str]:
    """This process's environment, W&B offline, without what in-process runs left behind:
    wandb points WANDB_SERVICE at this process's (maybe finished) W&B service, and a child
    must start its own."""
    env = {k: v for k, v in os.environ.items() if k not in ("WANDB_SERVICE", "WANDB_MODE")}
    env.pop("LIT_AMSGRAD_RUN_DIR", None)
    env["WANDB_MODE"] = "offline"
    return env
