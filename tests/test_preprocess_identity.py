"""Speed changes to the new-image pipeline change no output: two renderings of every kind
(benchmarks/renderings.py, validation digits) must give, bit for bit, the 28x28 image, digit_found,
reason, path and polarity pinned in tests/data/preprocess_pins.json (first written by the code
before the speed work, PREPROCESS_VERSION 2; rewritten for version 3, whose polarity rules for
frame-filling scans and shadowed photos changed some outputs on purpose); and the faster
formulations in imageops (block pooling, dilation, statistics of 8-bit images from counts) must
give numpy's and scipy's results bit for bit. The full comparison, on 1,381 inputs against
another tree, is benchmarks/preprocess_identity.py.

A change that means to alter outputs bumps PREPROCESS_VERSION and rewrites the pins:
    PYTHONPATH=src python tests/test_preprocess_identity.py --pin

PREPROCESS_VERSION 3 (the photo path's detect then refine, and its polarity test: issue 14)
rewrote the pins of the 9 inputs whose outputs changed, all on the photo path: photo-euro-one/773,
photo-grid/15872 and /50629, photo-marker/31354, photo-ruled/38276, photo-showthrough/50629 and
/773, photo-small-in-large/15872 and /50629. The other 12 photo-path inputs and all 21 scans,
drawings and MNIST PNGs kept the pins of version 2 bit for bit.

PREPROCESS_VERSION 4 (a faint digit beside darker marks is looked for below the page's threshold,
`ink.FAINT_SNR`) changed none of the 42 pinned outputs; on the validation renderings it changed
photo-small-in-large only (benchmarks/real_world_cache.py, 40 digits per class).
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



def _same(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def test_pooling_and_dilation_are_numpys_and_scipys_bit_for_bit():
    from scipy import ndimage

    from digitnet.data.imageops import block_reduce, max_filter

    rng = np.random.default_rng(7)
    for trial in range(400):
        h, w, factor = (int(v) for v in rng.integers(1, [60, 60, 20]))
        mask = rng.random((h, w)) < rng.random()
        x = (rng.random((h, w), dtype=np.float32) * np.float32(rng.choice([1, 1e-3, 1e4])))
        x[rng.random((h, w)) < rng.random()] = 0
        if trial % 2:
            x[rng.random((h, w)) < rng.random()] = -0.0
        for reduce, a, mode in ((np.max, mask, "constant"), (np.min, mask, "edge"),
                                (np.sum, x, "constant"), (np.sum, x.astype(np.float64), "edge"),
                                (np.min, x, "edge"), (np.max, x, "constant")):
            padded = np.pad(a, [(0, -h % factor), (0, -w % factor)], mode=mode)
            blocks = padded.reshape(padded.shape[0] // factor, factor, -1, factor)
            expected = reduce(blocks, axis=(1, 3)) if factor > 1 else a
            assert _same(block_reduce(a, factor, reduce, pad_mode=mode), expected), (
                reduce.__name__, a.dtype, h, w, factor)
        size = int(rng.choice([3, 5, 7, 9]))
        assert _same(max_filter(mask, size), ndimage.maximum_filter(mask, size, mode="nearest"))


def test_counted_statistics_are_numpys_bit_for_bit():
    from digitnet.data.imagestats import BYTE_LEVELS, Counted, byte_codes, robust_stats

    rng = np.random.default_rng(11)
    for _ in range(400):
        n = int(rng.choice([1, 2, 3, 4, 7, 10, 99, 100, 256, 1000, 4097, 30001]))
        levels = rng.choice(256, int(rng.integers(1, 257)), replace=False)
        p = rng.random(len(levels)) ** rng.choice([1, 5, 20])
        x = BYTE_LEVELS[rng.choice(levels, n, p=p / p.sum())]
        counted = Counted.of_codes(byte_codes(x))
        assert _same(counted.median(), np.median(x))
        median = float(np.median(x))
        assert _same(counted.deviations(median).median(), np.median(np.abs(x - median)))
        assert robust_stats(counted) == robust_stats(x)
        q = [1, 99, float(rng.random() * 100), 0, 100]
        assert _same(counted.percentile(q), np.percentile(x, q))
        low = float(x.min()) if rng.random() < 0.5 else float(rng.random() * x.max())
        if x.max() > low:
            hist, edges = np.histogram(x, bins=256, range=(low, float(x.max())))
            ours = counted.histogram(256, (low, float(x.max())))
            assert _same(ours[0], hist) and _same(ours[1], edges)
    assert byte_codes(rng.random((40, 40), dtype=np.float32)) is None
    assert byte_codes(BYTE_LEVELS[:10] + np.float32(1e-7)) is None

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
