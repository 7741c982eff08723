"""Fuzzers (slow tier): property-based tests of the decoders and request parsers, schemathesis on the OpenAPI schema.

Each is bounded by a number of examples (a minute or less in all on a 2-core CPU); a failure prints the example and
a `@reproduce_failure` line to replay it.
"""

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("hypothesis")
pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from faceinpaint.errors import InpaintError, OverLimitError  # noqa: E402
from faceinpaint.images import decode_image, decode_mask, read_image, read_mask  # noqa: E402
from faceinpaint.inpainter import Inpainter  # noqa: E402
from faceinpaint.server import (  # noqa: E402
    Limits,
    create_app,
    tfserving,  # noqa: E402
)

# The decoders warn about what they reduce (16-bit, float) and the models about faces they miss: expected here.
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::UserWarning", "ignore::RuntimeWarning")]

# database=None: no .hypothesis/ folder in the checkout; every run draws new examples.
BOUNDED = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)
ORIENTATION = 0x0112
KEPT_MODES = ("RGB", "RGBA", "L", "LA")
# Formats and the modes Pillow writes in them; orientation tags only where Pillow writes EXIF.
WRITABLE = {
    "PNG": ("1", "L", "LA", "P", "RGB", "RGBA", "I;16"),
    "JPEG": ("L", "RGB", "CMYK"),
    "TIFF": ("1", "L", "P", "RGB", "RGBA", "CMYK", "I;16", "I", "F"),
    "BMP": ("1", "L", "P", "RGB"),
    "GIF": ("L", "P"),
    "WEBP": ("RGB", "RGBA"),
}
WITH_EXIF = ("PNG", "JPEG", "TIFF", "WEBP")


def picture(mode: str, width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65536, (height, width), dtype=np.uint16))
    if mode == "I":
        return Image.fromarray(rng.integers(-(2**20), 2**20, (height, width), dtype=np.int32))
    if mode == "F":
        values = rng.random((height, width)).astype(np.float32) * rng.choice([1.0, 1000.0])
        values[rng.random((height, width)) < 0.1] = rng.choice([np.nan, np.inf, -np.inf])
        return Image.fromarray(values)
    rgba = Image.fromarray(rng.integers(0, 256, (height, width, 4), dtype=np.uint8))
    return rgba.convert("RGB").convert(mode) if mode in ("1", "P", "CMYK", "L") else rgba.convert(mode)


@st.composite
def encoded_images(draw) -> tuple[bytes, tuple[int, int], int]:
    """A small image of any mode in any writable format, maybe with an EXIF orientation: (bytes, size, orientation)."""
    image_format = draw(st.sampled_from(sorted(WRITABLE)))
    mode = draw(st.sampled_from(WRITABLE[image_format]))
    width, height = draw(st.integers(1, 24)), draw(st.integers(1, 24))
    image = picture(mode, width, height, draw(st.integers(0, 2**32 - 1)))
    orientation = draw(st.integers(1, 8)) if image_format in WITH_EXIF else 1
    options = {}
    if orientation != 1:
        exif = Image.Exif()
        exif[ORIENTATION] = orientation
        options["exif"] = exif
    stream = io.BytesIO()
    image.save(stream, format=image_format, **options)
    return stream.getvalue(), (width, height), orientation


@st.composite
def damaged(draw) -> bytes:
    """An encoded image with some bytes overwritten and maybe cut short."""
    data = bytearray(draw(encoded_images())[0])
    for _ in range(draw(st.integers(1, 8))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data[: draw(st.integers(1, len(data)))])


def decodes_or_refuses(data: bytes, max_pixels: int = 10_000):
    """Decode as an image and as a mask: each is either a result in the documented form or an InpaintError."""
    results = []
    for decode, name in ((decode_image, "image"), (decode_mask, "mask")):
        try:
            results.append(decode(data, name, max_pixels))
        except InpaintError as error:
            assert "\n" not in str(error) and str(error).startswith(name)
            results.append(error)
    image, hole = results
    if not isinstance(image, Exception):
        assert image.mode in KEPT_MODES
    if not isinstance(hole, Exception):
        assert hole.dtype == bool and hole.ndim == 2
    return image, hole


@BOUNDED
@given(encoded_images(), st.integers(1, 600))
def test_every_writable_image_decodes_upright_or_over_the_limit(tmp_path_factory, sample, max_pixels):
    data, (width, height), orientation = sample
    if width * height > max_pixels:
        with pytest.raises(OverLimitError):
            decode_image(data, "image", max_pixels)
        return
    image, hole = decodes_or_refuses(data, max_pixels)
    upright = (height, width) if orientation >= 5 else (width, height)  # 5..8 swap the sides
    assert image.size == upright and hole.shape == upright[::-1]
    # One decoder: a file reads exactly like an upload of its bytes.
    path = tmp_path_factory.mktemp("fuzz") / "image"
    path.write_bytes(data)
    assert np.array_equal(np.asarray(read_image(path, max_pixels)), np.asarray(image))
    assert np.array_equal(read_mask(path, max_pixels), hole)


@BOUNDED
@given(st.one_of(damaged(), st.binary(max_size=600)))
def test_damaged_or_random_bytes_decode_or_raise_one_error(data):
    decodes_or_refuses(data)


numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.integers(-(10**400), 10**400), st.sampled_from([0, 0.5, 1])
)
json_values = st.recursive(
    st.none() | st.booleans() | numbers | st.text(max_size=4),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=40,
)


@st.composite
def arrays(draw) -> list:
    """Nested lists shaped [N, H, W, C] with small (maybe zero) sides, mostly valid values."""
    shape = draw(st.lists(st.integers(0, 4), min_size=1, max_size=5))
    values = np.asarray(draw(st.lists(st.sampled_from([0.0, 0.25, 1.0, 2.0, -1.0]), min_size=int(np.prod(shape)),
                                      max_size=int(np.prod(shape)))), dtype=float)  # fmt: skip
    return values.reshape(shape).tolist()


input_names = st.sampled_from([*tfserving.IMAGE_INPUTS, "mask", "other"])
predict_bodies = st.one_of(
    json_values,
    st.fixed_dictionaries({"inputs": st.dictionaries(input_names, arrays() | json_values, max_size=3)}),
    st.fixed_dictionaries({"instances": st.lists(st.dictionaries(input_names, arrays(), max_size=3), max_size=3)}),
    st.fixed_dictionaries({"instances": st.lists(arrays(), max_size=3)}),
)


@BOUNDED
@given(predict_bodies)
def test_tfserving_parser_returns_tensors_or_raises_one_error(body):
    try:
        pixels, hole, reference, rows = tfserving.parse_predict(body, max_batch=2, max_pixels=16)
    except InpaintError as error:
        assert "\n" not in str(error)
        return
    batch, _, height, width = pixels.shape
    assert pixels.shape[1] == 3 and 1 <= batch <= 2 and height * width <= 16
    assert pixels.min() >= -1 and pixels.max() <= 1 and hole.shape == (batch, 1, height, width)
    assert reference is None or (reference.shape[0] == batch and reference.shape[1] == 3)
    assert isinstance(rows, bool)


@pytest.fixture(scope="module")
def client():
    import torch

    torch.manual_seed(0)
    tiny = Inpainter.from_config("deepfillv2", {"width": 8}, 32, device="cpu")
    limits = Limits(max_upload_bytes=200_000, max_pixels=4096, max_batch=2, workers=1, queue=4)
    app = create_app({"telea": Inpainter.from_pretrained("telea"), "tiny": tiny}, limits)
    with TestClient(app, base_url="http://localhost") as test_client:
        yield test_client


def data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


inpaint_bodies = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {"image": encoded_images().map(lambda sample: data_url(sample[0])) | json_values},
        optional={
            "mask": encoded_images().map(lambda sample: data_url(sample[0])) | damaged().map(data_url) | json_values,
            "model": st.sampled_from(["telea", "tiny", "nope"]) | json_values,
            "align": st.sampled_from(["auto", "never", "always"]) | json_values,
            "format": st.sampled_from(["png", "jpeg", "gif"]),
            "reference": json_values,
        },
    ),
)
paths = st.sampled_from(["/v1/inpaint", "/v1/faces", "/v1/models/tiny:predict", "/v1/models/telea:predict"])


def answered_cleanly(response) -> None:
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"error"} and "\n" not in body["error"] and "Traceback" not in body["error"]


@BOUNDED
@given(paths, st.one_of(inpaint_bodies, predict_bodies))
def test_server_answers_every_json_body_without_a_500(client, path, body):
    answered_cleanly(
        client.post(path, content=json.dumps(body).encode(), headers={"content-type": "application/json"})
    )


@BOUNDED
@given(paths, st.binary(max_size=300), st.sampled_from(["application/json", "multipart/form-data; boundary=x", ""]))
def test_server_answers_every_byte_string_without_a_500(client, path, data, kind):
    answered_cleanly(client.post(path, content=data, headers={"content-type": kind}))


@BOUNDED
@given(encoded_images(), st.one_of(encoded_images().map(lambda sample: sample[0]), damaged()))
def test_server_answers_every_uploaded_pair_without_a_500(client, sample, mask):
    files = {"image": ("a", sample[0], "application/octet-stream"), "mask": ("m", mask, "image/png")}
    answered_cleanly(client.post("/v1/inpaint", files=files, data={"model": "telea", "align": "never"}))


schemathesis = pytest.importorskip("schemathesis")
# Built at import: schemathesis's lazy fixture-based loader does not work with pytest 9. Its requests go to the
# app in-process and name the host "testserver".
schema_app = create_app(
    {"telea": Inpainter.from_pretrained("telea")},
    Limits(max_upload_bytes=200_000, max_pixels=4096, max_batch=2, workers=1, queue=4),
    allowed_hosts=["testserver"],
)
api_schema = schemathesis.openapi.from_asgi("/openapi.json", schema_app)


@api_schema.parametrize()
@settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_schemathesis_finds_no_server_error(case):
    from schemathesis.checks import not_a_server_error

    case.call_and_validate(checks=[not_a_server_error])
