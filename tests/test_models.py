"""Every registered architecture builds, runs and trains; the registry refuses duplicates."""

import pytest
import torch
import torch.nn.functional as F

from digitnet.errors import DigitnetError
from digitnet.models import count_flops, count_parameters, create_model, get_spec, list_specs, register_model
from digitnet.models._registry import parse_arch

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
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))


@pytest.mark.parametrize("arch", ARCHS)
def test_model_args_are_json_primitives(arch):
    import json

    model = create_model(arch)
    assert json.loads(json.dumps(model.model_args)) == model.model_args
    assert count_parameters(model) > 0 and count_flops(model) > 0


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
