"""The baseline: the recipe of the official PyTorch MNIST example, re-implemented on our tensors.

    python benchmarks/baseline_mnist_example.py --data-dir ../shared/datasets/mnist --json out.json

Faithful to pytorch/examples mnist/main.py (read at commit 09654b8): the same `Net` (conv 1->32 and
32->64 3x3, max pool 2, dropout 0.25, fc 9216->128, dropout 0.5, fc 128->10, log_softmax + nll
loss), Adadelta lr 1.0, StepLR(step_size=1, gamma=0.7) stepped after each epoch, batch 64, test
batch 1000, 14 epochs, seed 1, Normalize((0.1307,), (0.3081,)), all 60,000 training images. On a
CPU the example's DataLoader does not shuffle (`shuffle=True` is only in its cuda_kwargs), so the
batches come in file order every epoch, here too. One difference: images come from in-memory
tensors instead of torchvision's PIL-based DataLoader, which only makes the baseline faster.

Prints one JSON line per epoch and writes them to --json: the epoch, the wall-clock time
(`time.time()`) when its training ended, the seconds spent evaluating so far (excluded from the
training clock by the caller), and the test loss and accuracy.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.lr_scheduler import StepLR

from digitnet.data.mnist import load_mnist

MEAN, STD = 0.1307, 0.3081


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.max_pool2d(x, 2)
        x = self.dropout1(x)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = self.dropout2(x)
        return F.log_softmax(self.fc2(x), dim=1)


def batches(images: torch.Tensor, labels: torch.Tensor, batch_size: int):
    """In order, like the example's DataLoader without shuffle; the last batch may be short."""
    for start in range(0, len(labels), batch_size):
        yield images[start:start + batch_size], labels[start:start + batch_size]


def train_one_epoch(model, images, labels, optimizer, batch_size: int) -> None:
    model.train()
    for x, y in batches(images, labels, batch_size):
        optimizer.zero_grad()
        loss = F.nll_loss(model(x), y)
        loss.backward()
        optimizer.step()


@torch.no_grad()
def evaluate(model, images, labels, batch_size: int) -> dict:
    model.eval()
    loss, correct = 0.0, 0
    for x, y in batches(images, labels, batch_size):
        out = model(x)
        loss += F.nll_loss(out, y, reduction="sum").item()
        correct += int((out.argmax(1) == y).sum())
    return dict(test_loss=loss / len(labels), test_acc=correct / len(labels))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="../shared/datasets/mnist")
    parser.add_argument("--epochs", type=int, default=14, help="(default: 14, as the example)")
    parser.add_argument("--seed", type=int, default=1, help="(default: 1, as the example)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's)")
    parser.add_argument("--json", default=None, help="write the per-epoch rows here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    mnist = load_mnist(args.data_dir)

    def normalise(u8):  # ToTensor then Normalize: (N, 1, 28, 28) float32
        return ((u8.float() / 255.0 - MEAN) / STD).unsqueeze(1)

    train_x, train_y = normalise(mnist.train_images), mnist.train_labels
    test_x, test_y = normalise(mnist.test_images), mnist.test_labels
    model = Net()
    optimizer = torch.optim.Adadelta(model.parameters(), lr=1.0)
    scheduler = StepLR(optimizer, step_size=1, gamma=0.7)
    rows, eval_seconds = [], 0.0
    for epoch in range(1, args.epochs + 1):
        train_one_epoch(model, train_x, train_y, optimizer, batch_size=64)
        trained_at = time.time()
        row = dict(epoch=epoch, time=trained_at, eval_seconds_before=eval_seconds,
                   **evaluate(model, test_x, test_y, batch_size=1000))
        eval_seconds += time.time() - trained_at
        scheduler.step()
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
