"""CNNs without padding or pooling: each convolution shrinks the map by kernel_size - 1 pixels
(28 -> 24 -> 20 -> 16 -> 12 -> 8 for five 5x5 layers), and a linear layer reads the whole last map.

The design of the "M5" model of An et al. (2020, "An Ensemble of Simple Convolutional Neural
Network Models for MNIST Digit Recognition") at half its width; it keeps the spatial layout up to
the classifier, unlike `cnn` and `wide` with their global max pool, so it errs differently and is
meant as an ensemble member.
"""

from __future__ import annotations

from torch import nn

from digitnet.constants import IMAGE_SIZE, NUM_CLASSES
from digitnet.models._registry import record_model_args, register_model


@record_model_args
class ValidConvNet(nn.Module):
    """`widths` convolutions of `kernel_size` (no padding) + BN + ReLU, then flatten -> linear."""

    def __init__(self, widths: list[int], kernel_size: int, in_chans: int = 1,
                 num_classes: int = NUM_CLASSES):
        super().__init__()
        layers, width, side = [], in_chans, IMAGE_SIZE
        for out in widths:
            layers += [nn.Conv2d(width, out, kernel_size, bias=False), nn.BatchNorm2d(out),
                       nn.ReLU(inplace=True)]
            width, side = out, side - (kernel_size - 1)
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(width * side * side, num_classes))

    def forward(self, x):  # (B, 1, 28, 28) -> (B, 10) logits
        return self.head(self.features(x))


@register_model("nopool", 1, "five 5x5 convs + BN without padding or pooling (16, 32, 48, 64, 80), "
                "linear layer on the 8x8 map")
def nopool_v1(**kwargs):
    return ValidConvNet(**dict(widths=[16, 32, 48, 64, 80], kernel_size=5, **kwargs))
