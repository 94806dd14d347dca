"""LeNet-5 (LeCun et al., 1998), with max pooling and ReLU as it is usually trained today."""

from __future__ import annotations

from torch import nn

from digitnet.constants import NUM_CLASSES
from digitnet.models._registry import record_model_args, register_model


@record_model_args
class LeNet5(nn.Module):
    def __init__(self, activation: str = "relu", in_chans: int = 1, num_classes: int = NUM_CLASSES):
        super().__init__()
        act = {"relu": nn.ReLU, "tanh": nn.Tanh}[activation]
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, 6, 5, padding=2), act(), nn.MaxPool2d(2),  # (B, 6, 14, 14)
            nn.Conv2d(6, 16, 5), act(), nn.MaxPool2d(2),  # (B, 16, 5, 5)
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(16 * 5 * 5, 120), act(), nn.Linear(120, 84), act(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x):  # (B, 1, 28, 28) -> (B, 10) logits
        return self.classifier(self.features(x))


@register_model("lenet5", 1, "LeNet-5: conv 6 and 16 (5x5), fc 120 and 84, ReLU, max pooling")
def lenet5_v1(**kwargs):
    return LeNet5(**dict(activation="relu", **kwargs))
