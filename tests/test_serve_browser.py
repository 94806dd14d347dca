"""The `digitnet serve` demo page in a real browser: headless Chromium, driven by Playwright,
against a real `digitnet serve --port 0` subprocess. Drawing with the mouse predicts when the pen
lifts, with the same answer as the JSON API for the same canvas; Clear, Predict on an empty pad,
uploads (a digit, and a text file named .png) and that the page asks nothing of any other host.

The browser is the system Chromium (Debian package `chromium`; DIGITNET_CHROMIUM names another
executable), never one downloaded by `playwright install`. The module is skipped when the
playwright package or a Chromium executable is missing."""

from __future__ import annotations

import base64
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal

import pytest

from conftest import digitnet_server, post_image, seven_png

pytest.importorskip("fastapi", reason="digitnet serve needs pip install 'digitnet[serve]'")
pytest.importorskip("playwright.sync_api", reason="the browser tests need the playwright "
                    "package: pip install -c constraints.txt -e '.[dev]'")
from playwright.sync_api import Page, expect, sync_playwright  # after the skips

pytestmark = pytest.mark.slow


def find_chromium() -> tuple[str | None, str]:
    """The Chromium to launch and, when there is none, why: $DIGITNET_CHROMIUM if set, else
    chromium (or chromium-browser) on PATH, else /usr/bin/chromium."""
    def executable(path: str | None) -> bool:
        return bool(path) and os.path.isfile(path) and os.access(path, os.X_OK)

    named = os.environ.get("DIGITNET_CHROMIUM")
    if named:
        return (named, "") if executable(named) else (
            None, f"DIGITNET_CHROMIUM={named} is not an executable file")
    for path in (shutil.which("chromium"), shutil.which("chromium-browser"), "/usr/bin/chromium"):
        if executable(path):
            return path, ""
    return None, ("no Chromium executable (chromium on PATH, /usr/bin/chromium or "
                  "$DIGITNET_CHROMIUM): install the system package, e.g. apt-get install chromium")


CHROMIUM, NO_CHROMIUM = find_chromium()
if CHROMIUM is None:
    pytest.skip(NO_CHROMIUM, allow_module_level=True)

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
TIMEOUT_MS = 20_000  # a 2-core CI machine; every wait ends as soon as its condition holds
SEVEN = [(70, 60), (210, 60), (190, 110), (160, 170), (135, 230)]  # one stroke, pad pixels
DASH = "\u2013"  # the label before any answer
PAGE_WIDE: dict[str, list[str]] = {"urls": [], "errors": []}  # over all the module's pages

expect.set_options(timeout=TIMEOUT_MS)


@pytest.fixture(scope="module")
def server(serve_model) -> Iterator[str]:
    """The URL of a real `digitnet serve` of the tiny model, stopped after the module."""
    with digitnet_server(serve_model["models"]) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@dataclass
class Demo:
    page: Page
    url: str
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, url), this page's

    def draw(self, points) -> None:
        """One stroke through `points` (pad pixels) with the mouse; the pen lifts at the end."""
        box = self.page.locator("#pad").bounding_box()
        mouse = self.page.mouse
        mouse.move(box["x"] + points[0][0], box["y"] + points[0][1])
        mouse.down()
        for x, y in points[1:]:
            mouse.move(box["x"] + x, box["y"] + y, steps=12)
        mouse.up()

    def upload(self, name: str, content: bytes) -> None:
        self.page.set_input_files("#file", files=[
            dict(name=name, mimeType="image/png", buffer=content)])

    def pad_png(self) -> bytes:
        url = self.page.evaluate("() => document.getElementById('pad').toDataURL('image/png')")
        prefix = "data:image/png;base64,"
        assert url.startswith(prefix)
        return base64.b64decode(url[len(prefix):])

    def posts(self) -> list[str]:
        return [url for method, url in self.requests if method == "POST"]


@pytest.fixture
def demo(browser, server) -> Iterator[Demo]:
    """The demo page, loaded (its /info answer shown), in a fresh browser context."""
    context = browser.new_context(viewport=dict(width=1000, height=720))
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    demo = Demo(page, server)

    def on_request(request):
        demo.requests.append((request.method, request.url))
        PAGE_WIDE["urls"].append(request.url)

    page.on("request", on_request)
    page.on("pageerror", lambda error: PAGE_WIDE["errors"].append(str(error)))
    page.goto(server)
    expect(page.locator("#details")).to_contain_text("parameters")
    yield demo
    context.close()


def percent(p: float) -> str:
    """`(100 * p).toFixed(1) + "%"` as the page writes it (ties away from zero, as toFixed)."""
    return f"{Decimal(100 * p).quantize(Decimal('0.1'), ROUND_HALF_UP)}%"


def expect_answer_like_the_api(demo: Demo, expected: dict) -> None:
    """The page shows the API's answer: label, ten bars, the 28x28 image, the top-2 message."""
    page = demo.page
    bars = page.locator("#bars .bar")
    expect(bars).to_have_count(10)
    expect(page.locator("#label")).to_have_text(str(expected["label"]))
    expect(page.locator("#bars .bar.best")).to_have_count(1)
    assert bars.nth(expected["label"]).get_attribute("class") == "bar best"
    expect(page.locator("#bars .pct")).to_have_text([percent(p) for p in expected["probabilities"]])
    assert page.get_attribute("#seen", "src") == expected["image"]
    assert expected["image"].startswith("data:image/png;base64,")
    best, second = expected["top_k"][:2]
    expect(page.locator("#message")).to_have_text(
        f"{best[0]} with {percent(best[1])}, then {second[0]} with {percent(second[1])}")


# ------------------------------------------------------------------------------------- drawing
def test_drawing_is_predicted_when_the_pen_lifts_as_the_api_does(demo, tmp_path):
    demo.draw(SEVEN)
    expect(demo.page.locator("#bars .bar")).to_have_count(10)
    status, expected = post_image(demo.url, demo.pad_png(), "drawing.png")
    assert status == 200 and expected["digit_found"], expected
    expect_answer_like_the_api(demo, expected)
    assert demo.posts() == [demo.url + "predict"]  # one request, when the pen lifted
    shot = demo.page.screenshot(path=tmp_path / "drawn-seven.png")
    assert shot.startswith(b"\x89PNG") and (tmp_path / "drawn-seven.png").stat().st_size > 0


def test_clear_then_predict_on_an_empty_pad_asks_for_a_drawing(demo):
    page = demo.page
    demo.draw(SEVEN)
    expect(page.locator("#bars .bar")).to_have_count(10)

    page.click("#clear")
    expect(page.locator("#label")).to_have_text(DASH)
    expect(page.locator("#bars .bar")).to_have_count(0)
    expect(page.locator("#message")).to_have_text("Draw a digit on the black pad.")
    assert page.get_attribute("#seen", "src") is None
    inked = page.evaluate("""() => {
        const pad = document.getElementById("pad");
        const data = pad.getContext("2d").getImageData(0, 0, pad.width, pad.height).data;
        return data.some((v, i) => i % 4 !== 3 && v !== 0);
    }""")
    assert not inked, "Clear left ink on the pad"

    before = len(demo.requests)
    page.click("#predict")
    expect(page.locator("#message")).to_have_text("Draw a digit on the black pad first.")
    expect(page.locator("#message")).not_to_have_class("error")
    expect(page.locator("#label")).to_have_text(DASH)
    assert demo.requests[before:] == [], "Predict on an empty pad sent a request"

    demo.draw(SEVEN)  # and the request count does see one when there is a drawing
    expect(page.locator("#bars .bar")).to_have_count(10)
    assert demo.requests[before:] == [("POST", demo.url + "predict")]


# ------------------------------------------------------------------------------------- uploads
def test_an_uploaded_digit_is_predicted_as_the_api_does(demo):
    png = seven_png()
    demo.upload("seven.png", png)
    expect(demo.page.locator("#photo")).to_be_visible()
    status, expected = post_image(demo.url, png, "seven.png")
    assert status == 200 and expected["digit_found"], expected
    expect_answer_like_the_api(demo, expected)


def test_a_text_file_named_png_shows_the_servers_error(demo):
    content = b"this is not an image"
    demo.upload("notes.png", content)
    status, expected = post_image(demo.url, content, "notes.png")
    assert status == 400 and expected["detail"].startswith("notes.png: not an image file")
    message = demo.page.locator("#message")
    expect(message).to_have_text("Could not read the image: " + expected["detail"])
    expect(message).to_have_class("error")
    expect(demo.page.locator("#label")).to_have_text("!")
    expect(demo.page.locator("#bars .bar")).to_have_count(0)
    assert demo.page.get_attribute("#seen", "src") is None


# --------------------------------------------------------------------------------- no outsiders
def test_the_page_asks_nothing_of_any_other_host(demo):
    """Every request made by every page of this module went to the server (blob: URLs of the
    uploaded photo are the page's own); and no page threw a JavaScript error."""
    demo.draw(SEVEN)
    expect(demo.page.locator("#bars .bar")).to_have_count(10)
    demo.upload("seven.png", seven_png())
    expect(demo.page.locator("#photo")).to_be_visible()
    expect(demo.page.locator("#message")).not_to_have_text("Predicting\u2026")

    methods_paths = {(m, u.removeprefix(demo.url)) for m, u in demo.requests}
    assert {("GET", ""), ("GET", "info"), ("POST", "predict")} <= methods_paths
    own = (demo.url, "blob:" + demo.url.rstrip("/") + "/", "data:")
    foreign = [url for url in PAGE_WIDE["urls"] if not url.startswith(own)]
    assert not foreign, f"requests to other hosts: {foreign}"
    assert not PAGE_WIDE["errors"], f"JavaScript errors: {PAGE_WIDE['errors']}"
