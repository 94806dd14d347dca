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


if __name__ == "__main__":  # record newly registered versions; existing records never change
    records = json.loads(FROZEN.read_text())
    records.update({a: _definition(a) for a in ARCHS if a not in records})
    lines = ",\n".join(f" {json.dumps(a)}: {json.dumps(d, separators=(',', ':'))}"
                       for a, d in sorted(records.items()))
    FROZEN.write_text("{\n" + lines + "\n}\n")
    print(f"{FROZEN}: {len(records)} versions")
