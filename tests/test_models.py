"""Every registered architecture builds, runs and trains; the registry refuses duplicates; a
registered version never changes (tests/data/architectures.json)."""

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from digitnet.errors import DigitnetError
from digitnet.models import (
    count_flops,
    count_parameters,
    create_model,
    get_spec,
    list_specs,
    register_model,
)
from digitnet.models._registry import parse_arch
from digitnet.store import architecture_signature

ARCHS = [s.arch_id for s in list_specs()]


def test_registry_has_baselines_and_default():
    names = {s.name for s in list_specs()}
    assert {"linear", "mlp", "lenet5", "cnn"} <= names


@pytest.mark.parametrize("arch", ARCHS)
def test_forward_shape_and_finite(arch):
    model = create_model(arch)
    logits = model(torch.randn(2, 1, 28, 28))
    assert logits.shape == (2, 10)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("arch", ARCHS)
def test_training_step_changes_weights(arch):
    torch.manual_seed(0)
    model = create_model(arch)
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = F.cross_entropy(model(torch.randn(4, 1, 28, 28)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    opt.step()
    assert all(not torch.equal(b, p) for b, p in zip(before, model.parameters()))  # every tensor


@pytest.mark.parametrize("arch", ARCHS)
def test_model_args_are_json_primitives(arch):
    import json

    model = create_model(arch)
    assert json.loads(json.dumps(model.model_args)) == model.model_args


@pytest.mark.parametrize("arch", ARCHS)
def test_parameter_and_flop_counts_are_exact(arch):
    from torch.utils.flop_counter import FlopCounterMode

    model = create_model(arch).eval()
    frozen = json.loads((Path(__file__).parent / "data" / "architectures.json").read_text())[arch]
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    expected = sum(math.prod(shape) for name, shape in frozen["signature"]
                   if not name.endswith(buffers))  # the weights the frozen signature lists
    assert count_parameters(model) == expected
    with FlopCounterMode(display=False) as counter, torch.no_grad():  # torch's own count
        model(torch.zeros(1, 1, 28, 28))
    assert count_flops(model) == counter.get_total_flops()
    assert count_flops(model, (4, 1, 28, 28)) == counter.get_total_flops()  # per image


def test_duplicate_registration_fails():
    with pytest.raises(ValueError, match="already registered"):
        register_model("cnn", 1, "again")(lambda **kw: None)


def test_unknown_architecture_lists_known():
    with pytest.raises(DigitnetError, match="registered: .*cnn"):
        create_model("resnet1000")
    with pytest.raises(DigitnetError, match="no version 99"):
        get_spec("cnn", 99)


@pytest.mark.parametrize(
    "arch, version, expected",
    [("cnn", None, ("cnn", None)), ("cnn-v2", None, ("cnn", 2)), ("cnn", 3, ("cnn", 3)),
     ("my-net", None, ("my-net", None)), ("lenet5-v1", 1, ("lenet5", 1))],
)
def test_parse_arch(arch, version, expected):
    assert parse_arch(arch, version) == expected


def test_newest_version_is_default():
    spec = get_spec("cnn")
    assert spec.version == max(s.version for s in list_specs("cnn-v*"))


FROZEN = Path(__file__).parent / "data" / "architectures.json"


def _definition(arch_id: str) -> dict:
    model = create_model(arch_id)
    return dict(model_args=model.model_args, signature=architecture_signature(model))


def test_registered_versions_stay_frozen():
    """Each version keeps the hyperparameters and parameter shapes it was first registered with,
    so models trained with it keep loading; changes need a new version (see the module docs)."""
    frozen = json.loads(FROZEN.read_text())
    for arch_id, definition in frozen.items():
        assert _definition(arch_id) == definition, (
            f"{arch_id} changed; restore it and register the change as a new version")
    missing = sorted(set(ARCHS) - set(frozen))
    assert not missing, f"record new versions {missing} with: python tests/test_models.py"


def test_model_args_are_the_constructor_arguments_with_defaults():
    """record_model_args records what the constructor was called with, bound to its signature
    with the defaults filled in, in the signature's order, tuples as new lists: model classes
    do not repeat their signature (issue 15)."""
    from torch import nn

    from digitnet.models import record_model_args

    @record_model_args
    class Toy(nn.Module):
        def __init__(self, widths: list[int], dropout: float = 0.0, in_chans: int = 1):
            super().__init__()
            self.widths = widths

    stages = [(8,), (16, 16)]
    toy = Toy(stages, in_chans=3)
    assert list(toy.model_args.items()) == [
        ("widths", [[8], [16, 16]]), ("dropout", 0.0), ("in_chans", 3)]
    stages.append((32,))
    assert toy.model_args["widths"] == [[8], [16, 16]]  # a copy, not the caller's list
    assert Toy(**toy.model_args).model_args == toy.model_args
    with pytest.raises(TypeError):
        Toy()  # the constructor's own error for a missing argument

    with pytest.raises(TypeError, match="takes \\*args or \\*\\*kwargs"):
        @record_model_args
        class Loose(nn.Module):
            def __init__(self, **kwargs):
                super().__init__()


@pytest.mark.parametrize("arch", ARCHS)
def test_model_args_rebuild_the_same_architecture(arch):
    """The recorded arguments, given back to the family's class, rebuild the same definition."""
    model = create_model(arch)
    again = type(model)(**model.model_args)
    assert again.model_args == model.model_args
    assert architecture_signature(again) == architecture_signature(model)


# ------------------------------------------------------------------- README promises (issue 18)
README = Path(__file__).resolve().parents[1] / "README.md"


def _readme_architectures() -> dict[str, str]:
    """The README's architecture table: arch id -> the rest of its row."""
    import re

    rows = re.findall(r"^\| `([\w-]+-v\d+)`[^|]*\|(.*)$", README.read_text(), flags=re.M)
    return {arch: rest for arch, rest in rows}


def test_readme_table_lists_every_architecture_with_its_parameter_count():
    table = _readme_architectures()
    assert sorted(table) == sorted(ARCHS)
    for arch, rest in table.items():
        params = int(rest.split("|")[0].strip().replace(",", ""))
        assert count_parameters(create_model(arch)) == params, arch


def test_readme_flop_figures():
    """3.8 MFLOPs fast-v2, 15.5 wide-v2, 69 nopool-v1 (README table), and fast-v2 needs "a
    quarter of cnn-v1" (README, Fast and accurate recipes)."""
    import re

    table = _readme_architectures()
    stated = {arch: float(m.group(1)) for arch, rest in table.items()
              if (m := re.search(r"([\d.]+) MFLOPs", rest))}
    assert stated == {"fast-v2": 3.8, "wide-v2": 15.5, "nopool-v1": 69.0}
    for arch, mflops in stated.items():
        digits = len(str(mflops).split(".")[1]) if mflops % 1 else 0
        assert round(count_flops(create_model(arch)) / 1e6, digits) == mflops, arch
    ratio = count_flops(create_model("fast-v2")) / count_flops(create_model("cnn-v1"))
    assert 0.22 <= ratio <= 0.28
    assert "3.8 MFLOPs per image, a quarter of `cnn-v1`" in " ".join(README.read_text().split())


def test_count_flops_by_hand():
    """Two FLOPs (a multiply and an add) per weight use: a 3x3 conv 1->2 on 28x28 (padding 1)
    and a linear layer 1568 -> 10 need 2*28*28*2*9 + 2*10*1568 FLOPs."""
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.Flatten(),
                                torch.nn.Linear(2 * 28 * 28, 10))
    assert count_flops(model) == 2 * 28 * 28 * 2 * 9 + 2 * 10 * 1568
    assert count_parameters(model) == 2 * 9 + 2 + 1568 * 10 + 10



def _trace(arch: str) -> list[tuple]:
    """(layer type, kernel, input side, output side, output channels) of every conv, pooling,
    batch norm and linear layer, in the order the forward pass runs them."""
    model = create_model(arch).eval()
    trace = []

    def hook(module, inputs, output):
        kind = type(module).__name__
        kernel = module.kernel_size[0] if isinstance(module, torch.nn.Conv2d) else None
        side_in = inputs[0].shape[-1] if inputs[0].ndim == 4 else None
        side_out = output.shape[-1] if output.ndim == 4 else None
        trace.append((kind, kernel, side_in, side_out, output.shape[1]))

    kinds = (torch.nn.Conv2d, torch.nn.BatchNorm2d, torch.nn.MaxPool2d, torch.nn.AdaptiveMaxPool2d,
             torch.nn.Linear)
    for m in model.modules():
        if isinstance(m, kinds):
            m.register_forward_hook(hook)
    with torch.no_grad():
        model(torch.zeros(1, 1, 28, 28))
    return trace


def test_architectures_are_what_the_readme_table_says():
    """The "what it is" column of the README's architecture table."""
    def convs(trace):
        return [(k, i, o, c) for kind, k, i, o, c in trace if kind == "Conv2d"]

    def kinds(trace):
        return [t[0] for t in trace]

    assert kinds(_trace("linear-v1")) == ["Linear"]
    assert [t[4] for t in _trace("mlp-v1")] == [256, 128, 10]  # two hidden layers
    cnn = _trace("cnn-v1")
    assert [(k, i, c) for k, i, o, c in convs(cnn)] == [(3, 28, 32), (3, 14, 64), (3, 7, 128)]
    assert "BatchNorm2d" in kinds(cnn) and "MaxPool2d" in kinds(cnn)
    assert kinds(cnn)[-2:] == ["AdaptiveMaxPool2d", "Linear"]  # global max pool
    for arch in ("fast-v1", "fast-v2"):  # stride-2 stem: no layer runs at 28x28
        trace = _trace(arch)
        assert convs(trace)[0][:3] == (3, 28, 14)
        assert all(t[3] is None or t[3] < 28 for t in trace), arch
    for arch, sides in (("fast-v2", [14, 7, 3]), ("wide-v2", [28, 14, 7])):
        trace = _trace(arch)
        stages = trace[2:] if arch == "fast-v2" else trace  # after fast-v2's conv + BN stem
        norms = [i for i, t in enumerate(stages) if t[0] == "BatchNorm2d"]
        assert norms and all(stages[i - 1][0] == "MaxPool2d" for i in norms), arch  # pool first
        assert [t[1] for t in convs(stages)] == sides[:len(convs(stages))]
        assert kinds(trace)[-2:] == ["Linear", "Linear"]  # MLP head
    assert [(k, i, c) for k, i, o, c in convs(_trace("wide-v2"))] == [
        (3, 28, 32), (3, 14, 64), (3, 7, 128)]
    assert [(k, i) for k, i, o, c in convs(_trace("wide-v1"))] == [
        (3, 28), (3, 14), (3, 14), (3, 7), (3, 7)]  # two 3x3 convs at 14x14 and at 7x7
    nopool = _trace("nopool-v1")
    assert [(k, i, o) for k, i, o, c in convs(nopool)] == [
        (5, 28, 24), (5, 24, 20), (5, 20, 16), (5, 16, 12), (5, 12, 8)]
    assert not any("Pool" in kind for kind in kinds(nopool))
    [linear] = [m for m in create_model("nopool-v1").modules() if isinstance(m, torch.nn.Linear)]
    assert (linear.in_features, linear.out_features) == (convs(nopool)[-1][3] * 8 * 8, 10)
    lenet = _trace("lenet5-v1")
    assert [(k, c) for k, i, o, c in convs(lenet)] == [(5, 6), (5, 16)]
    assert [t[4] for t in lenet if t[0] == "Linear"] == [120, 84, 10]


@pytest.mark.slow  # a subprocess that imports torch: about 5 s
def test_recording_a_new_version_only_adds(tmp_path):
    """`python tests/test_models.py` adds versions missing from architectures.json and never
    rewrites a recorded one."""
    import shutil
    import subprocess
    import sys

    (tmp_path / "data").mkdir()
    shutil.copy(Path(__file__), tmp_path / "test_models.py")
    records = json.loads(FROZEN.read_text())
    kept = dict(model_args={"edited": True}, signature=[])  # a record the script must not touch
    dropped = "lenet5-v1"
    changed = {**{k: v for k, v in records.items() if k != dropped}, "cnn-v1": kept}
    (tmp_path / "data" / "architectures.json").write_text(json.dumps(changed))
    src = Path(__file__).resolve().parents[1] / "src"
    subprocess.run([sys.executable, str(tmp_path / "test_models.py")], check=True,
                   capture_output=True, env={"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"})
    after = json.loads((tmp_path / "data" / "architectures.json").read_text())
    assert after["cnn-v1"] == kept
    assert after[dropped] == records[dropped] and set(after) == set(records)


if __name__ == "__main__":  # record newly registered versions; existing records never change
    records = json.loads(FROZEN.read_text())
    records.update({a: _definition(a) for a in ARCHS if a not in records})
    lines = ",\n".join(f" {json.dumps(a)}: {json.dumps(d, separators=(',', ':'))}"
                       for a, d in sorted(records.items()))
    FROZEN.write_text("{\n" + lines + "\n}\n")
    print(f"{FROZEN}: {len(records)} versions")
