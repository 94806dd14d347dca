"""Does data parallelism across processes beat threads on this CPU? Training throughput of one
process with N threads against N processes of one thread each, joined by PyTorch's
DistributedDataParallel (gloo), on the same global batch.

    python benchmarks/cpu_data_parallel.py --arch fast --version 2 --batch-size 512 \
        --out benchmarks/results/cpu-data-parallel.json

Each step is a real training step of `digitnet train` (shift augmentation, channels-last,
bfloat16 autocast, SGD); images are random, which does not change the arithmetic. Each
configuration runs --repeats times in alternation; the median images/s is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from digitnet.constants import MNIST_MEAN, MNIST_STD
from digitnet.data.augment import shift_batch
from digitnet.data.datasets import to_model_input
from digitnet.models import create_model

WARMUP_STEPS = 5


def train_steps(rank: int, world: int, threads: int, args, port: int, result) -> None:
    """Time args.steps training steps on this process's share of each global batch."""
    torch.set_num_threads(threads)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                world_size=world)
    torch.manual_seed(0)
    model = create_model(args.arch, args.version).to(memory_format=torch.channels_last)
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    generator = torch.Generator().manual_seed(rank)
    share = args.batch_size // world
    images = torch.randint(0, 256, (share, 28, 28), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 10, (share,), generator=generator)

    def step() -> None:
        x = to_model_input(shift_batch(images, 1, generator), MNIST_MEAN, MNIST_STD)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(x.contiguous(memory_format=torch.channels_last)).float()
        loss = F.cross_entropy(logits, labels, label_smoothing=0.1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(WARMUP_STEPS):
        step()
    if world > 1:
        dist.barrier()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    if rank == 0:
        result.value = args.steps * args.batch_size / (time.perf_counter() - start)


def measure(world: int, threads: int, args, port: int) -> float:
    """Global images/s of one configuration, each process started fresh."""
    result = mp.get_context("spawn").Value("d", 0.0)
    if world == 1:
        train_steps(0, 1, threads, args, port, result)
    else:
        mp.start_processes(train_steps, args=(world, threads, args, port, result), nprocs=world,
                           start_method="spawn")
    return result.value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="fast")
    parser.add_argument("--version", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=512, help="global batch (default: 512)")
    parser.add_argument("--steps", type=int, default=40, help="timed steps per run (default: 40)")
    parser.add_argument("--cores", type=int, default=os.cpu_count(), help="N (default: all)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", required=True, help="JSON file for the results")
    args = parser.parse_args()

    configs = {f"1 process x {args.cores} threads": (1, args.cores),
               f"{args.cores} processes x 1 thread (DDP, gloo)": (args.cores, 1)}
    rates = {name: [] for name in configs}
    for repeat in range(args.repeats):
        for name, (world, threads) in configs.items():
            rates[name].append(measure(world, threads, args, 29_500 + repeat))
            print(f"{name:<40} {rates[name][-1]:>10,.0f} images/s", flush=True)
    rows = [dict(config=name, images_per_s=statistics.median(r), runs=r)
            for name, r in rates.items()]
    for row in rows:
        print(f"median  {row['config']:<40} {row['images_per_s']:>10,.0f} images/s")
    result = dict(command=" ".join(["python", *sys.argv]),
                  date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                  machine=f"{platform.machine()}, {os.cpu_count()} cores", torch=torch.__version__,
                  arch=f"{args.arch}-v{args.version}", batch_size=args.batch_size,
                  steps=args.steps, load_average=os.getloadavg(), rows=rows)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
