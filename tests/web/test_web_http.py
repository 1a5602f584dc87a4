"""The web app's HTTP API against the real model server, both on 127.0.0.1: known digits in, their labels out;
every bad input a 4xx with one `Error:` line and no traceback."""

from __future__ import annotations

import socket

import pytest
import requests
from PIL import Image

from web_harness import KNOWN_DIGITS, MAX_UPLOAD_BYTES, WebProcess, digit_image, encode, smoke_sample

PROBED_S = 45  # gRPC's default back-off would have reached gaps of 16-26 s by then
MAX_RETRY_GAP_S = 8  # the page's capped back-off: 5 s, with jitter and a probe's timing


def classify(web, data: bytes, filename: str = "digit.png", model: str = "digits") -> requests.Response:
    return requests.post(web.url + "/api/classify", data={"model": model},
                         files={"image": (filename, data, "application/octet-stream")}, timeout=30)


def assert_clean_error(response: requests.Response, status: int, *words: str) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error.startswith("Error: ") and "(hint: " in error, error
    assert "Traceback" not in response.text and "File \"" not in response.text
    for word in words:
        assert word in error, error
    return error


def test_models_lists_digits_as_a_classifier_and_says_why_the_others_are_not(web):
    body = requests.get(web.url + "/api/models", timeout=30).json()

    assert body["classifiers"] == [{"name": "digits", "version": 1, "input": "8x8 grayscale, 0..16", "api": "classify"}]
    others = {m["name"]: m["reason"] for m in body["others"]}
    assert "not an image" in others["half_plus_two"]
    assert "does not serve" in others["absent"]


@pytest.mark.parametrize("label", sorted(KNOWN_DIGITS))
def test_a_known_digit_png_gets_its_label_version_replica_and_latency(web, digits_version, label):
    pixels, labels = smoke_sample(digits_version)
    index = KNOWN_DIGITS[label]
    assert labels[index] == label

    response = classify(web, encode(digit_image(pixels[index])))

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["classes"][0]["label"] == label
    assert body["classes"][0]["score"] > 0.5
    assert len(body["classes"]) == 10 and {c["label"] for c in body["classes"]} == {str(d) for d in range(10)}
    assert body["model"] == "digits" and body["version"] == 1
    # The model server (python runtime) names itself; on loopback that is this machine's host name.
    assert body["replica"] == socket.gethostname() and body["replica_source"] == "model server"
    assert 0 < body["latency_ms"] <= body["total_ms"]
    assert len(body["model_input"]["values"]) == 64


def test_the_held_out_sample_through_pngs_is_mostly_right(web, digits_version):
    pixels, labels = smoke_sample(digits_version)

    right = sum(classify(web, encode(digit_image(p))).json()["classes"][0]["label"] == y for p, y in zip(pixels, labels))

    assert right / len(labels) >= 0.9, f"{right} of {len(labels)}"


def test_a_large_jpeg_a_light_on_dark_png_and_a_transparent_drawing_are_converted(web, digits_version):
    pixels, labels = smoke_sample(digits_version)
    index = KNOWN_DIGITS["4"]
    big_jpeg = encode(digit_image(pixels[index], scale=400).convert("RGB"), "JPEG", quality=85)  # 3200x3200
    light_on_dark = encode(digit_image(pixels[index], dark_on_light=False))
    ink = digit_image(pixels[index], dark_on_light=False)
    transparent = Image.new("RGBA", ink.size, (0, 0, 0, 0))
    transparent.putalpha(ink)  # black ink whose alpha is the stroke: a canvas with no background
    drawing = encode(transparent)

    assert len(big_jpeg) < MAX_UPLOAD_BYTES
    for name, data in [("big.jpg", big_jpeg), ("light.png", light_on_dark), ("drawing.png", drawing)]:
        response = classify(web, data, name)
        assert response.status_code == 200, (name, response.text)
        assert response.json()["classes"][0]["label"] == "4", name


def test_not_an_image(web):
    assert_clean_error(classify(web, b"hello, I am text\n", "notes.txt"), 415, "'notes.txt' is not an image")


def test_an_empty_file(web):
    assert_clean_error(classify(web, b"", "empty.png"), 400, "'empty.png' is empty")


def test_a_file_over_the_size_limit(web):
    data = encode(Image.effect_noise((1600, 1600), 64).convert("L"))
    assert len(data) > MAX_UPLOAD_BYTES
    assert_clean_error(classify(web, data, "noise.png"), 413, "over the limit")


def test_a_truncated_png(web, digits_version):
    data = encode(digit_image(smoke_sample(digits_version)[0][0]))
    assert_clean_error(classify(web, data[: len(data) // 2], "cut.png"), 422, "'cut.png' is a damaged image")


def test_a_blank_image(web):
    assert_clean_error(classify(web, encode(Image.new("L", (64, 64), 255)), "blank.png"), 422, "blank")


def test_a_model_that_does_not_classify(web, digits_version):
    data = encode(digit_image(smoke_sample(digits_version)[0][0]))
    assert_clean_error(classify(web, data, model="half_plus_two"), 422, "'half_plus_two' does not classify images")


def test_a_model_the_server_does_not_serve(web, digits_version):
    data = encode(digit_image(smoke_sample(digits_version)[0][0]))
    assert_clean_error(classify(web, data, model="absent"), 404, "does not serve a model named 'absent'")


def test_a_form_without_model_or_image(web):
    assert_clean_error(requests.post(web.url + "/api/classify", data={"model": "digits"}, timeout=30), 400, "no image")
    assert_clean_error(requests.post(web.url + "/api/classify", files={"image": ("a.png", b"x")}, timeout=30),
                       400, "no model")


def test_unknown_paths_are_clean_404s(web):
    assert_clean_error(requests.get(web.url + "/etc/passwd", timeout=30), 404, "Not Found")


def test_ready_and_the_page_and_its_assets_come_from_the_app(web):
    assert requests.get(web.url + "/readyz", timeout=30).json() == {"ready": True, "classifiers": ["digits"]}
    page = requests.get(web.url + "/", timeout=30)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "http://" not in page.text and "https://" not in page.text  # no CDN
    for asset in ("/static/app.js", "/static/style.css"):
        assert requests.get(web.url + asset, timeout=30).status_code == 200


def test_a_hung_model_server_gives_timeouts_not_hangs(silent_listener, tmp_path):
    app = WebProcess(silent_listener, "digits", tmp_path / "web.log", "--timeout=1").wait_up()
    try:
        ready = requests.get(app.url + "/readyz", timeout=30)
        assert ready.status_code == 503 and "did not answer within 1s" in ready.json()["error"]
        data = encode(Image.new("L", (8, 8), 0))
        assert_clean_error(classify(app, data), 504, "did not answer within 1s")
    finally:
        app.stop()



def test_a_page_started_before_its_model_server_keeps_trying_every_few_seconds(tmp_path):
    """As in a rollout, the page starts before the model server's pods. A listener that closes every connection stands
    for the missing server: while the page's readiness is probed each second, the gaps between its connection
    attempts stay within its capped back-off (gRPC's default grows them past 25 s, so the page would stay unready
    long after the server came up)."""
    import threading
    import time

    attempts: list[float] = []
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        listener.settimeout(1.0)
        stop = threading.Event()

        def refuse() -> None:
            while not stop.is_set():
                try:
                    connection, _ = listener.accept()
                except OSError:
                    continue
                attempts.append(time.monotonic())
                connection.close()

        closer = threading.Thread(target=refuse, daemon=True)
        closer.start()
        app = WebProcess(f"127.0.0.1:{listener.getsockname()[1]}", "digits", tmp_path / "web.log").wait_up()
        try:
            for _ in range(PROBED_S):
                assert requests.get(app.url + "/readyz", timeout=30).status_code == 503
                time.sleep(1)
        finally:
            app.stop()
            stop.set()
            closer.join(timeout=5)
    gaps = [later - earlier for earlier, later in zip(attempts, attempts[1:])]
    print(f"{len(attempts)} connection attempts in {PROBED_S} s, longest gap {max(gaps):.1f} s")
    assert len(attempts) >= 5 and max(gaps) <= MAX_RETRY_GAP_S, gaps
