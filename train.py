"""Train, validate or test any task with any optimizer: ``python train.py fit --config NAME.yaml``.

A bare config name resolves to ``configs/``; every LightningCLI subcommand and flag works
(``--print_config``, ``--trainer.devices=2 --trainer.strategy=ddp``, ``--ckpt_path``).
"""

from lit_amsgrad import early_sigterm

early_sigterm.install()  # before the heavy imports: a preemption there exits with one line

from lit_amsgrad.cli import main  # noqa: E402

if __name__ == "__main__":
    main()
