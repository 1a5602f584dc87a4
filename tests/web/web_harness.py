"""Helpers for the web tests: the real `python -m tfship.web` on 127.0.0.1, and PNGs of digits with known labels."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import requests
from PIL import Image
from server_harness import free_port  # tests/server is on sys.path (see conftest)

MAX_UPLOAD_BYTES = 2_000_000  # the web app under test refuses larger uploads
STARTUP_TIMEOUT_S = 120.0  # the gRPC stubs import TensorFlow: seconds on a busy 2-core machine
# Held-out images of the exported digits model's smoke sample (assets.extra/smoke_sample.json), one per digit 0..9,
# that survive the round trip "8x8 -> upscaled PNG -> the page's conversion" (about 94 % of held-out images do).
KNOWN_DIGITS = {"0": 24, "1": 33, "2": 6, "3": 2, "4": 13, "5": 14, "6": 1, "7": 0, "8": 7, "9": 8}


class WebProcess:
    def __init__(self, model_server: str, models: str, log_path: Path, *extra: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tfship.web", "--host", "127.0.0.1", f"--port={self.port}",
             f"--model-server={model_server}", f"--models={models}", *extra],
            stdout=self._log, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_up(self, timeout: float = STARTUP_TIMEOUT_S) -> "WebProcess":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"tfship.web exited with {self.process.returncode}:\n{self.log()}")
            try:
                if requests.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.5)
        self.stop()
        raise AssertionError(f"tfship.web not up within {timeout}s:\n{self.log()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._log.close()


def smoke_sample(model_version_dir: Path) -> tuple[np.ndarray, list[str]]:
    sample = json.loads((model_version_dir / "assets.extra" / "smoke_sample.json").read_text())
    return np.asarray(sample["inputs"], dtype=np.float32), sample["expected_labels"]


def digit_image(pixels: np.ndarray, scale: int = 25, dark_on_light: bool = True) -> Image.Image:
    """An 8x8 digit (0..16) as a grayscale picture, each pixel a scale x scale square: pen on paper by default."""
    ink = pixels.reshape(8, 8) * 255 / 16
    gray = (255 - ink) if dark_on_light else ink
    return Image.fromarray(gray.astype(np.uint8), "L").resize((8 * scale, 8 * scale), Image.Resampling.NEAREST)


def encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()
