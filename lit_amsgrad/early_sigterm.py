"""SIGTERM before training begins: exit 143 with one line, not a half-imported traceback.

A scheduler may preempt a job while Python is still importing torch or parsing the config.
The default action kills the process silently (and a handler that raises mid-import prints
a traceback). Lightning installs its own handler when the fit starts (it ends the current
batch and saves ``last.ckpt``); ``restore_default`` hands SIGTERM back before that, since
Lightning keeps an existing handler and would call it in the middle of a step.
"""

from __future__ import annotations

import signal
import sys
from typing import Any

EXIT_CODE = 128 + signal.SIGTERM  # the conventional status of a process ended by SIGTERM


def _exit_before_training(signum: int, frame: Any) -> None:
    print(
        "error: interrupted by SIGTERM before training began: nothing was trained or saved; "
        "run the same command again",
        file=sys.stderr,
    )
    raise SystemExit(EXIT_CODE)


def install() -> None:
    """From the first line of ``train.py`` until the trainer starts."""
    signal.signal(signal.SIGTERM, _exit_before_training)


def restore_default() -> None:
    """Hand SIGTERM back (to Lightning's handler, installed when the fit starts)."""
    if signal.getsignal(signal.SIGTERM) is _exit_before_training:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
