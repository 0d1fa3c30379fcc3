from datamodules.cifar10 import CIFAR10DataModule
from datamodules.mnist import MNISTDataModule

__all__ = ["CIFAR10DataModule", "MNISTDataModule"]
