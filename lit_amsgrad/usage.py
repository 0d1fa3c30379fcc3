"""What ``python train.py --help`` prints: what the tool is and the configs it ships.

LightningCLI's own top-level help says "Lightning Trainer command line tool", cuts the
subcommands' descriptions mid-sentence and needs Lightning imported (seconds). This one reads
the config folder only; ``train.py fit --help`` still gives LightningCLI's full option list.
"""

from __future__ import annotations

import re
from pathlib import Path

from lit_amsgrad.config_files import OPTIMIZER_DIR, TASK_DIR

SUBCOMMANDS = {
    "fit": "train into a new run folder runs/<config>/<time>/ (--ckpt_path last resumes)",
    "validate": "score a checkpoint on the validation split (--ckpt_path best|last|FILE)",
    "test": "score a checkpoint on the test split (--ckpt_path best|last|FILE)",
    "predict": "run a checkpoint's model on the predict data (--ckpt_path best|last|FILE)",
}


def describe_fragment(path: Path) -> str:
    """The fragment's first comment line up to its first clause: 'Task fragment: CIFARNET on
    CIFAR-10 (the paper's Fig. 2, right); no ...' gives 'CIFARNET on CIFAR-10 (...)'."""
    first = path.read_text().splitlines()[0].lstrip("# ").strip()
    first = re.sub(r"^(Task|Optimizer) fragment:\s*", "", first)
    return re.split(r";|: |\. (?=[A-Z])", first)[0].rstrip(".,")


def top_level_help() -> str:
    tasks = sorted(TASK_DIR.glob("*.yaml"))
    optimizers = sorted(OPTIMIZER_DIR.glob("*.yaml"))
    width = max(len(p.stem) for p in [*tasks, *optimizers]) + 2
    lines = [
        "usage: python train.py {fit,validate,test,predict} --config NAME.yaml [--key=value ...]",
        "",
        "Train the tasks of 'On the Convergence of Adam and Beyond' (Reddi, Kale, Kumar, ICLR",
        "2018) with Adam, AMSGrad, AdamNC, AdaShift and Generic Adam; the optimizer diagnostics",
        "(effective steps, the sign of Gamma_t, the growth of v_hat) go to W&B, offline without",
        "credentials.",
        "",
        "subcommands:",
        *(f"  {name:<10}{text}" for name, text in SUBCOMMANDS.items()),
        "",
        "configs: --config <task>_<optimizer>.yaml, e.g. synthetic_online_amsgrad.yaml",
        "  tasks:",
        *(f"    {p.stem:<{width}}{describe_fragment(p)}" for p in tasks),
        "  optimizers:",
        *(f"    {p.stem:<{width}}{describe_fragment(p)}" for p in optimizers),
        "  (also tasks/<task>.yaml, optimizers/<optimizer>.yaml, or a path to your own file)",
        "",
        "every option of a subcommand: python train.py fit --config NAME.yaml --help",
        "the optimizers, the diagnostics and the experiments: README.md",
    ]
    return "\n".join(lines)
