"""Train, validate or test any task with any optimizer: ``python train.py fit --config NAME.yaml``.

A bare config name resolves to ``configs/``; every LightningCLI subcommand and flag works
(``--print_config``, ``--trainer.devices=2 --trainer.strategy=ddp``, ``--ckpt_path``).
``python train.py --help`` lists the shipped configs without importing Lightning.
"""

import sys

from lit_amsgrad import early_sigterm

early_sigterm.install()  # before the heavy imports: a preemption there exits with one line

if __name__ == "__main__" and sys.argv[1:] in ([], ["-h"], ["--help"]):
    from lit_amsgrad.usage import top_level_help

    print(top_level_help())
    sys.exit(0)

from lit_amsgrad.cli import main  # noqa: E402

if __name__ == "__main__":
    main()
