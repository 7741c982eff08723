"""End-to-end: Debian's Chromium (through Playwright) uploads the astronaut, paints a stroke and gets it inpainted."""

import base64
import io
import shutil
import socket
import threading
import time
from importlib.resources import files
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--headless=new",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server_url():
    uvicorn = pytest.importorskip("uvicorn")
    from faceinpaint.inpainter import Inpainter
    from faceinpaint.server import create_app

    torch.manual_seed(0)
    tiny = Inpainter.from_config("deepfillv2", {"width": 8}, 32, device="cpu")
    served = {"tiny": tiny, "reference-paste": Inpainter.from_pretrained("reference-paste")}
    port = _free_port()
    config = uvicorn.Config(create_app(served), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/"
    server.should_exit = True
    thread.join(10)


def _decode(url: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.partition(",")[2]))))


@pytest.mark.slow
def test_page_inpaints_a_painted_stroke(server_url):
    playwright_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the Python package)")
    if not CHROMIUM.exists() and not shutil.which("chromium"):
        pytest.skip("Chromium is missing: apt-get install -y chromium (the browser test needs Debian's Chromium)")
    face = files("faceinpaint") / "assets" / "astronaut-face-256.png"
    original = np.asarray(Image.open(face).convert("RGB"))
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 900, "height": 1000})
            page.goto(server_url)
            page.wait_for_function("document.querySelector('#model').options.length > 0")
            page.set_input_files("#photo", str(face))
            page.wait_for_selector("#step-mask:not([hidden])")
            page.wait_for_function("!document.querySelector('#box-hint').textContent.startsWith('Looking')")
            editor = page.locator("#editor")
            editor.scroll_into_view_if_needed()
            box = editor.bounding_box()
            y = box["y"] + box["height"] * 0.5
            page.mouse.move(box["x"] + box["width"] * 0.3, y)
            page.mouse.down()
            for step in range(1, 11):
                page.mouse.move(box["x"] + box["width"] * (0.3 + 0.04 * step), y)
            page.mouse.up()
            page.click("#run")
            page.wait_for_selector("#step-result:not([hidden])", timeout=30_000)
            assert not page.locator("#message").is_visible(), page.locator("#message").text_content()
            result = _decode(page.evaluate("window.faceinpaint.resultDataURL()"))[..., :3]
            hole = _decode(page.evaluate("window.faceinpaint.maskDataURL()"))[..., 3] > 127
            # A reference photo switches a model that cannot use it to the server's reference default.
            page.set_input_files("#reference", str(face))
            page.wait_for_function("document.querySelector('#model').value === 'reference-paste'")
            assert "reference-paste" in page.locator("#message").text_content()
        finally:
            browser.close()
    assert result.shape == original.shape and 100 < hole.sum() < hole.size // 4
    assert np.array_equal(result[~hole], original[~hole])  # outside the stroke: the input, byte for byte
    assert (np.abs(result[hole].astype(int) - original[hole]).max(axis=1) > 0).mean() > 0.5
