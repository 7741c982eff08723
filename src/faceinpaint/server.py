"""The HTTP server: REST API, TensorFlow Serving-compatible predict, health, and the web app at `/`.

Endpoints (OpenAPI docs at /docs):
    POST /v1/inpaint                 multipart (image, mask, reference?, model?, format?, align?) -> PNG / JPEG,
                                     or the same fields as JSON with base64 images -> JSON with a base64 image
    POST /v1/faces                   multipart or JSON image -> face boxes, five points and eyes / mouth masks
    GET  /v1/models                  the served models; GET /healthz: liveness and queue
    POST /v1/models/{name}:predict   TF-Serving's REST body (see tfserving.py); GET /v1/models/{name}: its status
Every error is a JSON `{"error": "<one line>"}` with a 4xx status (503 when the worker queue is full), never a
traceback. Inference runs in a bounded thread pool, so a slow model cannot pile up unbounded work.
"""

import asyncio
import base64
import binascii
import io
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, UnidentifiedImageError

from faceinpaint import __version__, tfserving
from faceinpaint.errors import InpaintError
from faceinpaint.images import mask_to_bool

WEB_DIR = Path(__file__).parent / "web"
SEED_MODEL_NAME = "two_face_model"  # the name seed 001's clients ask TF Serving for
PRESET_PARTS = ("eyes", "mouth")
MAX_FACES = 5
FORMATS = {"png": ("PNG", "image/png"), "jpeg": ("JPEG", "image/jpeg")}


@dataclass(frozen=True)
class Limits:
    """What one request may ask for; larger requests get a 413 before any work is done."""

    max_upload_bytes: int = 20 * 2**20  # request body
    max_pixels: int = 16_000_000  # per image, checked before decoding
    max_batch: int = 8  # images per TF-Serving request
    workers: int = 1  # inference threads (each uses torch's intra-op threads)
    queue: int = 16  # requests allowed to wait for a worker; more get a 503


class HTTPError(Exception):
    """An error answered as `{"error": message}` with this status."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class WorkerPool:
    """A thread pool that refuses work (503) instead of queueing without bound."""

    def __init__(self, workers: int, queue: int):
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="faceinpaint")
        self.capacity = workers + queue
        self.pending = 0  # running + waiting; only touched on the event loop's thread

    async def run(self, function, *args):
        if self.pending >= self.capacity:
            raise HTTPError(503, f"the server is busy ({self.pending} requests in progress); retry shortly")
        self.pending += 1
        try:
            return await asyncio.wrap_future(self.executor.submit(function, *args))
        finally:
            self.pending -= 1


class _BodyLimit:
    """ASGI middleware: a body over the limit is a 413, by Content-Length or while it streams in."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        from fastapi.responses import JSONResponse

        length = dict(scope["headers"]).get(b"content-length", b"0")
        message = f"the request body is over the limit of {self.limit} bytes"
        if not length.isdigit() or int(length) > self.limit:
            return await JSONResponse({"error": message}, 413)(scope, receive, send)
        received = 0

        async def limited_receive():
            nonlocal received
            event = await receive()
            received += len(event.get("body", b""))
            if received > self.limit:
                raise HTTPError(413, message)
            return event

        await self.app(scope, limited_receive, send)


def decode_image(data: bytes, what: str, max_pixels: int) -> Image.Image:
    """Uploaded bytes -> PIL image (RGB, RGBA, L or LA), the size checked before the pixels are decoded."""
    try:
        with Image.open(io.BytesIO(data)) as opened:
            width, height = opened.size
            if width * height > max_pixels:
                raise HTTPError(413, f"{what}: {width}x{height} is over the limit of {max_pixels} pixels")
            opened.load()
            image = opened.copy()
    except UnidentifiedImageError:
        raise HTTPError(415, f"{what}: not an image (send PNG, JPEG or WebP)") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise HTTPError(400, f"{what}: cannot decode it ({error})") from None
    return image if image.mode in ("RGB", "RGBA", "L", "LA") else image.convert("RGB")


def decode_base64(text: str, what: str) -> bytes:
    """Plain base64 or a data URL (`data:image/png;base64,...`) -> bytes."""
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise HTTPError(400, f"{what}: not valid base64") from None


def encode(image: Image.Image, image_format: str) -> bytes:
    pil_format = FORMATS[image_format][0]
    if pil_format == "JPEG" and image.mode in ("RGBA", "LA"):
        image = image.convert(image.mode[:-1])
    stream = io.BytesIO()
    image.save(stream, format=pil_format, **({"quality": 95} if pil_format == "JPEG" else {}))
    return stream.getvalue()


def data_url(data: bytes, image_format: str = "png") -> str:
    return f"data:{FORMATS[image_format][1]};base64,{base64.b64encode(data).decode()}"


def describe(name: str, inpainter) -> dict:
    """One entry of GET /v1/models."""
    network = inpainter.model is not None
    return {
        "name": name,
        "kind": "network" if network else "classical",
        "arch": inpainter.config.get("arch") if network else inpainter.config.get("method"),
        "resolution": inpainter.resolution,
        "reference": inpainter.uses_reference,
        "backend": getattr(inpainter, "backend", "torch") if network else None,
    }


def find_faces(image: np.ndarray) -> dict:
    """Faces of a uint8 RGB photo for the web app: box, five points, and eyes / mouth masks as PNG data URLs."""
    from faceinpaint.faces import detect_faces, faces_available

    if not faces_available():
        return {"available": False, "faces": []}
    from faceinpaint.part_masks import part_mask

    faces = []
    for face in detect_faces(image, "hog", 68)[:MAX_FACES]:
        entry = {"box": [float(v) for v in face.box], "score": face.score, "points": face.points.tolist()}
        if face.landmarks is not None:
            masks = {part: part_mask([face.landmarks], image.shape[:2], [part]) for part in PRESET_PARTS}
            entry["parts"] = {
                part: data_url(encode(Image.fromarray(hole.astype(np.uint8) * 255, "L"), "png"))
                for part, hole in masks.items()
            }
        faces.append(entry)
    return {"available": True, "faces": faces}


def create_app(inpainters: dict, limits: Limits | None = None, aliases: dict[str, str] | None = None):
    """Build the FastAPI app that serves these models.

    Args:
        inpainters: {name: Inpainter}, the first one the default. A list is taken as well (names from `.name`).
        limits: request limits and the worker pool's size; Limits() by default.
        aliases: extra names for served models, e.g. {"two_face_model": "deepfillv2-face-256"}. By default
            seed 001's `two_face_model` names the first reference-guided model, else the default model.
    Returns:
        A FastAPI app; run it with uvicorn (see `serve`).
    """
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response
    from fastapi.staticfiles import StaticFiles
    from pydantic import BaseModel, Field, ValidationError
    from starlette.exceptions import HTTPException as StarletteHTTPException

    if not isinstance(inpainters, dict):
        inpainters = {inpainter.name: inpainter for inpainter in inpainters}
    if not inpainters:
        raise InpaintError("the server needs at least one model")
    limits = limits or Limits()
    default = next(iter(inpainters))
    guided = [name for name, inpainter in inpainters.items() if inpainter.uses_reference]
    aliases = {SEED_MODEL_NAME: (guided or [default])[0], **(aliases or {})}
    for alias, target in aliases.items():
        if target not in inpainters:
            raise InpaintError(f"alias {alias}={target}: {target!r} is not a served model")
    pool = WorkerPool(limits.workers, limits.queue)

    class Options(BaseModel):
        """The text fields of POST /v1/inpaint."""

        model: str | None = Field(None, description="a name from GET /v1/models; default: the first served")
        format: Literal["png", "jpeg"] = Field("png", description="of the answer")
        align: Literal["auto", "always", "never"] = Field("auto", description="align faces of whole photos")

    class InpaintJSON(Options):
        """POST /v1/inpaint as JSON: images as base64 or data URLs."""

        image: str = Field(description="the photo or face crop (PNG / JPEG / WebP), base64 or a data URL")
        mask: str = Field(description="same size as the image; alpha (RGBA) or grey above 127 = hole")
        reference: str | None = Field(None, description="a photo of the same person, for reference-guided models")

    app = FastAPI(
        title="faceinpaint",
        version=__version__,
        description='Complete masked face photos. The web app is at `/`; errors are `{"error": message}`.',
    )
    app.add_middleware(_BodyLimit, limit=limits.max_upload_bytes)

    def error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
        return JSONResponse({"error": " ".join(str(message).split())}, status, headers=headers)

    @app.exception_handler(HTTPError)
    async def _http_error(request, exc: HTTPError):
        return error(exc.status, str(exc), {"Retry-After": "1"} if exc.status == 503 else None)

    @app.exception_handler(InpaintError)
    async def _inpaint_error(request, exc: InpaintError):
        return error(400, str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _starlette_error(request, exc: StarletteHTTPException):
        return error(exc.status_code, exc.detail)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request, exc: RequestValidationError):
        return error(422, "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))

    @app.exception_handler(Exception)
    async def _internal_error(request, exc: Exception):
        return error(500, f"internal error ({type(exc).__name__}); see the server log")

    def pick(name: str | None):
        name = aliases.get(name, name) if name else default
        if name not in inpainters:
            raise HTTPError(404, f"unknown model {name!r}; served: {', '.join(inpainters)}")
        return name, inpainters[name]

    async def read_fields(request: Request, files: tuple[str, ...]) -> dict:
        """The request's fields, multipart or JSON; file fields as bytes, text fields as strings."""
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind == "multipart/form-data":
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
        if kind == "application/json":
            try:
                body = json.loads(await request.body())
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise HTTPError(400, f"malformed JSON: {exc}") from None
            if not isinstance(body, dict):
                raise HTTPError(400, "the JSON body must be an object")
            return body
        raise HTTPError(415, f"content type {kind or '(none)'!r}: send multipart/form-data or application/json")

    def options(fields: dict) -> Options:
        try:
            return Options(**{key: fields[key] for key in Options.model_fields if key in fields})
        except ValidationError as exc:
            raise HTTPError(
                422, "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())
            ) from None

    def image_field(fields: dict, key: str) -> Image.Image | None:
        value = fields.get(key)
        if value is None:
            return None
        data = value if isinstance(value, bytes) else decode_base64(value, key)
        return decode_image(data, key, limits.max_pixels)

    schema = {"type": "object", "properties": {k: {"type": "string", "format": "binary"} for k in ("image", "mask")}}
    body_docs = {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {"schema": schema},
                "application/json": {"schema": InpaintJSON.model_json_schema()},
            },
        }
    }

    @app.post("/v1/inpaint", summary="Inpaint one image", openapi_extra=body_docs)
    async def inpaint(request: Request):
        """multipart -> the image itself (PNG or JPEG); JSON -> `{"image": data URL, "model", "width", ...}`."""
        fields = await read_fields(request, ("image", "mask", "reference"))
        chosen = options(fields)
        name, inpainter = pick(chosen.model)
        if not fields.get("image") or not fields.get("mask"):
            raise HTTPError(422, "image and mask are both required")
        image, mask = image_field(fields, "image"), image_field(fields, "mask")
        reference = image_field(fields, "reference")
        hole = mask_to_bool(mask)
        if not hole.any():
            raise HTTPError(400, "the mask is empty: paint the area to fill first")

        def work():
            start = time.perf_counter()
            result = inpainter(image, hole, reference if inpainter.uses_reference else None, align=chosen.align)
            return encode(result, chosen.format), 1000.0 * (time.perf_counter() - start)

        data, ms = await pool.run(work)
        headers = {"X-Faceinpaint-Model": name, "X-Faceinpaint-Ms": f"{ms:.1f}"}
        if isinstance(fields.get("image"), bytes):
            return Response(data, media_type=FORMATS[chosen.format][1], headers=headers)
        width, height = image.size
        result = {"image": data_url(data, chosen.format), "model": name, "width": width, "height": height}
        return JSONResponse({**result, "format": chosen.format, "ms": round(ms, 1)}, headers=headers)

    @app.post("/v1/faces", summary="Find faces (boxes, points, eyes / mouth masks)", openapi_extra=body_docs)
    async def faces(request: Request):
        """`{"available": false}` when the face pipeline (faceinpaint[faces]) is not installed."""
        image = image_field(await read_fields(request, ("image",)), "image")
        if image is None:
            raise HTTPError(422, "image is required")
        return await pool.run(find_faces, np.asarray(image.convert("RGB")))

    @app.get("/v1/models", summary="The served models")
    async def models():
        from faceinpaint.faces import faces_available

        listed = [describe(name, inpainter) for name, inpainter in inpainters.items()]
        return {"models": listed, "default": default, "aliases": aliases, "faces": faces_available()}

    @app.get("/healthz", summary="Liveness and queue length")
    async def healthz():
        return {"status": "ok", "models": len(inpainters), "pending": pool.pending, "capacity": pool.capacity}

    @app.get("/v1/models/{name}", summary="TF-Serving model status")
    async def model_status(name: str):
        pick(name)
        return {"model_version_status": [{"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK"}}]}

    @app.post("/v1/models/{name}:predict", summary="TF-Serving predict (seed 001's REST body)")
    async def predict(name: str, request: Request):
        """`{"inputs": {"masked_image": [N,H,W,3]}}` or `{"instances": [...]}`, floats in [0, 1]; see tfserving.py."""
        _, inpainter = pick(name)
        raw = await request.body()

        def work():
            try:
                body = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise HTTPError(400, f"malformed JSON: {exc}") from None
            pixels, hole, reference, rows = tfserving.parse_predict(body, limits.max_batch, limits.max_pixels)
            return tfserving.answer(tfserving.predict(inpainter, pixels, hole, reference), rows)

        return JSONResponse(await pool.run(work))

    app.mount("/", StaticFiles(directory=WEB_DIR, html=True), name="web")
    return app


def serve(inpainters: dict, host: str = "127.0.0.1", port: int = 8000, limits: Limits | None = None, **kwargs):
    """Run the server with uvicorn until interrupted (localhost only unless `host` says otherwise)."""
    import uvicorn

    uvicorn.run(create_app(inpainters, limits, **kwargs), host=host, port=port, log_level="info")
