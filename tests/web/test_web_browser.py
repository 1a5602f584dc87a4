"""The page in headless Chromium (Debian's, driven by Playwright) against the real web app and model server: upload
digits with known labels and read the answer off the page, draw digits on the canvas, and see each bad input
explained on the page. Screenshots go to build/screenshots/."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from PIL import Image

from web_harness import KNOWN_DIGITS, MAX_UPLOAD_BYTES, digit_image, encode, smoke_sample


@pytest.fixture
def page(browser, web):
    context = browser.new_context(viewport={"width": 1100, "height": 760})
    page = context.new_page()
    page.set_default_timeout(20_000)
    page.requested = []  # every URL the page asked for
    page.on("request", lambda request: page.requested.append(request.url))
    page.goto(web.url + "/")
    page.wait_for_selector("#model:not([disabled])")
    yield page
    context.close()


def submit(page, button: str) -> int:
    """Click a classify button; the HTTP status of the answer, once the page has shown it."""
    with page.expect_response(lambda response: response.url.endswith("/api/classify")) as answer:
        page.click(button)
    page.wait_for_function("!document.querySelector('#draw-button').disabled")  # disabled while a request runs
    page.wait_for_selector("#result:not([hidden]), #error:not([hidden])")
    return answer.value.status


def upload(page, path: Path, model: str = "digits") -> int:
    page.select_option("#model", model)
    page.set_input_files("#file", str(path))
    return submit(page, "#upload-button")


@pytest.mark.parametrize("label", ["0", "3", "7", "9"])
def test_uploaded_digits_show_their_label_as_the_top_bar(page, web, digits_version, tmp_path, screenshots, label):
    pixels, _ = smoke_sample(digits_version)
    png = tmp_path / f"digit-{label}.png"
    png.write_bytes(encode(digit_image(pixels[KNOWN_DIGITS[label]])))

    assert upload(page, png) == 200
    page.screenshot(path=str(screenshots / f"upload-digit-{label}.png"), full_page=True)

    assert page.is_hidden("#error")
    assert page.inner_text("#prediction") == label
    bars = page.locator("#bars li")
    assert bars.count() == 5 and bars.first.get_attribute("data-label") == label
    widths = page.eval_on_selector_all("#bars .fill", "fills => fills.map(f => f.getBoundingClientRect().width)")
    assert widths[0] > 100 and widths == sorted(widths, reverse=True)  # a bar chart, best first
    assert page.inner_text("#meta-version") == "1"
    assert "(model server)" in page.inner_text("#meta-replica")
    assert "ms model server" in page.inner_text("#meta-latency")
    # No CDN, nothing external: the app's own URLs, and the blob: URL of the file preview.
    assert all(url.startswith((web.url, "blob:" + web.url)) for url in page.requested), page.requested


def draw(page, strokes: list[list[tuple[float, float]]]) -> None:
    """Strokes in the pad's own 0..280 coordinates, drawn with the mouse."""
    page.click("#tab-draw")
    box = page.locator("#pad").bounding_box()
    scale = box["width"] / 280
    for stroke in strokes:
        points = [(box["x"] + x * scale, box["y"] + y * scale) for x, y in stroke]
        page.mouse.move(*points[0])
        page.mouse.down()
        for point in points[1:]:
            page.mouse.move(*point, steps=4)
        page.mouse.up()


ZERO = [[(140 + 50 * math.sin(t * math.pi / 12), 140 - 95 * math.cos(t * math.pi / 12)) for t in range(25)]]
ONE = [[(140, 45), (140, 240)]]  # a plain stroke: with a flag at the top this small model says 3
SEVEN = [[(80, 50), (210, 50), (120, 240)]]


@pytest.mark.parametrize("label, strokes", [("0", ZERO), ("1", ONE), ("7", SEVEN)])
def test_a_digit_drawn_on_the_canvas(page, screenshots, label, strokes):
    draw(page, strokes)
    assert submit(page, "#draw-button") == 200
    page.screenshot(path=str(screenshots / f"draw-digit-{label}.png"), full_page=True)

    assert page.is_hidden("#error"), page.inner_text("#error")
    assert page.inner_text("#prediction") == label


def test_clear_then_classify_an_empty_canvas_is_explained(page, screenshots):
    draw(page, ZERO)
    page.click("#clear")
    assert submit(page, "#draw-button") == 422
    assert "blank" in page.inner_text("#error")


def bad_files(tmp_path: Path, digits_version: Path) -> dict[str, tuple[Path, str, int, str]]:
    """name -> (file, model, expected status, words on the page)."""
    text = tmp_path / "notes.txt"
    text.write_text("hello, I am not an image\n")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    huge = tmp_path / "noise.png"
    huge.write_bytes(encode(Image.effect_noise((1600, 1600), 64).convert("L")))
    assert huge.stat().st_size > MAX_UPLOAD_BYTES
    digit = tmp_path / "digit.png"
    digit.write_bytes(encode(digit_image(smoke_sample(digits_version)[0][0])))
    return {
        "not-an-image": (text, "digits", 415, "'notes.txt' is not an image"),
        "empty-file": (empty, "digits", 400, "'empty.png' is empty"),
        "over-the-size-limit": (huge, "digits", 413, "over the limit"),
        "model-that-does-not-classify": (digit, "half_plus_two", 422, "'half_plus_two' does not classify images"),
    }


@pytest.mark.parametrize("case", ["not-an-image", "empty-file", "over-the-size-limit", "model-that-does-not-classify"])
def test_bad_input_is_explained_on_the_page(page, tmp_path, digits_version, screenshots, case):
    path, model, status, words = bad_files(tmp_path, digits_version)[case]

    answered = upload(page, path, model)
    page.screenshot(path=str(screenshots / f"bad-input-{case}.png"), full_page=True)

    message = page.inner_text("#error")
    assert page.is_visible("#error") and page.is_hidden("#result")
    assert message.startswith("Error: ") and words in message and "Traceback" not in message
    assert answered == status


def test_the_model_list_marks_models_that_do_not_classify(page):
    options = page.eval_on_selector_all("#model option", "options => options.map(o => o.textContent)")
    assert options == ["digits (v1)", "half_plus_two (not an image classifier)", "absent (not an image classifier)"]
    page.select_option("#model", "half_plus_two")
    assert "not an image" in page.inner_text("#model-info")
