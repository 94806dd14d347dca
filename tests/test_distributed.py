"""Distributed training (training/distributed.py): shards, seeds, the global batch, the restart
rule and the --nproc launcher in-process; and, marked slow, real torchrun runs on the CPU (gloo on
127.0.0.1, one thread per process): one step on 2 processes equals one step on 1, a 2-process run
of the default architecture, a rank killed with SIGKILL, and two torchrun agents as two nodes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from digitnet.cli import build_parser, main
from digitnet.config import TrainConfig
from digitnet.data.datasets import TensorDataset, iterate_batches
from digitnet.errors import DigitnetError
from digitnet.training import distributed
from digitnet.training.distributed import Processes
from digitnet.training.epoch import epoch_seed
from digitnet.training.loop import fit

CPU = torch.device("cpu")


def procs(rank: int, world_size: int) -> Processes:
    return Processes(rank, world_size, rank, "gloo" if world_size > 1 else None, CPU)


def indexed_dataset(n: int) -> TensorDataset:
    """Images whose labels are their own index, so a batch says which images it holds."""
    return TensorDataset("indexed", torch.zeros(n, 28, 28, dtype=torch.uint8), torch.arange(n))


# -------------------------------------------------------------------------------- in-process
@pytest.mark.parametrize("n, batch, world", [(300, 64, 2), (301, 64, 2), (300, 60, 3),
                                             (64, 64, 4)])
def test_shards_of_a_step_together_are_the_one_process_batch(n, batch, world):
    train, cfg = indexed_dataset(n), TrainConfig(batch_size=batch, seed=3)
    generator = torch.Generator().manual_seed(epoch_seed(cfg.seed, 2))
    single = [labels for _, labels in iterate_batches(train, batch, True, generator)]
    shards = [list(distributed.epoch_inputs(train, cfg, procs(r, world), 2)[1])
              for r in range(world)]
    assert len({len(s) for s in shards}) == 1 and len(shards[0]) == len(single)
    for step, labels in enumerate(single):
        together = torch.cat([shards[r][step][1] for r in range(world)])
        if step < len(single) - 1:
            assert sorted(together.tolist()) == sorted(labels.tolist())
        else:  # padded as DistributedSampler pads: fewer than `world` images from the start again
            assert 0 <= len(together) - len(labels) < world
            assert set(together.tolist()) - set(labels.tolist()) <= set(single[0].tolist())
        assert all(len(shards[r][step][1]) <= batch // world for r in range(world))


def test_every_epoch_a_new_permutation_and_per_rank_augmentation_seeds():
    train, cfg = indexed_dataset(100), TrainConfig(batch_size=10)
    first = [lab for _, lab in distributed.epoch_inputs(train, cfg, procs(0, 2), 1)[1]]
    second = [lab for _, lab in distributed.epoch_inputs(train, cfg, procs(0, 2), 2)[1]]
    assert not torch.equal(torch.cat(first), torch.cat(second))
    draws = [distributed.epoch_inputs(train, cfg, procs(r, 2), 1)[0].initial_seed()
             for r in (0, 1, 0)]
    assert draws[0] == draws[2] != draws[1]  # per rank, and the same on a rerun


def test_one_process_is_the_plain_path():
    cfg = TrainConfig(seed=5)
    generator, batches = distributed.epoch_inputs(indexed_dataset(10), cfg, procs(0, 1), 4)
    assert batches is None and generator.initial_seed() == epoch_seed(5, 4)
    model = torch.nn.Linear(2, 2)
    assert distributed.wrap_model(model, cfg, procs(0, 1)) is model
    assert distributed.share(procs(0, 1), {"a": 1}) == {"a": 1}
    row = dict(train_loss=1.0, train_acc=0.5, images=10, steps=1)
    assert distributed.reduce_epoch(row, procs(0, 1)) is row


@pytest.mark.parametrize("batch, world, message", [
    (65, 2, "--batch-size 65 is the global batch and must split evenly among the 2 processes; "
            "use a multiple of 2, e.g. 64 or 66"),
    (2, 3, "use a multiple of 3, e.g. 3")])
def test_a_batch_the_processes_cannot_split_is_refused(batch, world, message):
    with pytest.raises(DigitnetError, match=message):
        distributed.check_batch(batch, world)
    distributed.check_batch(batch * world, world)


def test_only_rank_0_writes():
    assert [procs(r, 3).writes for r in range(3)] == [True, False, False]


def test_sync_bn_on_the_cpu_with_several_processes_is_a_clear_error():
    with pytest.raises(DigitnetError, match="SyncBatchNorm runs on CUDA only"):
        distributed.use_sync_bn(TrainConfig(sync_bn=True), procs(0, 2))
    assert not distributed.use_sync_bn(TrainConfig(), procs(0, 2))
    assert not distributed.use_sync_bn(TrainConfig(sync_bn=True), procs(0, 1))
    cuda = Processes(0, 2, 0, "nccl", torch.device("cuda", 0))
    assert distributed.use_sync_bn(TrainConfig(), cuda)  # on by default on GPUs
    assert not distributed.use_sync_bn(TrainConfig(sync_bn=False), cuda)


def test_restarted_workers_continue_the_unfinished_run_of_their_torchrun(tmp_path,
                                                                         synthetic_mnist,
                                                                         monkeypatch):
    cfg = TrainConfig(arch="lenet5", epochs=1, batch_size=50, val_size=50, threads=1,
                      augment=False, lr=0.05)
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job-1")
    summary = fit(cfg, synthetic_mnist, tmp_path / "models", progress=False)
    run_dir = Path(summary["path"])
    config = json.loads((run_dir / "config.json").read_text())
    assert config["env"]["distributed"] == dict(world_size=1, backend=None, per_rank_batch=50,
                                                elastic_run_id="job-1")
    models = tmp_path / "models"
    assert distributed.restarted_run(models, cfg, "lenet5-v1") is None  # a first attempt
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    assert distributed.restarted_run(models, cfg, "lenet5-v1") is None  # finished
    (run_dir / "summary.json").unlink()
    assert distributed.restarted_run(models, cfg, "lenet5-v1") == summary["ref"]
    other = TrainConfig(**{**cfg.to_dict(), "data": ("mnist",), "seed": 1})
    assert distributed.restarted_run(models, other, "lenet5-v1") is None  # other options
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job-2")
    assert distributed.restarted_run(models, cfg, "lenet5-v1") is None  # another torchrun


def test_nproc_children_get_the_same_flags():
    argv = ["train", "--arch", "lenet5", "--epochs", "2", "--no-augment", "--data", "mnist",
            "--data", "extra", "--lr", "0.1", "--models-dir", "m", "--no-progress",
            "--dist-timeout", "30", "--nproc", "2"]
    from digitnet.cli.train import child_argv

    args = build_parser().parse_args(argv)
    again = build_parser().parse_args(child_argv(args))
    assert vars(again) == {**vars(args), "nproc": None}


@pytest.mark.parametrize("argv, env, message", [
    (["--nproc", "0"], {}, "--nproc must be at least 1, got 0"),
    (["--nproc", "2"], {"WORLD_SIZE": "2"}, "under torchrun, drop --nproc"),
    (["--dist-timeout", "0"], {}, "--dist-timeout must be a number of seconds > 0, got 0.0"),
    (["--nproc", "3", "--batch-size", "64"], {}, "--batch-size 64 is the global batch and must "
                                                 "split evenly among the 3 processes"),
])
def test_bad_launch_flags_are_one_line(argv, env, message, tmp_path, synthetic_mnist, capsys,
                                      monkeypatch):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    code = main(["train", "--epochs", "1", "--data-dir", str(synthetic_mnist), "--models-dir",
                 str(tmp_path / "models"), "--val-size", "50", *argv])
    err = capsys.readouterr().err
    assert code == 1 and message in err and "Traceback" not in err
    assert not (tmp_path / "models").exists()


# ------------------------------------------------------------------------- real processes
RECIPE = ["--val-size", "100", "--threads", "1", "--no-progress"]


def train_command(*args: str, nproc: int = 2, launcher: tuple[str, ...] = ("--standalone",),
                  ) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", *launcher,
            f"--nproc-per-node={nproc}", "-m", "digitnet", "train", *RECIPE, *args]


def environment(models: Path) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", DIGITNET_MODELS_DIR=str(models))
    env.setdefault("DIGITNET_DATA_DIR", str(Path(__file__).parents[2] / "shared" / "datasets"
                                            / "mnist"))
    return env


def train(models: Path, *args: str, timeout: float = 180, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(train_command(*args, **kwargs), env=environment(models), text=True,
                          capture_output=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def final_weights(run_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(run_dir / "model.safetensors"))


def only_run(models: Path) -> Path:
    runs = [p for p in models.glob("*/*") if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow  # ~15 s: one torchrun of 2 processes and one plain run
def test_one_step_on_two_processes_equals_one_step_on_one(tmp_path, mnist_dir):
    # lenet5: no batch norm and no dropout; augmentation off: the step's gradient is the mean
    # over the same 64 images either way (the two shards of 32 together are the batch of 64)
    recipe = dict(arch="lenet5", epochs=1, max_steps=1, batch_size=64, subset=300, val_size=100,
                  augment=False, threads=1, name="one")
    fit(TrainConfig(**recipe), mnist_dir, tmp_path / "one", progress=False)
    train(tmp_path / "two", "--arch", "lenet5", "--epochs", "1", "--max-steps", "1",
          "--batch-size", "64", "--subset", "300", "--no-augment", "--name", "two")
    one = final_weights(tmp_path / "one" / "lenet5-v1" / "one")
    two = final_weights(tmp_path / "two" / "lenet5-v1" / "two")
    torch.manual_seed(0)
    from digitnet.models import create_model

    initial = create_model("lenet5").state_dict()
    assert one.keys() == two.keys()
    for name in one:
        # float32 sums in another order: differences of ~1e-8 measured; 1e-6 allowed
        torch.testing.assert_close(two[name], one[name], rtol=1e-5, atol=1e-6)
        assert not torch.equal(one[name], initial[name])  # the step moved every tensor
    row = metrics(tmp_path / "two" / "lenet5-v1" / "two")[0]
    assert (row["world_size"], row["backend"], row["per_rank_batch"]) == (2, "gloo", 32)
    config = json.loads((tmp_path / "two" / "lenet5-v1" / "two" / "config.json").read_text())
    assert config["env"]["distributed"]["world_size"] == 2
    assert config["env"]["distributed"]["per_rank_batch"] == 32


# the default architecture (fast-v2) on 20,000 images, 3 epochs of batch 128 at lr 0.1, without
# augmentation: MNIST test accuracy measured 99.14 / 99.14 % (seed 0) and 99.07 / 99.11 % (seed 1)
# on 1 / 2 processes; at 2 epochs of 10,000 images at batch 512 runs differed by up to 7 points
AGREE = dict(epochs=3, subset=20_000, batch_size=128, lr=0.1, augment=False)


@pytest.mark.slow  # ~40 s: two runs of 60,000 images on one core each
def test_two_process_run_loads_everywhere_and_matches_one_process_accuracy(tmp_path, mnist_dir):
    one = fit(TrainConfig(**AGREE, val_size=1000, threads=1, name="one"), mnist_dir,
              tmp_path / "models", progress=False)
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in AGREE.items() if k != "augment"]
    done = train(tmp_path / "models", *flags, "--no-augment", "--val-size=1000", "--name=two",
                 "--json", str(tmp_path / "two.json"))
    two = json.loads((tmp_path / "two.json").read_text())
    assert done.stdout.strip().endswith("fast-v2/two") and two["ref"] == "fast-v2/two"
    assert abs(two["test_acc"] - one["test_acc"]) <= 0.003, (one["test_acc"], two["test_acc"])
    for ref in ("fast-v2/two", "fast-v2/two@epoch-2", "fast-v2/two@best"):  # (evaluate prints)
        assert main(["evaluate", ref, "--models-dir", str(tmp_path / "models"), "--data-dir",
                     str(mnist_dir)]) == 0
    digit = tmp_path / "digit.png"
    from PIL import Image

    from digitnet.data.mnist import load_mnist

    Image.fromarray(load_mnist(mnist_dir).test_images[0].numpy()).save(digit)
    assert main(["predict", "fast-v2/two@last", str(digit), "--models-dir",
                 str(tmp_path / "models")]) == 0


def rank_pid(agent: subprocess.Popen, rank: int) -> int | None:
    """The pid of the worker of global rank `rank` among the agent's children (Linux /proc)."""
    for task in Path(f"/proc/{agent.pid}/task").iterdir():
        for pid in (task / "children").read_text().split():
            try:
                env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"RANK={rank}".encode() in env:
                return int(pid)
    return None


def start_and_kill_rank_1(models: Path, *args: str, launcher=("--standalone",)):
    """Start a 2-process run, SIGKILL rank 1 once epoch 1's checkpoint exists; the agent."""
    agent = subprocess.Popen(train_command(*args, launcher=launcher), env=environment(models),
                             text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not list(models.glob("*/*/checkpoints/epoch-001")):
        assert agent.poll() is None and time.monotonic() < deadline, agent.communicate()[1]
        time.sleep(0.05)
    pid = rank_pid(agent, 1)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    return agent


# 4 epochs of 2000 images: ~1.5 s each, so that rank 1 dies in the middle of the run
KILLED = ("--arch", "fast", "--epochs", "4", "--subset", "2000", "--batch-size", "64",
          "--augment-kind", "shift")


@pytest.mark.slow  # ~30 s
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the ranks in /proc")
def test_a_killed_rank_ends_the_run_in_bounded_time_and_resume_finishes_it(tmp_path):
    models = tmp_path / "models"
    agent = start_and_kill_rank_1(models, *KILLED, "--name", "killed")
    start = time.monotonic()
    _, err = agent.communicate(timeout=60)  # bounded: the agent stops the other rank at once
    assert agent.returncode != 0 and time.monotonic() - start < 60
    run_dir = only_run(models)
    assert not (run_dir / "summary.json").exists()
    # --resume on another number of processes: one, the plain path
    done = subprocess.run([sys.executable, "-m", "digitnet", "train", "--resume",
                           "fast-v2/killed", "--no-progress"], env=environment(models),
                          text=True, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "resuming fast-v2/killed after epoch" in done.stdout
    assert [r["epoch"] for r in metrics(run_dir)] == [1, 2, 3, 4]
    assert {r["world_size"] for r in metrics(run_dir)} == {1, 2}
    assert (run_dir / "summary.json").exists()


@pytest.mark.slow  # ~30 s
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the ranks in /proc")
def test_max_restarts_continues_from_the_last_finished_epoch_by_itself(tmp_path):
    models = tmp_path / "models"
    agent = start_and_kill_rank_1(models, *KILLED, launcher=("--standalone", "--max-restarts=1"))
    out, err = agent.communicate(timeout=150)
    assert agent.returncode == 0, err[-3000:]
    run_dir = only_run(models)  # the same run, continued
    assert "resuming fast-v2/" in out and " after epoch " in out
    assert [r["epoch"] for r in metrics(run_dir)] == [1, 2, 3, 4]
    assert (run_dir / "summary.json").exists()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # ~20 s
def test_two_torchrun_agents_as_two_nodes_train_one_model(tmp_path):
    models = tmp_path / "models"
    launcher = ("--nnodes=2", "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{free_port()}",
                "--rdzv-id=two-nodes")
    args = ("--arch", "lenet5", "--epochs", "1", "--subset", "400", "--batch-size", "64",
            "--no-augment", "--name", "nodes")
    agents = [subprocess.Popen(train_command(*args, nproc=1, launcher=launcher),
                               env=environment(models), text=True, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE) for _ in range(2)]
    outputs = [a.communicate(timeout=150) for a in agents]
    assert [a.returncode for a in agents] == [0, 0], [o[1][-2000:] for o in outputs]
    run_dir = only_run(models)
    assert metrics(run_dir)[0]["world_size"] == 2 and (run_dir / "model.safetensors").is_file()
    assert sum("lenet5-v1/nodes" in out for out, _ in outputs) == 1  # rank 0 alone reports


@pytest.mark.slow  # ~15 s
def test_nproc_resumes_a_one_process_run_on_two(tmp_path, mnist_dir):
    models = tmp_path / "models"
    fit(TrainConfig(arch="lenet5", epochs=2, subset=400, batch_size=64, val_size=100,
                    augment=False, threads=1, lr=0.05, name="grow"), mnist_dir, models,
        progress=False)
    done = subprocess.run([sys.executable, "-m", "digitnet", "train", "--nproc", "2", "--resume",
                           "lenet5-v1/grow@epoch-1", "--no-progress"], env=environment(models),
                          text=True, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("lenet5-v1/grow\n") == 1  # rank 0 alone prints the reference
    rows = metrics(models / "lenet5-v1" / "grow")
    assert [(r["epoch"], r["world_size"]) for r in rows] == [(1, 1), (2, 2)]
