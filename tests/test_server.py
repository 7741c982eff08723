"""The HTTP server through FastAPI's TestClient: every endpoint, every kind of bad input, TF-Serving bodies."""

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

from faceinpaint.inpainter import Inpainter  # noqa: E402
from faceinpaint.server import Limits, create_app  # noqa: E402
from faceinpaint.tfserving import centre_hole  # noqa: E402


def png(array: np.ndarray, mode: str | None = None) -> bytes:
    stream = io.BytesIO()
    Image.fromarray(array, mode).save(stream, format="PNG")
    return stream.getvalue()


def data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def client():
    import torch

    torch.manual_seed(0)
    tiny = Inpainter.from_config("deepfillv2", {"width": 8}, 32, device="cpu")
    telea = Inpainter.from_pretrained("telea")
    limits = Limits(max_upload_bytes=3_000_000, max_pixels=300 * 300, max_batch=2, workers=1, queue=4)
    with TestClient(create_app({"tiny": tiny, "telea": telea}, limits)) as test_client:
        yield test_client


@pytest.fixture
def photo() -> tuple[np.ndarray, np.ndarray]:
    """A 40x48 image (not square, so nothing aligns it) and its hole."""
    image = np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    hole = np.zeros((40, 48), bool)
    hole[10:22, 12:30] = True
    return image, hole


def check_composited(result: np.ndarray, image: np.ndarray, hole: np.ndarray) -> None:
    assert result.shape == image.shape
    assert np.array_equal(result[~hole], image[~hole])


def test_models_health_docs_and_page(client):
    models = client.get("/v1/models").json()
    assert [m["name"] for m in models["models"]] == ["tiny", "telea"] and models["default"] == "tiny"
    assert models["aliases"] == {"two_face_model": "tiny"}
    assert client.get("/healthz").json()["status"] == "ok"
    assert client.get("/docs").status_code == 200
    assert "/v1/inpaint" in client.get("/openapi.json").json()["paths"]
    page = client.get("/")
    assert page.status_code == 200 and "faceinpaint" in page.text
    assert client.get("/app.js").status_code == 200 and client.get("/style.css").status_code == 200
    assert client.get("/v1/models/tiny").json()["model_version_status"][0]["state"] == "AVAILABLE"


def test_inpaint_multipart_png_and_jpeg(client, photo):
    image, hole = photo
    files = {
        "image": ("a.png", png(image), "image/png"),
        "mask": ("m.png", png(hole.astype(np.uint8) * 255), "image/png"),
    }
    response = client.post("/v1/inpaint", files=files, data={"model": "telea", "align": "never"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png" and response.headers["x-faceinpaint-model"] == "telea"
    check_composited(np.asarray(Image.open(io.BytesIO(response.content))), image, hole)
    response = client.post("/v1/inpaint", files=files, data={"format": "jpeg", "align": "never"})
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(response.content)).size == (48, 40)


def test_inpaint_json_as_the_web_app_sends_it(client, photo):
    image, hole = photo
    rgba = np.zeros((40, 48, 4), np.uint8)  # the web app's mask: painted strokes on a transparent canvas
    rgba[hole] = (255, 0, 0, 255)
    body = {
        "image": data_url(png(image)),
        "mask": data_url(png(rgba)),
        "model": "tiny",
        "format": "png",
        "align": "auto",
    }
    answer = client.post("/v1/inpaint", json=body)
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["model"] == "tiny" and (result["width"], result["height"]) == (48, 40)
    prefix, _, encoded = result["image"].partition(",")
    assert prefix == "data:image/png;base64"
    out = np.asarray(Image.open(io.BytesIO(base64.b64decode(encoded))))
    check_composited(out, image, hole)
    assert not np.array_equal(out[hole], image[hole])


def test_faces_endpoint_answers_with_or_without_the_pipeline(client, face):
    image, _ = face
    answer = client.post("/v1/faces", json={"image": data_url(png(np.asarray(image)))})
    assert answer.status_code == 200, answer.text
    assert set(answer.json()) == {"available", "faces"}


def error_of(response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and "Traceback" not in body["error"] and "\n" not in body["error"]
    return body["error"]


def test_bad_inputs_are_4xx_json(client, photo):
    image, hole = photo
    good_mask = png(hole.astype(np.uint8) * 255)
    files = {"image": ("a.png", png(image), "image/png"), "mask": ("m.png", good_mask, "image/png")}
    # Oversized upload (body over 3 MB) and too many pixels.
    big = {"image": ("a.png", b"x" * 3_100_000, "image/png"), "mask": ("m.png", good_mask, "image/png")}
    assert "limit" in error_of(client.post("/v1/inpaint", files=big), 413)
    huge = np.zeros((400, 400, 3), np.uint8)
    assert "pixels" in error_of(client.post("/v1/inpaint", json={"image": data_url(png(huge)), "mask": "x"}), 413)
    # Wrong content types: of the request, and a file that is not an image.
    assert "content type" in error_of(
        client.post("/v1/inpaint", content=b"hello", headers={"content-type": "text/plain"}), 415
    )
    text = {"image": ("a.txt", b"not an image", "text/plain"), "mask": files["mask"]}
    assert "not an image" in error_of(client.post("/v1/inpaint", files=text), 415)
    # A mask of another size, an empty mask, unknown model, bad option, missing field, text for a file.
    small = {**files, "mask": ("m.png", png(np.full((20, 20), 255, np.uint8)), "image/png")}
    assert "must match" in error_of(client.post("/v1/inpaint", files=small, data={"align": "never"}), 400)
    empty = {**files, "mask": ("m.png", png(np.zeros((40, 48), np.uint8)), "image/png")}
    assert "empty" in error_of(client.post("/v1/inpaint", files=empty), 400)
    assert "unknown model" in error_of(client.post("/v1/inpaint", files=files, data={"model": "nope"}), 404)
    assert "format" in error_of(client.post("/v1/inpaint", files=files, data={"format": "gif"}), 422)
    assert "required" in error_of(client.post("/v1/inpaint", files={"image": files["image"]}), 422)
    assert "file upload" in error_of(
        client.post("/v1/inpaint", files={"image": files["image"]}, data={"mask": "x"}), 400
    )
    # Malformed JSON, JSON that is not an object, bad base64.
    headers = {"content-type": "application/json"}
    assert "malformed JSON" in error_of(client.post("/v1/inpaint", content=b"{oops", headers=headers), 400)
    assert "object" in error_of(client.post("/v1/inpaint", json=[1, 2]), 400)
    assert "base64" in error_of(client.post("/v1/inpaint", json={"image": "@@@", "mask": "@@@"}), 400)
    # Unknown paths and methods.
    error_of(client.get("/v1/nothing"), 404)
    error_of(client.delete("/v1/models"), 405)
    error_of(client.get("/v1/models/nope"), 404)


def seed_request(batch: int = 1, size: int = 128) -> dict:
    """Seed 001's own client request: masked and reference image, NHWC floats in [0, 1], no mask."""
    rng = np.random.default_rng(1)
    masked = rng.random((batch, size, size, 3)).astype(np.float32)
    masked[:, 48:80, 48:80] = 0.0
    return {
        "inputs": {"masked_image": masked.tolist(), "reference_image": rng.random((batch, size, size, 3)).tolist()}
    }


def test_tfserving_seed_request_unchanged(client):
    body = seed_request()
    answer = client.post("/v1/models/two_face_model:predict", json=body)
    assert answer.status_code == 200, answer.text
    outputs = np.asarray(answer.json()["outputs"], np.float32)
    masked = np.asarray(body["inputs"]["masked_image"], np.float32)
    assert outputs.shape == (1, 128, 128, 3) and outputs.min() >= 0.0 and outputs.max() <= 1.0
    hole = centre_hole(128, 128)
    assert np.abs(outputs[0][~hole] - masked[0][~hole]).max() < 1e-4
    assert np.argwhere(hole).min(0).tolist() == [48, 48] and np.argwhere(hole).max(0).tolist() == [79, 79]


def test_tfserving_row_format_and_mask(client):
    rng = np.random.default_rng(2)
    images = rng.random((2, 32, 32, 3)).round(3)
    mask = np.zeros((2, 32, 32, 1))
    mask[:, 4:12, 4:12] = 1.0
    instances = [{"masked_image": images[i].tolist(), "mask": mask[i].tolist()} for i in range(2)]
    answer = client.post("/v1/models/telea:predict", json={"instances": instances})
    assert answer.status_code == 200, answer.text
    predictions = np.asarray(answer.json()["predictions"])
    assert predictions.shape == (2, 32, 32, 3)
    known = mask[..., 0] < 0.5
    assert np.abs(predictions[known] - images[known]).max() < 1e-4


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"inputs": {"masked_image": [[1, 2], [3]]}}, "rectangular"),
        ({"inputs": {"masked_image": np.zeros((1, 8, 8)).tolist()}}, "[N, H, W, 3]"),
        ({"inputs": {"masked_image": np.zeros((1, 8, 8, 4)).tolist()}}, "[N, H, W, 3]"),
        ({"inputs": {"masked_image": np.full((1, 8, 8, 3), 2.0).tolist()}}, "[0, 1]"),
        ({"inputs": {"masked_image": np.zeros((3, 8, 8, 3)).tolist()}}, "batch"),
        ({"inputs": {"masked_image": np.zeros((1, 8, 8, 3)).tolist(), "mask": np.zeros((1, 4, 4)).tolist()}}, "mask"),
        ({"inputs": {"masked_image": np.zeros((1, 8, 8, 3)).tolist(), "reference_image": [[[1.0]]]}}, "reference"),
        ({"inputs": {"other": 1}}, "masked_image"),
        ({"instances": []}, "non-empty"),
        ({"instances": [{"masked_image": 1}, {"mask": 1}]}, "same inputs"),
        ({"signature_name": "x"}, '"inputs"'),
        ([1, 2, 3], "JSON object"),
    ],
)
def test_tfserving_bad_bodies(client, body, words):
    assert words in error_of(client.post("/v1/models/tiny:predict", json=body), 400)


def test_tfserving_malformed_json_and_unknown_model(client):
    headers = {"content-type": "application/json"}
    assert "malformed" in error_of(client.post("/v1/models/tiny:predict", content=b"{", headers=headers), 400)
    assert "unknown model" in error_of(client.post("/v1/models/nope:predict", json=seed_request()), 404)


def test_busy_server_answers_503(photo):
    import threading

    release = threading.Event()

    class Slow:
        """A stand-in model that blocks until released, to fill the worker pool."""

        name, model, resolution, uses_reference, config = "slow", None, None, False, {"method": "slow"}

        def __call__(self, image, mask, reference=None, align=None):
            release.wait(10)
            return image

    image, hole = photo
    files = {
        "image": ("a.png", png(image), "image/png"),
        "mask": ("m.png", png(hole.astype(np.uint8) * 255), "image/png"),
    }
    app = create_app({"slow": Slow()}, Limits(workers=1, queue=0))
    with TestClient(app) as test_client:
        first = threading.Thread(target=lambda: test_client.post("/v1/inpaint", files=files))
        first.start()
        for _ in range(200):
            if test_client.get("/healthz").json()["pending"]:
                break
            threading.Event().wait(0.01)
        assert "busy" in error_of(test_client.post("/v1/inpaint", files=files), 503)
        release.set()
        first.join()


def test_json_body_limits_apply_to_chunked_bodies(client):
    def chunks():
        yield b'{"image": "'
        for _ in range(310):
            yield b"A" * 10_000
        yield b'"}'

    answer = client.post("/v1/inpaint", content=chunks(), headers={"content-type": "application/json"})
    assert "limit" in error_of(answer, 413)
    assert json.loads(client.get("/healthz").text)["pending"] == 0
