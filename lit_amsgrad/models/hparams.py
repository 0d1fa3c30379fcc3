"""Hyperparameters a checkpoint can hold as plain values.

Under LightningCLI ``save_hyperparameters`` records the config (class paths and init args).
In Python, ``ImageClassifier(optimizer=functools.partial(AMSGrad, lr=1e-2))`` would put the
``partial`` itself into the checkpoint, and torch >= 2.6 loads checkpoints with
``weights_only=True`` by default, which refuses it: ``Trainer.fit(ckpt_path=...)`` failed.
A factory is recorded as the ``class_path``/``init_args`` a config would write instead.
"""

from __future__ import annotations

import functools
from typing import Any

PLAIN = (str, int, float, bool, type(None))


def plain_value(value: Any) -> Any:
    """``value`` as str/number/bool/None, lists and dicts of those, or a class_path dict."""
    if isinstance(value, PLAIN):
        return value
    if isinstance(value, (list, tuple)):
        return [plain_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain_value(v) for k, v in value.items()}
    if isinstance(value, functools.partial):
        described = {"class_path": _dotted(value.func)}
        if value.args:
            described["args"] = plain_value(list(value.args))
        described["init_args"] = plain_value(dict(value.keywords))
        return described
    if callable(value):
        return {"class_path": _dotted(value)}
    return repr(value)


def _dotted(obj: Any) -> str:
    module = getattr(obj, "__module__", None) or "?"
    return f"{module}.{getattr(obj, '__qualname__', type(obj).__qualname__)}"
