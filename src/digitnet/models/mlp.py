"""A multilayer perceptron on raw pixels: the baseline every CNN must beat."""

from __future__ import annotations

from torch import nn

from digitnet.constants import IMAGE_SIZE, NUM_CLASSES
from digitnet.models._registry import record_model_args, register_model


@record_model_args
class MLP(nn.Module):
    def __init__(self, hidden: list[int], dropout: float = 0.0, in_chans: int = 1,
                 num_classes: int = NUM_CLASSES):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_chans * IMAGE_SIZE * IMAGE_SIZE
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x):  # (B, 1, 28, 28) -> (B, 10) logits
        return self.net(x)


@register_model("linear", 1, "multinomial logistic regression on the 784 pixels")
def linear_v1(**kwargs):
    return MLP(**dict(hidden=[], dropout=0.0, **kwargs))


@register_model("mlp", 1, "two hidden layers (256, 128), ReLU, dropout 0.1")
def mlp_v1(**kwargs):
    return MLP(**dict(hidden=[256, 128], dropout=0.1, **kwargs))
