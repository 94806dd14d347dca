"""Speed changes to the new-image pipeline change no output: two renderings of every kind
(benchmarks/renderings.py, validation digits) must give, bit for bit, the 28x28 image, digit_found,
reason, path and polarity pinned in tests/data/preprocess_pins.json, which the code before the
speed work wrote (PREPROCESS_VERSION 2). The full comparison, on 1,381 inputs against another
tree, is benchmarks/preprocess_identity.py.

A change that means to alter outputs bumps PREPROCESS_VERSION and rewrites the pins:
    PYTHONPATH=src python tests/test_preprocess_identity.py --pin
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from digitnet.data.preprocess import PREPROCESS_VERSION, preprocess

PINS = Path(__file__).resolve().parent / "data" / "preprocess_pins.json"
PER_RENDERING = 2


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _inputs(R, mnist_dir):
    """(key, PNG or JPEG bytes) for PER_RENDERING validation digits of every rendering."""
    images, _, index = R.pick_digits("val", 1, 0, str(mnist_dir))
    for name in [*R.RENDERINGS, R.EURO_ONE.name]:
        for k in range(PER_RENDERING):
            i = (3 * k + len(name)) % len(images)  # different classes for different renderings
            data, _, _ = R.render_one(name, images[i], int(index[i]))
            yield f"{name}/{int(index[i])}", data


def _output(data: bytes) -> dict:
    result = preprocess(data)
    fields = [result.image.tobytes(), str(result.image.shape).encode(), str(result.image.dtype)
              .encode(), str(result.digit_found).encode(), result.reason.encode(),
              result.path.encode(), result.polarity.encode()]
    return dict(output=_digest(b"\0".join(fields)), path=result.path, found=result.digit_found)


def test_outputs_are_the_pinned_ones(mnist_dir):
    from test_renderings import R

    pins = json.loads(PINS.read_text())
    assert pins["preprocess_version"] == PREPROCESS_VERSION, (
        "PREPROCESS_VERSION changed: rewrite the pins (see this module's docstring)")
    seen = 0
    for key, data in _inputs(R, mnist_dir):
        pin = pins["inputs"][key]
        if _digest(data) != pin["input"]:
            pytest.fail(f"{key}: the rendering itself changed (benchmarks/renderings.py); "
                        f"rewrite the pins with the pipeline's code before any change to it")
        assert _output(data) == {k: pin[k] for k in ("output", "path", "found")}, key
        seen += 1
    assert seen == len(pins["inputs"])


def _pin(mnist_dir: str) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import renderings as R

    inputs = {key: dict(input=_digest(data), **_output(data))
              for key, data in _inputs(R, mnist_dir)}
    PINS.write_text(json.dumps(dict(preprocess_version=PREPROCESS_VERSION, inputs=inputs),
                               indent=1, sort_keys=True) + "\n")
    print(f"{len(inputs)} pins written to {PINS} with numpy {np.__version__}")


if __name__ == "__main__":
    if sys.argv[1:] != ["--pin"]:
        raise SystemExit(__doc__)
    import os

    _pin(os.environ.get("DIGITNET_DATA_DIR") or "../shared/datasets/mnist")
