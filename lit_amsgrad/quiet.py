"""Known-harmless messages that a first run would otherwise print, each with why it is
harmless here. Everything else (Lightning's own warnings about a config) still shows.
"""

from __future__ import annotations

import logging
import warnings

#: Lightning's info lines that say nothing about this run
HARMLESS_LOG_LINES = (
    # an advertisement printed whenever the logger is not Lightning's own LitLogger
    "💡 Tip: For seamless cloud logging",
    # the CLI adds a RichModelSummary on purpose, so Lightning's default one is skipped
    "Trainer already configured with model summary callbacks",
)

#: warnings raised inside libraries on every run, about their own code
HARMLESS_WARNINGS = (
    # Lightning 2.6's pytree helper against torch >= 2.10's pytree: Lightning's code to change
    r".*isinstance.treespec, LeafSpec.* is deprecated",
)


#: what many fits in one process (the reproductions) would print once per fit
REPEATED_RUN_WARNINGS = (
    "LightningCLI's args parameter",  # the reproductions pass args on purpose
    ".*does not have many workers.*",  # their data are in memory
)
LIGHTNING_LOGGERS = ("lightning.pytorch", "lightning.fabric", "lightning_fabric")


class _DropHarmless(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(message.startswith(line) for line in HARMLESS_LOG_LINES)


def silence_known_harmless() -> None:
    """Drop the lines above from Lightning's console handlers and the warnings filter."""
    for name in LIGHTNING_LOGGERS:
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, _DropHarmless) for f in handler.filters):
                handler.addFilter(_DropHarmless())
    for message in HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=message)


def quiet_for_repeated_runs() -> None:
    """Many fits in one process: no banner per fit (Lightning's info lines, the warnings
    above); errors and Lightning's warnings about a setting still show."""
    silence_known_harmless()
    for name in LIGHTNING_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for message in REPEATED_RUN_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
