"""What `digitnet serve` answers: the model as clients see it (/health, /info), the demo page
(static/index.html) with its Content-Security-Policy, security headers on every response, and the
prediction for an uploaded image file.
"""

import base64
import hashlib
import html
import re
from importlib import resources
from pathlib import Path

from digitnet.data.preprocess import (
    PREPROCESS_VERSION,
    ImageError,
    ImageTooLargeError,
    check_image_size,
    encode_png,
)
from digitnet.deploy.predict import DEFAULT_TOP_K, predict_images
from digitnet.errors import DigitnetError
from digitnet.store import LoadedModel
from digitnet.store.run import read_summary
from digitnet.version import __version__

PAGE = "static/index.html"  # package data of digitnet.deploy


def public_label(loaded: LoadedModel) -> str:
    """The model's label as clients see it: a store reference (`cnn-v1/run@best`) or Hub
    reference as it is, but a model served by its path shows only its folder's name, never
    where it lies on this machine."""
    label = loaded.ref.label
    if Path(label).is_absolute() or label.startswith(("~", ".")) or "\\" in label:
        name, checkpoint = loaded.ref.run_dir.name, loaded.ref.checkpoint
        return name if checkpoint is None else f"{name}@{checkpoint}"
    return label


def model_info(loaded: LoadedModel, max_upload_bytes: int | None = None) -> dict:
    """What /health and /info say about the model (plain JSON values)."""
    from digitnet.models import count_parameters

    info = dict(model=public_label(loaded), arch=loaded.config["arch"]["id"],
                parameters=count_parameters(loaded.model))
    if max_upload_bytes is None:
        return info
    try:
        summary = read_summary(loaded.ref.run_dir) or {}
    except DigitnetError:
        summary = {}  # a damaged summary costs the page one number, not the server
    test_accuracy = summary.get("test_acc")
    data = loaded.data_config
    return dict(info, epochs=loaded.epoch, created=loaded.config.get("created"),
                test_accuracy=test_accuracy, input_size=data["input_size"], mean=data["mean"],
                std=data["std"], label_names=data["label_names"], max_upload_bytes=max_upload_bytes,
                preprocess_version=PREPROCESS_VERSION, digitnet_version=__version__,
                temperature=loaded.temperature, calibrated=loaded.calibration.calibrated)


def png_data_url(image) -> str:
    """A uint8 (H, W) image as a `data:image/png;base64,...` URL."""
    return "data:image/png;base64," + base64.b64encode(encode_png(image)).decode("ascii")


def render_page(loaded: LoadedModel, max_upload_bytes: int) -> str:
    """The demo page with the model's name and the upload limit filled in."""
    page = resources.files("digitnet.deploy").joinpath(PAGE).read_text(encoding="utf-8")
    return (page.replace("{{MODEL}}", html.escape(public_label(loaded)))
            .replace("{{MAX_UPLOAD_BYTES}}", str(max_upload_bytes)))


def page_policy(page: str) -> str:
    """A Content-Security-Policy for the demo page: nothing from elsewhere, its own inline script
    and style only (by hash), requests to this server only, no framing."""
    def hashes(tag: str) -> str:
        blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", page, flags=re.DOTALL)
        return " ".join("'sha256-" + base64.b64encode(hashlib.sha256(b.encode()).digest())
                        .decode("ascii") + "'" for b in blocks) or "'none'"

    return (f"default-src 'none'; script-src {hashes('script')}; style-src {hashes('style')}; "
            f"img-src 'self' data: blob:; connect-src 'self'; base-uri 'none'; "
            f"form-action 'none'; frame-ancestors 'none'")


def predict_upload(loaded: LoadedModel, content: bytes, name: str,
                   top_k: int = DEFAULT_TOP_K, max_pixels: int | None = None) -> dict:
    """Predict the digit in the bytes of an uploaded image file, as `digitnet predict` would.

    Returns:
        `file`, `label`, `probabilities`, `top_k`, `digit_found`, `reason` (see
        `predict_images`) and `image`: the 28x28 image the model saw as a PNG data URL, or None.

    Raises:
        ImageTooLargeError: the image has more than `max_pixels` pixels (default:
            preprocess.MAX_PIXELS), found from its header before decoding.
        DigitnetError: the bytes are not an image that can be read (the message starts with
            `name`).
    """
    try:
        check_image_size(content, max_pixels)  # the header only: a bomb is refused undecoded
    except ImageTooLargeError as e:
        raise ImageTooLargeError(f"{name}: {str(e).partition(': ')[2]}") from None
    except ImageError:
        pass  # predict_images says what is wrong with the file, the same way for every caller
    [entry] = predict_images(loaded, [content], top_k, names=[name], with_images=True,
                             max_pixels=max_pixels)
    if entry["error"]:
        reason = entry["error"].partition(": ")[2]  # preprocess names the source "<N bytes>"
        raise DigitnetError(f"{name}: {reason}")
    image = entry.pop("image")
    entry.pop("error")
    return dict(entry, image=None if image is None else png_data_url(image))


class SecurityHeaders:
    """ASGI middleware adding `X-Content-Type-Options: nosniff` to every response, and a
    Content-Security-Policy that allows nothing to those that do not set their own (the page
    sets one that allows itself)."""

    POLICY = "default-src 'none'; frame-ancestors 'none'"

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def secured_send(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                headers.append((b"x-content-type-options", b"nosniff"))
                if b"content-security-policy" not in names:
                    headers.append((b"content-security-policy", self.POLICY.encode()))
                message = dict(message, headers=headers)
            await send(message)

        await self.app(scope, receive, secured_send)
