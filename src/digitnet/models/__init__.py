"""Model architectures. Importing this package registers every family file.

To add an architecture, or a new version of one, register a builder in a family file:

    @register_model("cnn", 2, "one-line description")
    def cnn_v2(**kwargs):
        return SmallCNN(**dict(stages=[[32, 32], [64, 64], [128]], dropout=0.1, **kwargs))

A new family is an `nn.Module` class decorated with `@record_model_args`, which records its
constructor's arguments as the `model_args` stored with every trained model, in a new family file
imported below.
"""

from digitnet.models import cnn, fast, lenet, mlp, nopool  # noqa: F401  (registers the models)
from digitnet.models._registry import (
    ModelSpec,
    count_flops,
    count_parameters,
    create_model,
    get_spec,
    list_specs,
    parse_arch,
    record_model_args,
    register_model,
)

DEFAULT_ARCH = "fast"

__all__ = [
    "DEFAULT_ARCH", "ModelSpec", "count_flops", "count_parameters", "create_model", "get_spec",
    "list_specs", "parse_arch", "record_model_args", "register_model",
]
