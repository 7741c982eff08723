"""The HTTP server through FastAPI's TestClient: every endpoint, every kind of bad input, TF-Serving bodies."""

import base64
import http.client
import io
import json
import socket
import struct
import threading
import time
import zlib
from contextlib import contextmanager

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

from faceinpaint.inpainter import Inpainter  # noqa: E402
from faceinpaint.server import Limits, create_app  # noqa: E402
from faceinpaint.server.tfserving import centre_hole  # noqa: E402

LOCAL = "http://localhost"  # what a browser on the serving machine sends as Host (TestClient's own is "testserver")


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
    with TestClient(create_app({"tiny": tiny, "telea": telea}, limits), base_url=LOCAL) as test_client:
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
    assert models["aliases"] == {"two_face_model": "tiny"} and models["reference_default"] is None
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


def test_a_request_with_a_reference_and_no_model_gets_the_reference_default(face):
    """Served [telea, reference-paste]: telea for a request without a reference, reference-paste (the first served
    model that uses one) for a request that brings one, and a named model either way."""
    pytest.importorskip("dlib")
    image, hole = face
    served = {
        "telea": Inpainter.from_pretrained("telea"),
        "reference-paste": Inpainter.from_pretrained("reference-paste"),
    }
    stream = io.BytesIO()
    image.save(stream, format="PNG")
    files = {"image": ("a.png", stream.getvalue(), "image/png"), "mask": ("m.png", png(hole.astype(np.uint8) * 255))}
    mirrored = ("r.png", png(np.ascontiguousarray(np.asarray(image)[:, ::-1])), "image/png")
    limits = Limits(max_upload_bytes=3_000_000, max_pixels=300 * 300, max_batch=2, workers=1, queue=4)
    with TestClient(create_app(served, limits), base_url=LOCAL) as test_client:
        assert test_client.get("/v1/models").json()["reference_default"] == "reference-paste"
        for extra, data, expected in [({}, {}, "telea"), ({"reference": mirrored}, {}, "reference-paste"),
                                      ({"reference": mirrored}, {"model": "telea"}, "telea")]:  # fmt: skip
            answer = test_client.post("/v1/inpaint", files={**files, **extra}, data={"align": "never", **data})
            assert answer.status_code == 200, answer.text
            assert answer.headers["x-faceinpaint-model"] == expected


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
    with TestClient(app, base_url=LOCAL) as test_client:
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


# Hardening (issue 21): malformed bodies, keep-alive, one decoder, work after admission, Host / Origin, limits.


def declared_png(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height but holds no pixels: all the size check reads."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
        + chunk(b"IEND", b"")
    )


class StandIn:
    """A model-shaped object for the pool tests: blocks until released, or raises (a bug), counting its calls."""

    name, model, resolution, uses_reference, config = "stand-in", None, None, False, {"method": "stand-in"}

    def __init__(self, fail: bool = False):
        self.fail, self.calls, self.release = fail, 0, threading.Event()

    def __call__(self, image, mask, reference=None, align=None):
        self.calls += 1
        if self.fail:
            raise RuntimeError("a bug in the model")
        self.release.wait(20)
        return image


@contextmanager
def live_server(app):
    """Serve the app with uvicorn on a free loopback port (a real socket, for keep-alive and disconnects)."""
    uvicorn = pytest.importorskip("uvicorn")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(10)


def json_inpaint_body(photo, model: str) -> bytes:
    image, hole = photo
    return json.dumps({"image": data_url(png(image)), "mask": data_url(png(hole.astype(np.uint8) * 255)),
                       "model": model, "align": "never"}).encode()  # fmt: skip


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/inpaint", b'{"image": 1, "mask": 1}'),
        ("/v1/inpaint", b'{"image": "AAAA", "mask": ["AAAA"]}'),
        ("/v1/inpaint", b'{"image": "AAAA", "mask": "AAAA", "reference": {}}'),
        ("/v1/inpaint", b'{"image": "AAAA", "mask": "AAAA", "model": 7}'),
        ("/v1/faces", b'{"image": 1}'),
        ("/v1/faces", b'{"image": null}'),
        ("/v1/inpaint", b'{"image": ' + b"1" * 4400 + b"}"),
        ("/v1/inpaint", b"[" * 2000 + b"]" * 2000),
        ("/v1/models/tiny:predict", b'{"inputs": {"masked_image": ' + b"[" * 2000 + b"]" * 2000 + b"}}"),
        ("/v1/models/tiny:predict", b'{"inputs": {"masked_image": ' + b"[" * 80 + b"]" * 80 + b"}}"),
        ("/v1/models/tiny:predict", b'{"inputs": {"masked_image": [[[]]]}}'),
        ("/v1/models/tiny:predict", b'{"inputs": {"masked_image": [[[[]]]]}}'),
        ("/v1/models/tiny:predict", b'{"inputs": {"masked_image": [[[[' + b"9" * 400 + b", 0, 0]]]]}}"),
        ("/v1/models/tiny:predict", b'{"inputs": {"masked_image": [[[["0.5", "0.5", "0.5"]]]]}}'),
        ("/v1/models/tiny:predict", b'{"inputs": {"masked_image": [[[[0, 0, 0]]]], "mask": [[[[]]]]}}'),
        ("/v1/models/tiny:predict", b'{"instances": [{"masked_image": [[[0, 0, 0]]], "mask": null}]}'),
    ],
)
def test_malformed_bodies_are_4xx_json(client, path, body):
    response = client.post(path, content=body, headers={"content-type": "application/json"})
    assert 400 <= response.status_code < 500, response.text
    error_of(response, response.status_code)


def test_keep_alive_connection_survives_bad_requests_and_bugs(photo):
    app = create_app({"telea": Inpainter.from_pretrained("telea"), "broken": StandIn(fail=True)})
    with live_server(app) as port:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

        def post(body: bytes) -> tuple[int, dict]:
            connection.request("POST", "/v1/inpaint", body, {"content-type": "application/json"})
            response = connection.getresponse()
            return response.status, json.loads(response.read())

        status, _ = post(b'{"image": 1, "mask": 1}')
        assert 400 <= status < 500
        first_socket = connection.sock
        status, answer = post(json_inpaint_body(photo, "broken"))
        assert status == 500 and "internal error" in answer["error"] and "a bug" not in answer["error"]
        status, answer = post(json_inpaint_body(photo, "telea"))
        assert status == 200 and answer["model"] == "telea"
        assert connection.sock is first_socket, "the server closed the connection"
        connection.close()


def test_sideways_phone_photo_is_turned_upright(client, photo):
    image, hole = photo
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: turn 90 degrees clockwise to show
    stream = io.BytesIO()
    Image.fromarray(np.rot90(image, 1).copy()).save(stream, format="PNG", exif=exif)
    files = {"image": ("a.png", stream.getvalue(), "image/png"), "mask": ("m.png", png(hole.astype(np.uint8) * 255))}
    response = client.post("/v1/inpaint", files=files, data={"model": "telea", "align": "never"})
    assert response.status_code == 200, response.text  # the mask was drawn on the photo as displayed
    check_composited(np.asarray(Image.open(io.BytesIO(response.content))), image, hole)


def test_sideways_phone_photo_finds_its_face(client, face):
    from faceinpaint.faces.detect import faces_available

    if not faces_available():
        pytest.skip("needs faceinpaint[faces]")
    exif = Image.Exif()
    exif[0x0112] = 8  # stored rotated the other way: turn 90 degrees counter-clockwise to show
    stream = io.BytesIO()
    Image.fromarray(np.rot90(np.asarray(face[0]), -1).copy()).save(stream, format="PNG", exif=exif)
    answer = client.post("/v1/faces", json={"image": data_url(stream.getvalue())})
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["faces"]) == 1


def _sixteen_bit_png(grey: np.ndarray) -> bytes:
    return png(grey.astype(np.uint16) * 257)  # mode I;16


def _float_tiff(grey: np.ndarray) -> bytes:
    stream = io.BytesIO()
    Image.fromarray((grey / 255.0).astype(np.float32), "F").save(stream, format="TIFF")
    return stream.getvalue()


@pytest.mark.parametrize("encode", [_sixteen_bit_png, _float_tiff], ids=["I;16 PNG", "float TIFF"])
def test_sixteen_bit_and_float_uploads_are_scaled_like_the_cli(client, photo, encode):
    grey, hole = photo[0][..., 0], photo[1]
    files = {"image": ("deep", encode(grey)), "mask": ("m.png", png(hole.astype(np.uint8) * 255), "image/png")}
    response = client.post("/v1/inpaint", files=files, data={"model": "telea", "align": "never"})
    assert response.status_code == 200, response.text
    result = np.asarray(Image.open(io.BytesIO(response.content)).convert("L"))
    assert np.array_equal(result[~hole], grey[~hole])


def test_uploads_are_decoded_in_the_worker_pool_after_admission(photo, monkeypatch):
    import faceinpaint.server.routes as routes

    threads = []
    decode = routes.decode_image

    def recording_decode(*args, **kwargs):
        threads.append(threading.current_thread().name)
        return decode(*args, **kwargs)

    monkeypatch.setattr(routes, "decode_image", recording_decode)
    stand_in = StandIn()
    app = create_app({"stand-in": stand_in}, Limits(workers=1, queue=0))
    body = json_inpaint_body(photo, "stand-in")
    headers = {"content-type": "application/json"}
    with TestClient(app, base_url=LOCAL) as test_client:
        first = threading.Thread(target=lambda: test_client.post("/v1/inpaint", content=body, headers=headers))
        first.start()
        deadline = time.monotonic() + 20
        while not stand_in.calls and time.monotonic() < deadline:
            time.sleep(0.01)
        assert "busy" in error_of(test_client.post("/v1/inpaint", content=body, headers=headers), 503)
        stand_in.release.set()
        first.join()
    assert len(threads) == 1, threads  # the refused request decoded nothing
    assert threads[0].startswith("faceinpaint"), threads


def test_queued_work_of_clients_that_left_is_dropped(photo):
    stand_in = StandIn()
    app = create_app({"stand-in": stand_in}, Limits(workers=1, queue=8))
    body = json_inpaint_body(photo, "stand-in")
    with live_server(app) as port:

        def pending() -> int:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            connection.request("GET", "/healthz")
            count = json.loads(connection.getresponse().read())["pending"]
            connection.close()
            return count

        def wait_for(condition) -> bool:
            deadline = time.monotonic() + 10
            while not condition() and time.monotonic() < deadline:
                time.sleep(0.02)
            return condition()

        first = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        first.request("POST", "/v1/inpaint", body, {"content-type": "application/json"})
        assert wait_for(lambda: stand_in.calls == 1)
        request = (f"POST /v1/inpaint HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
                   f"Content-Length: {len(body)}\r\n\r\n").encode() + body  # fmt: skip
        leaving = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        for client_socket in leaving:
            client_socket.sendall(request)
        assert wait_for(lambda: pending() == 4)
        for client_socket in leaving:
            client_socket.close()
        assert wait_for(lambda: pending() == 1), "requests of clients that left still wait for the worker"
        stand_in.release.set()
        assert first.getresponse().status == 200
        first.close()
    assert stand_in.calls == 1


@pytest.mark.parametrize("side", [400, 10_000, 20_000, 70_000])
def test_pixel_limit_is_413_for_every_size(client, side):
    files = {"image": ("a.png", declared_png(side, side), "image/png"), "mask": ("m.png", declared_png(8, 8))}
    assert f"{side * side} pixels is over the limit" in error_of(client.post("/v1/inpaint", files=files), 413)
    answer = client.post("/v1/faces", json={"image": data_url(declared_png(side, side))})
    assert "over the limit" in error_of(answer, 413)


def test_tfserving_limits_are_413(client):
    over_batch = {"inputs": {"masked_image": np.zeros((3, 8, 8, 3)).tolist()}}
    assert "batch" in error_of(client.post("/v1/models/tiny:predict", json=over_batch), 413)
    over_pixels = {"inputs": {"masked_image": np.zeros((1, 301, 301, 3), np.uint8).tolist()}}
    assert "over the limit" in error_of(client.post("/v1/models/tiny:predict", json=over_pixels), 413)


def test_host_header_must_name_the_server():
    app = create_app({"telea": Inpainter.from_pretrained("telea")})
    with TestClient(app, base_url=LOCAL) as test_client:
        for host in ("localhost", "localhost:8000", "127.0.0.1:8000", "[::1]:8000", "LOCALHOST"):
            assert test_client.get("/v1/models", headers={"host": host}).status_code == 200, host
        for host in ("evil.example", "evil.example:8000", "127.0.0.1.evil.example", "", "localhost.evil:80"):
            assert "Host" in error_of(test_client.get("/v1/models", headers={"host": host}), 400), host
    other = create_app({"telea": Inpainter.from_pretrained("telea")}, allowed_hosts=["box.lan"])
    with TestClient(other, base_url="http://box.lan:8000") as test_client:
        assert test_client.get("/healthz").status_code == 200
        error_of(test_client.get("/healthz", headers={"host": "localhost"}), 400)


def test_cross_origin_posts_are_refused_unless_allowed(photo):
    body = json_inpaint_body(photo, "telea")
    headers = {"content-type": "application/json"}
    app = create_app({"telea": Inpainter.from_pretrained("telea")})
    with TestClient(app, base_url="http://127.0.0.1:8000") as test_client:
        same = test_client.post("/v1/inpaint", content=body, headers={**headers, "origin": "http://127.0.0.1:8000"})
        assert same.status_code == 200, same.text  # the bundled web page
        for origin in ("http://evil.example", "null", "http://127.0.0.1:9999", "http://localhost:8000"):
            answer = test_client.post("/v1/inpaint", content=body, headers={**headers, "origin": origin})
            assert "origin" in error_of(answer, 403), origin
        assert test_client.get("/v1/models", headers={"origin": "http://evil.example"}).status_code == 200
    allowed = create_app({"telea": Inpainter.from_pretrained("telea")}, cors_origins=["https://app.example"])
    with TestClient(allowed, base_url=LOCAL) as test_client:
        answer = test_client.post("/v1/inpaint", content=body, headers={**headers, "origin": "https://app.example"})
        assert answer.status_code == 200 and answer.headers["access-control-allow-origin"] == "https://app.example"
        preflight = {"origin": "https://app.example", "access-control-request-method": "POST",
                     "access-control-request-headers": "content-type"}  # fmt: skip
        answer = test_client.options("/v1/inpaint", headers=preflight)
        assert answer.status_code == 200 and "POST" in answer.headers["access-control-allow-methods"]
        answer = test_client.options("/v1/inpaint", headers={**preflight, "origin": "https://evil.example"})
        assert "origin" in error_of(answer, 403)


def test_serve_command_passes_allowed_hosts_and_cors_origins(monkeypatch, capsys, photo):
    import uvicorn

    from faceinpaint.cli import main

    served = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: served.update(app=app, **options))
    code = main(["serve", "--weights", "telea", "--host", "0.0.0.0", "--allowed-hosts", "box.lan", "10.0.0.7",
                     "--cors-origin", "https://app.example"])  # fmt: skip
    assert code == 0 and served["host"] == "0.0.0.0"
    assert "anyone who can reach this machine" in capsys.readouterr().err
    body, headers = json_inpaint_body(photo, "telea"), {"content-type": "application/json"}
    with TestClient(served["app"], base_url="http://box.lan:8000") as test_client:
        assert test_client.get("/healthz").status_code == 200
        assert test_client.get("/healthz", headers={"host": "10.0.0.7:8000"}).status_code == 200
        error_of(test_client.get("/healthz", headers={"host": "evil.example"}), 400)
        answer = test_client.post("/v1/inpaint", content=body, headers={**headers, "origin": "https://app.example"})
        assert answer.status_code == 200, answer.text
