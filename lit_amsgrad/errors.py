"""Bad input whose message is the whole story: ``train.py`` prints it as one line, no traceback."""

from __future__ import annotations

import re


class ConfigError(ValueError):
    """A value that is not allowed; the message names it and what is allowed."""


_NOISE = (
    "Does not validate against",
    "Subtypes:",
    "Errors:",
    "- Expected a <class 'NoneType'>",
    "Given value",
    "Problem with given class_path",
    "tip:",
)


def condense_parse_error(message: str) -> str:
    """One line from jsonargparse's nested report: the key and the innermost reason."""
    key = re.search(r'Parser key "([^"]+)"', message)
    reasons = [
        line.strip().lstrip("- ").strip()
        for line in message.splitlines()
        if line.strip() and not line.lstrip().startswith(_NOISE) and "Parser key" not in line
    ]
    reason = reasons[-1] if reasons else message.strip().splitlines()[-1]
    for line in reasons:  # prefer the most specific, deepest line
        if "not accepted" in line or "must be" in line or "no attribute" in line:
            reason = line
            break
    # jsonargparse's wrapping of a class_path's error: the type, the value it got
    reason = re.sub(r"^Type .*? expects a function or a callable class: ", "", reason)
    reason = re.sub(r"\s*Got value: Namespace\(.*$", "", reason)
    return f"{key.group(1)}: {reason}" if key else reason
