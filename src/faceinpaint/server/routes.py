"""The endpoints, their request models and the helpers they share, at module level (FastAPI imported here).

Each route finds what it serves in `request.app.state.served` (a `Served`, set by `create_app`): the models, the
default and the aliases, the limits and the worker pool. Decoding and inference run in the pool's threads.
"""

import time
from dataclasses import dataclass
from typing import Literal

import numpy as np
from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from faceinpaint.errors import InpaintError
from faceinpaint.images import decode_image, decode_mask
from faceinpaint.server import tfserving
from faceinpaint.server.payloads import FORMATS, data_url, decode_base64, describe, encode, find_faces, parse_json
from faceinpaint.server.pool import HTTPError, Limits, WorkerPool, error_response, status_of

router = APIRouter()


@dataclass
class Served:
    """What one app serves: {name: Inpainter} (the first the default), alias -> name, limits and the pool."""

    inpainters: dict
    default: str
    aliases: dict[str, str]
    limits: Limits
    pool: WorkerPool

    @property
    def reference_default(self) -> str | None:
        """The first served model that uses a reference photo: what a request with a reference and no model gets."""
        return next((name for name, inpainter in self.inpainters.items() if inpainter.uses_reference), None)

    def pick(self, name: str | None, with_reference: bool = False):
        """(name, Inpainter) of a requested model name or alias; for none, the default (the reference default when
        the request brings a reference and one is served); 404 for an unknown name."""
        fallback = (self.reference_default if with_reference else None) or self.default
        name = self.aliases.get(name, name) if name else fallback
        if name not in self.inpainters:
            raise HTTPError(404, f"unknown model {name!r}; served: {', '.join(self.inpainters)}")
        return name, self.inpainters[name]


class Options(BaseModel):
    """The text fields of POST /v1/inpaint."""

    model: str | None = Field(
        None, description="a name from GET /v1/models; default: the first served (with a reference, the first "
        "served reference model)"
    )  # fmt: skip
    format: Literal["png", "jpeg"] = Field("png", description="of the answer")
    align: Literal["auto", "always", "never"] = Field("auto", description="align faces of whole photos")


class InpaintJSON(Options):
    """POST /v1/inpaint as JSON: images as base64 or data URLs."""

    image: str = Field(description="the photo or face crop (PNG / JPEG / WebP), base64 or a data URL")
    mask: str = Field(description="same size as the image; alpha (RGBA) or grey above 127 = hole")
    reference: str | None = Field(None, description="a photo of the same person, for reference-guided models")


class FacesJSON(BaseModel):
    """POST /v1/faces as JSON."""

    image: str = Field(description="the photo (PNG / JPEG / WebP), base64 or a data URL")


async def http_error(request, exc: HTTPError):
    return error_response(exc.status, str(exc), {"Retry-After": "1"} if exc.status == 503 else None)


async def inpaint_error(request, exc: InpaintError):
    return error_response(status_of(exc), str(exc))


async def starlette_error(request, exc: StarletteHTTPException):
    return error_response(exc.status_code, exc.detail)


async def validation_error(request, exc: RequestValidationError):
    return error_response(422, "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))


EXCEPTION_HANDLERS = {
    HTTPError: http_error,
    InpaintError: inpaint_error,
    StarletteHTTPException: starlette_error,
    RequestValidationError: validation_error,
}


async def read_upload(request: Request, files: tuple[str, ...]) -> dict | bytes:
    """Multipart: the fields (file fields as bytes, text fields as strings). JSON: the raw body, for a worker."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/json":
        return await request.body()
    if kind != "multipart/form-data":
        raise HTTPError(415, f"content type {kind or '(none)'!r}: send multipart/form-data or application/json")
    form = await request.form(max_files=4, max_fields=16)
    fields = {}
    for key, value in form.multi_items():
        if key in files and hasattr(value, "read"):
            fields[key] = await value.read()
        elif key in files and value == "":
            continue  # an empty optional file field
        elif key in files:
            raise HTTPError(400, f"{key}: expected a file upload, got a text field")
        else:
            fields[key] = value
    return fields


def validated(model, values: dict):
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        messages = (f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())
        raise HTTPError(422, "; ".join(messages)) from None


def parse_fields(upload: dict | bytes, json_model) -> tuple[dict, BaseModel]:
    """In a worker: the fields of a `read_upload` result, checked (JSON against `json_model`), and options."""
    if isinstance(upload, dict):
        return upload, validated(Options, {key: upload[key] for key in Options.model_fields if key in upload})
    body = parse_json(upload)
    if not isinstance(body, dict):
        raise HTTPError(400, "the JSON body must be an object")
    checked = validated(json_model, body)
    return checked.model_dump(), checked


def file_field(fields: dict, key: str) -> bytes | None:
    value = fields.get(key)
    return value if value is None or isinstance(value, bytes) else decode_base64(value, key)


def body_docs(json_model, files: tuple[str, ...], texts: dict, required: list[str]) -> dict:
    """OpenAPI request body of an endpoint that takes multipart files or the same fields as JSON."""
    part = {"type": "string", "format": "binary"}
    multipart = {"type": "object", "properties": {**dict.fromkeys(files, part), **texts}, "required": required}
    content = {"multipart/form-data": {"schema": multipart}, "application/json": {"schema": json_model}}
    return {"requestBody": {"required": True, "content": content}}


TEXT_FIELDS = {key: {"type": "string"} for key in Options.model_fields}
INPAINT_DOCS = body_docs(InpaintJSON.model_json_schema(), ("image", "mask", "reference"), TEXT_FIELDS,
                         ["image", "mask"])  # fmt: skip
FACES_DOCS = body_docs(FacesJSON.model_json_schema(), ("image",), {}, ["image"])


def inpaint_upload(served: Served, upload: dict | bytes) -> tuple:
    """In a worker: decode, inpaint, encode. -> (model name, format, (width, height), encoded bytes, seconds)."""
    fields, chosen = parse_fields(upload, InpaintJSON)
    name, inpainter = served.pick(chosen.model, with_reference=bool(fields.get("reference")))
    if not fields.get("image") or not fields.get("mask"):
        raise HTTPError(422, "image and mask are both required")
    start, limit = time.perf_counter(), served.limits.max_pixels
    image = decode_image(file_field(fields, "image"), "image", limit)
    hole = decode_mask(file_field(fields, "mask"), "mask", limit)
    if not hole.any():
        raise HTTPError(400, "the mask is empty: paint the area to fill first")
    reference = file_field(fields, "reference") if inpainter.uses_reference else None
    reference = None if not reference else decode_image(reference, "reference", limit)
    result = inpainter(image, hole, reference, align=chosen.align)
    return name, chosen.format, image.size, encode(result, chosen.format), time.perf_counter() - start


@router.post("/v1/inpaint", summary="Inpaint one image", openapi_extra=INPAINT_DOCS)
async def inpaint(request: Request):
    """multipart -> the image itself (PNG or JPEG); JSON -> `{"image": data URL, "model", "width", ...}`."""
    served = request.app.state.served
    upload = await read_upload(request, ("image", "mask", "reference"))
    answer = await served.pool.run(inpaint_upload, served, upload, receive=request.receive)
    name, image_format, (width, height), data, seconds = answer
    headers = {"X-Faceinpaint-Model": name, "X-Faceinpaint-Ms": f"{1000 * seconds:.1f}"}
    if isinstance(upload, dict):
        return Response(data, media_type=FORMATS[image_format][1], headers=headers)
    result = {"image": data_url(data, image_format), "model": name, "width": width, "height": height}
    return JSONResponse({**result, "format": image_format, "ms": round(1000 * seconds, 1)}, headers=headers)


def faces_upload(served: Served, upload: dict | bytes) -> dict:
    """In a worker: the faces of the uploaded image (see payloads.find_faces)."""
    data = file_field(parse_fields(upload, FacesJSON)[0], "image")
    if not data:
        raise HTTPError(422, "image is required")
    return find_faces(np.asarray(decode_image(data, "image", served.limits.max_pixels).convert("RGB")))


@router.post("/v1/faces", summary="Find faces (boxes, points, eyes / mouth masks)", openapi_extra=FACES_DOCS)
async def faces(request: Request):
    """`{"available": false}` when the face pipeline (faceinpaint[faces]) is not installed."""
    served = request.app.state.served
    upload = await read_upload(request, ("image",))
    return await served.pool.run(faces_upload, served, upload, receive=request.receive)


@router.get("/v1/models", summary="The served models")
async def models(request: Request):
    from faceinpaint.faces.detect import faces_available

    served = request.app.state.served
    listed = [describe(name, inpainter) for name, inpainter in served.inpainters.items()]
    return {"models": listed, "default": served.default, "reference_default": served.reference_default,
            "aliases": served.aliases, "faces": faces_available()}  # fmt: skip


@router.get("/healthz", summary="Liveness and queue length")
async def healthz(request: Request):
    served = request.app.state.served
    return {"status": "ok", "models": len(served.inpainters), "pending": served.pool.pending,
            "capacity": served.pool.capacity}  # fmt: skip


@router.get("/v1/models/{name}", summary="TF-Serving model status")
async def model_status(name: str, request: Request):
    request.app.state.served.pick(name)
    return {"model_version_status": [{"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK"}}]}


def predict_body(inpainter, raw: bytes, limits: Limits) -> dict:
    """In a worker: a TF-Serving predict body -> its answer (see tfserving.py)."""
    pixels, hole, reference, rows = tfserving.parse_predict(parse_json(raw), limits.max_batch, limits.max_pixels)
    return tfserving.answer(tfserving.predict(inpainter, pixels, hole, reference), rows)


@router.post("/v1/models/{name}:predict", summary="TF-Serving predict (seed 001's REST body)")
async def predict(name: str, request: Request):
    """`{"inputs": {"masked_image": [N,H,W,3]}}` or `{"instances": [...]}`, floats in [0, 1]; see tfserving.py."""
    served = request.app.state.served
    _, inpainter = served.pick(name)
    raw = await request.body()
    return JSONResponse(await served.pool.run(predict_body, inpainter, raw, served.limits, receive=request.receive))
