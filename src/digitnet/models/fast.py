"""CNNs for the CPU benchmarks (BENCHMARKS.md): `fast`, whose strided stem halves the 28x28 input
at once, so no layer runs at full resolution, where batch norm, ReLU and pooling cost more than
the convolution; and `wide`, cnn-v1 with two convolutions at 14x14 and 7x7, for best accuracy.

`fast-v2` goes further for the 30-second recipe (configs/fast.yaml): narrower (16, 32, 64), and
each stage pools right after its convolution, so batch norm and ReLU run on a quarter of the
pixels (max pooling commutes with ReLU; with batch norm it makes a different, equally trainable
network), and a small MLP head reads the whole 3x3 map instead of a global pool (the hidden layer
adds 2% to the FLOPs and about 0.1 points of accuracy after 6 epochs). `wide-v2` is the same
design without the stem, wider (32, 64, 128 from 28x28 on), for longer runs: 15.5 MFLOPs per image
against 43.8 for `wide-v1`.
"""

from __future__ import annotations

from torch import nn

from digitnet.constants import IMAGE_SIZE, NUM_CLASSES
from digitnet.models._registry import record_model_args, register_model
from digitnet.models.cnn import SmallCNN


def conv_bn(in_chans: int, out_chans: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(in_chans, out_chans, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_chans), nn.ReLU(inplace=True)]


@record_model_args
class StridedCNN(nn.Module):
    """A stride-`stem_stride` 3x3 stem, then stages of 3x3 conv + BN each ending in 2x2 max
    pooling, then a global max pool and a linear classifier."""

    def __init__(self, stem_width: int, stages: list[list[int]], stem_stride: int = 2,
                 dropout: float = 0.0, in_chans: int = 1, num_classes: int = NUM_CLASSES):
        super().__init__()
        layers = conv_bn(in_chans, stem_width, stem_stride)  # (B, stem_width, 14, 14) for stride 2
        width = stem_width
        for stage in stages:
            for out in stage:
                layers += conv_bn(width, out)
                width = out
            layers.append(nn.MaxPool2d(2))  # 14 -> 7 -> 3
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Dropout(dropout),
            nn.Linear(width, num_classes)
        )

    def forward(self, x):  # (B, 1, 28, 28) -> (B, 10) logits
        return self.head(self.features(x))


@record_model_args
class PoolFirstCNN(nn.Module):
    """An optional stride-2 3x3 conv + BN stem (`stem_width`; None = no stem), then stages of
    3x3 conv -> 2x2 max pool -> BN -> ReLU, then an MLP (one hidden layer) on the flattened
    feature map (64 x 3 x 3 for fast-v2, 128 x 3 x 3 for wide-v2)."""

    def __init__(self, stem_width: int | None, widths: list[int], hidden: int, in_chans: int = 1,
                 num_classes: int = NUM_CLASSES):
        super().__init__()
        layers, width, side = [], in_chans, IMAGE_SIZE
        if stem_width is not None:
            layers, width = conv_bn(in_chans, stem_width, stride=2), stem_width
            side = (IMAGE_SIZE - 1) // 2 + 1  # 28 -> 14 after the stride-2 stem
        for out in widths:
            layers += [nn.Conv2d(width, out, 3, padding=1, bias=False), nn.MaxPool2d(2),
                       nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            width, side = out, side // 2  # 28 -> 14 -> 7 -> 3
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(width * side * side, hidden),
                                  nn.ReLU(inplace=True), nn.Linear(hidden, num_classes))

    def forward(self, x):  # (B, 1, 28, 28) -> (B, 10) logits
        return self.head(self.features(x))


@register_model("fast", 1, "CPU-fast: stride-2 3x3 conv stem (32), 3x3 conv + BN (64, 128) with "
                "max pooling, global max pool")
def fast_v1(**kwargs):
    return StridedCNN(**dict(stem_width=32, stages=[[64], [128]], stem_stride=2, dropout=0.0,
                             **kwargs))


@register_model("fast", 2, "CPU-fastest: stride-2 3x3 conv stem (16), 3x3 conv (32, 64) each "
                "followed by max pooling then BN, MLP head (128) on the 3x3 map")
def fast_v2(**kwargs):
    return PoolFirstCNN(**dict(stem_width=16, widths=[32, 64], hidden=128, **kwargs))


@register_model("wide", 1, "3x3 conv + BN (32; 64, 64; 128, 128), max pooling, global max pool")
def wide_v1(**kwargs):
    return SmallCNN(**dict(stages=[[32], [64, 64], [128, 128]], dropout=0.1, **kwargs))


@register_model("wide", 2, "3x3 conv (32, 64, 128) at 28, 14 and 7 px, each followed by max "
                "pooling then BN, MLP head (256) on the 3x3 map")
def wide_v2(**kwargs):
    return PoolFirstCNN(**dict(stem_width=None, widths=[32, 64, 128], hidden=256, **kwargs))
