"""Training on several processes with PyTorch's own engine: torchrun starts them, and
DistributedDataParallel averages their gradients (gloo on the CPU, NCCL on CUDA).

One process (no torchrun, or a world of 1) is the plain path: no process group, no DDP. With
several, rank 0 is the only writer (`is_writer`): it holds the run folder and prints; the other
ranks train their shard and receive from rank 0 what they need (`share`). `--batch-size` is the
global batch: each of W processes takes batch / W images of its shard, drawn as
DistributedSampler draws them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data.distributed import DistributedSampler

from digitnet.config import DIST_TIMEOUT_S, TrainConfig
from digitnet.data.datasets import TensorDataset
from digitnet.errors import DigitnetError, first_line
from digitnet.store import list_runs, read_run_config, training_done
from digitnet.training.device import resolve_device
from digitnet.training.epoch import epoch_seed

RANK_STRIDE = 0x9E3779B97F4A7C15  # odd, 64-bit: separates the augmentation seeds of the ranks


def is_writer(rank: int) -> bool:
    """The one rule for who writes: rank 0 alone holds the run folder (config.json, metrics,
    checkpoints, weights, summary), draws progress bars and prints; the others only train."""
    return rank == 0


def environment_rank() -> int:
    """This process's global rank as torchrun set it ($RANK; 0 outside torchrun)."""
    return int(os.environ.get("RANK", "0"))


@dataclass(frozen=True)
class Processes:
    """The processes a run trains on, as seen from one of them."""

    rank: int  # global rank, 0 to world_size - 1
    world_size: int  # processes on all machines together
    local_rank: int  # rank on this machine (picks the GPU)
    backend: str | None  # "gloo" or "nccl"; None: one process, no process group
    device: torch.device

    @property
    def writes(self) -> bool:
        return is_writer(self.rank)

    def per_rank_batch(self, batch_size: int) -> int:
        return batch_size // self.world_size

    def record(self, batch_size: int) -> dict:
        """What config.json (env) and every metrics row record about the processes."""
        return dict(world_size=self.world_size, backend=self.backend,
                    per_rank_batch=self.per_rank_batch(batch_size))


@contextlib.contextmanager
def processes(device: str = "auto", timeout_s: float = DIST_TIMEOUT_S) -> Iterator[Processes]:
    """The processes of this run: one (the plain path), or those torchrun started ($WORLD_SIZE
    > 1), joined in a process group for the block and left after it.

    Raises:
        DigitnetError: a device several processes cannot share, or the others did not join
            within `timeout_s`.
    """
    if not (isinstance(timeout_s, (int, float)) and math.isfinite(timeout_s) and timeout_s > 0):
        raise DigitnetError(f"--dist-timeout must be a number of seconds > 0, got {timeout_s!r}")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1 and not dist.is_initialized():
        yield Processes(0, 1, 0, None, resolve_device(device))
        return
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    torch_device = _device_of_rank(device, local_rank)
    backend = "nccl" if torch_device.type == "cuda" else "gloo"
    own_group = not dist.is_initialized()  # a caller's own group is the caller's to end
    if own_group:
        if torch_device.type == "cuda":
            torch.cuda.set_device(torch_device)
        try:
            timeout = dt.timedelta(seconds=timeout_s)
            dist.init_process_group(backend, timeout=timeout, **_attempt_store(timeout))
        except (RuntimeError, ValueError) as e:
            raise DigitnetError(f"rank {os.environ.get('RANK', '?')}: cannot join the other "
                                f"processes ({first_line(e)})") from None
    try:
        yield Processes(dist.get_rank(), dist.get_world_size(), local_rank,
                        dist.get_backend(), torch_device)
    except (RuntimeError, dist.DistError) as e:  # a rank died, hung, or broke a collective
        raise DigitnetError(f"rank {dist.get_rank()} of {dist.get_world_size()}: the distributed "
                            f"run failed ({first_line(e)}); another rank died, hung for "
                            f"{timeout_s:g} s (--dist-timeout) or failed (see its error); "
                            f"continue with `digitnet train --resume REF`") from None
    else:  # every rank done before the group goes: a gloo rank whose peer has already left
        if own_group:  # can abort at teardown ("terminate called without an active exception")
            with contextlib.suppress(RuntimeError, dist.DistError):
                dist.barrier()
    finally:
        if own_group:
            with contextlib.suppress(RuntimeError, ValueError):
                dist.destroy_process_group()


def _attempt_store(timeout: dt.timedelta) -> dict:
    """Under torchrun's shared store ($TORCHELASTIC_USE_AGENT_STORE), the process group's keys
    under a prefix of this attempt: restarted workers would otherwise read the addresses of the
    workers they replace (pytorch/pytorch#135712) and fail to connect. {}: env:// as it is."""
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != str(True):
        return {}
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]),
                          is_master=False, timeout=timeout)
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return dict(store=dist.PrefixStore(f"digitnet/attempt-{attempt}", store),
                rank=int(os.environ["RANK"]), world_size=int(os.environ["WORLD_SIZE"]))


def _device_of_rank(name: str, local_rank: int) -> torch.device:
    device = resolve_device(name)
    if device.type == "mps":
        raise DigitnetError("several processes cannot train on Apple's MPS (no distributed "
                            "backend for it); use --device cpu")
    if device.type == "cuda":
        if device.index is not None:
            raise DigitnetError(f"--device {name}: with several processes each takes the GPU of "
                                f"its local rank; use --device cuda")
        if local_rank >= torch.cuda.device_count():
            raise DigitnetError(f"local rank {local_rank}: this machine has "
                                f"{torch.cuda.device_count()} CUDA device(s); start at most that "
                                f"many processes per machine")
        device = torch.device("cuda", local_rank)
    return device


def check_batch(batch_size: int, world_size: int) -> None:
    """Refuse a global batch that `world_size` processes cannot split evenly.

    Raises:
        DigitnetError: naming the batch, the number of processes and the nearest batches that fit.
    """
    w = world_size
    if batch_size % w:
        lower, upper = batch_size - batch_size % w, batch_size - batch_size % w + w
        fits = f"{lower} or {upper}" if lower else str(upper)
        raise DigitnetError(f"--batch-size {batch_size} is the global batch and must split evenly "
                            f"among the {w} processes; use a multiple of {w}, e.g. {fits}")


def share(procs: Processes, value=None):
    """Rank 0's `value` on every rank (pickled through the process group); the value itself
    when there is one process."""
    if procs.world_size == 1:
        return value
    box = [_on_cpu(value) if procs.writes else None]
    dist.broadcast_object_list(box, src=0, device=_collective_device(procs))
    return box[0]


def _on_cpu(value):
    """`value` with its tensors on the CPU (an optimizer state on cuda:0 would be unpickled onto
    cuda:0 on every rank)."""
    if isinstance(value, torch.Tensor):
        return value.cpu()
    if isinstance(value, dict):
        return {k: _on_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_on_cpu(v) for v in value)
    return value


def _collective_device(procs: Processes) -> torch.device:
    return procs.device if procs.backend == "nccl" else torch.device("cpu")


def wrap_model(model: nn.Module, cfg: TrainConfig, procs: Processes) -> nn.Module:
    """The module to train: `model` itself for one process, else `model` in
    DistributedDataParallel, its batch norms synchronised when `use_sync_bn`. Parameters stay
    the same objects, so the optimizer built on `model` keeps working."""
    if procs.world_size == 1:
        return model
    if use_sync_bn(cfg, procs):
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [procs.device] if procs.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def use_sync_bn(cfg: TrainConfig, procs: Processes) -> bool:
    """Batch norm over the global batch: on by default for several processes on CUDA; PyTorch's
    SyncBatchNorm runs on GPUs only, so on the CPU each process normalises its own batch.

    Raises:
        DigitnetError: `--sync-bn` asked for on the CPU with several processes.
    """
    if procs.world_size == 1:
        return False
    if procs.device.type != "cuda":
        if cfg.sync_bn:
            raise DigitnetError(f"--sync-bn: PyTorch's SyncBatchNorm runs on CUDA only, and this "
                                f"run trains on {procs.device}; use --no-sync-bn (each process "
                                f"normalises its own batch)")
        return False
    return cfg.sync_bn is not False


def epoch_inputs(train: TensorDataset, cfg: TrainConfig, procs: Processes, epoch: int,
                 ) -> tuple[torch.Generator, Iterator | None]:
    """The augmentation generator and the batches of `epoch` on this rank; seeds dropout too.

    One process: the plain path's generator (it shuffles and augments) and None (the default
    batches). Several: the permutation of DistributedSampler seeded by (seed, epoch), the same on
    every rank and the same as one process draws, padded to a multiple of the world size; rank r
    takes every W-th image from r, in batches of batch / W, so step k's batches of all ranks
    together are the batch of step k of one process. Augmentation and dropout are seeded by
    (seed, epoch, rank): different on every rank, the same on every rerun.
    """
    seed = epoch_seed(cfg.seed, epoch)
    if procs.world_size == 1:
        torch.manual_seed(seed)  # dropout
        return torch.Generator().manual_seed(seed), None
    rank_seed = (seed + procs.rank * RANK_STRIDE) % 2**64
    torch.manual_seed(rank_seed)  # dropout
    sampler = DistributedSampler(train, num_replicas=procs.world_size, rank=procs.rank,
                                 shuffle=True, seed=seed, drop_last=False)
    indices = torch.tensor(list(sampler), dtype=torch.int64)
    per_rank = procs.per_rank_batch(cfg.batch_size)
    batches = ((train.images[idx], train.labels[idx]) for idx in indices.split(per_rank))
    return torch.Generator().manual_seed(rank_seed), batches


def shard_size(n: int, procs: Processes) -> int:
    """Images of an n-image dataset that one rank trains on per epoch (padded as
    DistributedSampler pads)."""
    return -(-n // procs.world_size)


def reduce_epoch(row: dict, procs: Processes) -> dict:
    """An epoch's train_loss, train_acc and images over all ranks (steps: those of one rank)."""
    if procs.world_size == 1:
        return row
    images = row["images"]
    sums = torch.tensor([row["train_loss"] * images, row["train_acc"] * images, images],
                        dtype=torch.float64, device=_collective_device(procs))
    dist.all_reduce(sums)
    loss, correct, images = sums.tolist()
    return dict(row, train_loss=loss / max(images, 1), train_acc=correct / max(images, 1),
                images=round(images))


# ---------------------------------------------------------------------------------- restarts
def restarted_run(models_dir, cfg: TrainConfig, arch_id: str) -> str | None:
    """The run a worker restarted by torchrun (`--max-restarts K`) continues, else None.

    The rule: a restart ($TORCHELASTIC_RESTART_COUNT > 0) continues the newest unfinished run of
    the same architecture whose config.json records the same torchrun run id
    ($TORCHELASTIC_RUN_ID) and exactly the same training options, from its last checkpoint. A
    first attempt that was killed before it created its run folder has none, and starts afresh.
    """
    if int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) <= 0:
        return None
    run_id = os.environ.get("TORCHELASTIC_RUN_ID")
    options = json.loads(json.dumps(cfg.to_dict()))  # as config.json holds them
    for run_dir in reversed(list_runs(models_dir, arch_id)):
        try:
            config = read_run_config(run_dir)
        except DigitnetError:
            continue
        recorded = config.get("env", {}).get("distributed", {})
        if (run_id and recorded.get("elastic_run_id") == run_id
                and config.get("train") == options and not training_done(run_dir)):
            return config.get("ref") or f"{arch_id}/{run_dir.name}"
    return None


def elastic_record() -> dict:
    """torchrun's run id and restart count ({} outside torchrun), for config.json."""
    keys = dict(elastic_run_id="TORCHELASTIC_RUN_ID", restart_count="TORCHELASTIC_RESTART_COUNT")
    return {k: os.environ[v] for k, v in keys.items() if v in os.environ}


# ----------------------------------------------------------------------------------- launching
def launch_local(nproc: int, argv: list[str], max_restarts: int = 0) -> None:
    """Run `digitnet ARGV` in `nproc` processes on this machine through torchrun itself
    (torch.distributed.run, standalone rendezvous on localhost).

    Raises:
        DigitnetError: a process failed (its own error is printed above); names the ranks.
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    args = get_args_parser().parse_args(
        ["--standalone", f"--nproc-per-node={nproc}", f"--max-restarts={max_restarts}",
         "--module", "digitnet", *argv])
    try:
        run(args)
    except ChildFailedError as e:
        failed = ", ".join(f"rank {rank} (exit code {f.exitcode})"
                           for rank, f in sorted(e.failures.items()))
        raise DigitnetError(f"distributed training on {nproc} processes failed: {failed}; "
                            f"continue with `digitnet train --resume REF`") from None
