"""The paper's three networks (Section 5): logistic regression and a 100-unit MLP on MNIST, CIFARNET."""

from __future__ import annotations

from torch import nn

from lit_amsgrad.errors import ConfigError


def logistic_regression(in_features: int = 784, num_classes: int = 10) -> nn.Module:
    """Multiclass logistic regression: one linear layer on the flattened image."""
    return nn.Sequential(nn.Flatten(), nn.Linear(in_features, num_classes))


def mlp(in_features: int = 784, hidden: int = 100, num_classes: int = 10) -> nn.Module:
    """The paper's MNIST network: one hidden layer of 100 ReLU units."""
    return nn.Sequential(
        nn.Flatten(), nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
    )


class CIFARNet(nn.Module):
    """CIFARNET: the TensorFlow cifar10 tutorial network with 6x6 kernels, as the paper describes.

    Two conv layers of 64 channels (6x6, TF "SAME" padding), each followed by ReLU, 3x3 stride-2
    max-pooling and local response normalisation (TF's depth_radius=4, alpha=0.001/9, beta=0.75);
    then fully connected layers of 384 and 192 ReLU units with dropout 0.5 after each, and 10 outputs.
    """

    def __init__(self, num_classes: int = 10, dropout: float = 0.5) -> None:
        super().__init__()
        self.features = nn.Sequential(_conv_block(3, 64), _conv_block(64, 64))
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64 * 8 * 8, 384),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(384, 192),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(192, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


def _conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        # TF "SAME" for a 6x6 kernel pads 2 before and 3 after; padding="same" in torch would
        # copy the input for even kernels
        nn.ZeroPad2d((2, 3, 2, 3)),
        nn.Conv2d(in_channels, out_channels, kernel_size=6),
        nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        # torch divides alpha by size, TF does not: TF alpha=0.001/9 over 9 channels is 0.001 here
        nn.LocalResponseNorm(size=9, alpha=0.001, beta=0.75, k=1.0),
    )


NETWORKS = {"logreg": logistic_regression, "mlp": mlp, "cifarnet": CIFARNet}


def build_network(name: str) -> nn.Module:
    """The network called ``name`` (one of ``NETWORKS``)."""
    if name not in NETWORKS:
        raise ConfigError(f"net must be one of {sorted(NETWORKS)}, got {name!r}")
    return NETWORKS[name]()
