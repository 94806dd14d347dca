"""A small modern CNN: 3x3 convolutions with batch norm, max pooling, and a small classifier
head."""

from __future__ import annotations

from torch import nn

from digitnet.constants import NUM_CLASSES
from digitnet.models._registry import record_model_args, register_model


def conv_bn(in_chans: int, out_chans: int) -> list[nn.Module]:
    return [nn.Conv2d(in_chans, out_chans, 3, padding=1, bias=False), nn.BatchNorm2d(out_chans),
            nn.ReLU(inplace=True)]


@record_model_args
class SmallCNN(nn.Module):
    """`stages` lists the conv widths of each stage; each stage ends in 2x2 max pooling."""

    def __init__(self, stages: list[list[int]], dropout: float = 0.0, in_chans: int = 1,
                 num_classes: int = NUM_CLASSES):
        super().__init__()
        layers: list[nn.Module] = []
        width = in_chans
        for stage in stages:
            for out in stage:
                layers += conv_bn(width, out)
                width = out
            layers.append(nn.MaxPool2d(2))  # 28 -> 14 -> 7 -> 3
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Dropout(dropout),
            nn.Linear(width, num_classes)
        )

    def forward(self, x):  # (B, 1, 28, 28) -> (B, 10) logits
        return self.head(self.features(x))


@register_model("cnn", 1, "3 stages of 3x3 conv + BN (32, 64, 128), max pooling, global max pool")
def cnn_v1(**kwargs):
    return SmallCNN(**dict(stages=[[32], [64], [128]], dropout=0.1, **kwargs))
