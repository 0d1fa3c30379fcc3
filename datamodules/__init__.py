from datamodules.cifar10 import CIFAR10DataModule
from datamodules.mnist import MNISTDataModule
from datamodules.synthetic import SyntheticConvexDataModule

__all__ = ["CIFAR10DataModule", "MNISTDataModule", "SyntheticConvexDataModule"]
