"""The HTTP server: REST API, TensorFlow Serving-compatible predict, health, and the web app at `/`.

Endpoints (OpenAPI docs at /docs):
    POST /v1/inpaint                 multipart (image, mask, reference?, model?, format?, align?) -> PNG / JPEG,
                                     or the same fields as JSON with base64 images -> JSON with a base64 image
    POST /v1/faces                   multipart or JSON image -> face boxes, five points and eyes / mouth masks
    GET  /v1/models                  the served models; GET /healthz: liveness and queue
    POST /v1/models/{name}:predict   TF-Serving's REST body (see tfserving.py); GET /v1/models/{name}: its status
Every error is a JSON `{"error": "<one line>"}` with a 4xx status (503 when the worker queue is full), never a
traceback. Uploads are decoded by `images.py` (the CLI's decoder) in a bounded thread pool, after the request has
been admitted to its queue; work queued for a client that has gone is dropped. Requests must name this server in
their `Host` header, and browsers' POSTs from pages of other origins are refused unless allowed (CORS).
"""

import asyncio
import base64
import binascii
import io
import json
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import numpy as np
from PIL import Image

from faceinpaint import __version__, tfserving
from faceinpaint.errors import InpaintError, NotAnImageError, OverLimitError
from faceinpaint.images import decode_image, decode_mask

WEB_DIR = Path(__file__).parent / "web"
SEED_MODEL_NAME = "two_face_model"  # the name seed 001's clients ask TF Serving for
PRESET_PARTS = ("eyes", "mouth")
MAX_FACES = 5
FORMATS = {"png": ("PNG", "image/png"), "jpeg": ("JPEG", "image/jpeg")}
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    """What one request may ask for; larger requests get a 413 before any work is done."""

    max_upload_bytes: int = 20 * 2**20  # request body
    max_pixels: int = 16_000_000  # per image, checked before decoding
    max_batch: int = 8  # images per TF-Serving request
    workers: int = 1  # inference threads (each uses torch's intra-op threads)
    queue: int = 16  # requests allowed to wait for a worker; more get a 503

    def __post_init__(self):
        for name in ("max_upload_bytes", "max_pixels", "max_batch", "workers"):
            if getattr(self, name) < 1:
                raise InpaintError(f"server limit {name} must be at least 1, got {getattr(self, name)}")
        if self.queue < 0:
            raise InpaintError(f"server limit queue must be 0 or more, got {self.queue}")


class HTTPError(Exception):
    """An error answered as `{"error": message}` with this status."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def status_of(error: InpaintError) -> int:
    """The HTTP status of a bad input: 413 over a limit, 415 not an image, else 400."""
    return 413 if isinstance(error, OverLimitError) else 415 if isinstance(error, NotAnImageError) else 400


def error_response(status: int, message: str, headers: dict | None = None):
    from fastapi.responses import JSONResponse

    return JSONResponse({"error": " ".join(str(message).split())}, status, headers=headers)


async def _client_gone(receive) -> None:
    """Return once the client has closed its connection; only call it after the request body has been read."""
    while (await receive())["type"] != "http.disconnect":
        await asyncio.sleep(0.1)  # no ASGI server should send more after the body, but never spin


class WorkerPool:
    """A thread pool that refuses work (503) instead of queueing without bound, and drops the work of clients that
    have gone while it waited."""

    def __init__(self, workers: int, queue: int):
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="faceinpaint")
        self.capacity = workers + queue
        self.pending = 0  # admitted and not finished (running or waiting); only changed on the event loop's thread

    def _finished(self) -> None:
        self.pending -= 1

    async def run(self, function, *args, receive=None):
        """`function(*args)` in a worker thread, or a 503 when the pool is full.

        With `receive` (the request's ASGI receive), a client that closes its connection while the job waits takes
        it out of the queue: it never starts. A job already running finishes (PyTorch cannot be interrupted).
        """
        if self.pending >= self.capacity:
            raise HTTPError(503, f"the server is busy ({self.pending} requests in progress); retry shortly")
        loop = asyncio.get_running_loop()

        def finished(_) -> None:  # in the worker's thread, or at once on this one when a waiting job is cancelled
            try:
                loop.call_soon_threadsafe(self._finished)
            except RuntimeError:  # the event loop has closed: the server is gone, and the count with it
                pass

        self.pending += 1
        job = self.executor.submit(function, *args)
        job.add_done_callback(finished)
        result = asyncio.wrap_future(job)
        if receive is None:
            return await result
        gone = asyncio.ensure_future(_client_gone(receive))
        try:
            await asyncio.wait((result, gone), return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if not result.done():
            result.cancel()  # cancels the job too, unless a worker has started it
            raise HTTPError(499, "the client closed the connection")
        return result.result()


class _BodyLimit:
    """ASGI middleware: a body over the limit is a 413, by Content-Length or while it streams in."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length", b"0")
        message = f"the request body is over the limit of {self.limit} bytes"
        if not length.isdigit() or int(length) > self.limit:
            return await error_response(413, message)(scope, receive, send)
        received = 0

        async def limited_receive():
            nonlocal received
            event = await receive()
            received += len(event.get("body", b""))
            if received > self.limit:
                raise HTTPError(413, message)
            return event

        await self.app(scope, limited_receive, send)


def _host_name(host: str) -> str:
    """The name in a Host header, lowercase and without the port: "[::1]:8000" -> "::1", "Box:80" -> "box"."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    name, colon, port = host.rpartition(":")
    return name if colon and port.isdigit() and ":" not in name else host


def _same_origin(origin: str, host: str) -> bool:
    """Whether a browser's Origin header names the server the request was sent to (its Host header)."""
    page, server = urlsplit(origin), urlsplit(f"//{host}")
    if page.scheme not in ("http", "https") or not page.hostname:
        return False
    default = 443 if page.scheme == "https" else 80
    try:
        return page.hostname == server.hostname and (page.port or default) == (server.port or default)
    except ValueError:  # a port that is not a number
        return False


def check_origin_option(origin: str) -> str:
    """A --cors-origin value: scheme://host[:port] (what browsers send as Origin), or * for any."""
    parts = urlsplit(origin)
    if origin != "*" and (parts.scheme not in ("http", "https") or not parts.netloc or parts.path or parts.query):
        raise InpaintError(f"CORS origin {origin!r}: expected scheme://host[:port], e.g. https://app.example.com")
    return origin


class _HostAndOrigin:
    """ASGI middleware against DNS rebinding and cross-site use.

    A request whose Host header names no allowed host is a 400 (a page of another site that resolved its own name
    to this machine); a POST (any method but GET / HEAD) whose Origin is not the server's own nor an allowed one
    is a 403 (a page of another site using the user's browser). Clients that send no Origin (curl, Python) pass.
    """

    def __init__(self, app, allowed_hosts, cors_origins):
        self.app = app
        self.hosts = {_host_name(host) for host in allowed_hosts}
        self.origins = set(cors_origins)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        host = headers.get(b"host", b"").decode("latin-1")
        origin = headers.get(b"origin", b"").decode("latin-1")
        if "*" not in self.hosts and _host_name(host) not in self.hosts:
            allowed = ", ".join(sorted(self.hosts))
            message = f"the Host header {host!r} does not name this server ({allowed}; more with --allowed-hosts)"
            return await error_response(400, message)(scope, receive, send)
        if origin and scope["method"] not in ("GET", "HEAD"):
            if "*" not in self.origins and origin not in self.origins and not _same_origin(origin, host):
                message = f"requests from web pages of origin {origin!r} are refused (allow it with --cors-origin)"
                return await error_response(403, message)(scope, receive, send)
        await self.app(scope, receive, send)


class _CatchAll:
    """ASGI middleware: an exception that no handler answered (a bug) becomes a logged 500 JSON answer.

    Starlette's own last handler answers and then re-raises, and uvicorn closes the connection on that, so a
    keep-alive client's next, valid request would fail too.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracked_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked_send)
        except Exception as exc:
            if started:
                raise
            log.exception("internal error answering %s %s", scope["method"], scope["path"])
            message = f"internal error ({type(exc).__name__}); see the server log"
            await error_response(500, message)(scope, receive, send)


def parse_json(raw: bytes):
    """A request body -> its JSON value; whatever Python's parser refuses is a 400."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError as error:
        raise HTTPError(400, f"malformed JSON: {error}") from None
    except RecursionError:
        raise HTTPError(400, "malformed JSON: nested too deeply") from None
    except ValueError as error:  # not UTF-8, or an integer of over 4300 digits
        raise HTTPError(400, f"malformed JSON: {str(error).partition(';')[0]}") from None


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


def create_app(
    inpainters: dict,
    limits: Limits | None = None,
    aliases: dict[str, str] | None = None,
    allowed_hosts: Sequence[str] = LOOPBACK_HOSTS,
    cors_origins: Sequence[str] = (),
):
    """Build the FastAPI app that serves these models.

    Args:
        inpainters: {name: Inpainter}, the first one the default. A list is taken as well (names from `.name`).
        limits: request limits and the worker pool's size; Limits() by default.
        aliases: extra names for served models, e.g. {"two_face_model": "deepfillv2-face-256"}. By default
            seed 001's `two_face_model` names the first reference-guided model, else the default model.
        allowed_hosts: the names a request's Host header may give (any port); "*" allows any. By default
            localhost only; `serve` adds the address it listens on.
        cors_origins: origins (`https://app.example.com`, or "*") whose web pages may call the API besides the
            server's own; they get CORS headers, other origins' POSTs a 403.
    Returns:
        A FastAPI app; run it with uvicorn (see `serve`).
    """
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.middleware.cors import CORSMiddleware
    from fastapi.responses import JSONResponse, Response
    from fastapi.staticfiles import StaticFiles
    from pydantic import BaseModel, Field, ValidationError
    from starlette.exceptions import HTTPException as StarletteHTTPException

    if not isinstance(inpainters, dict):
        inpainters = {inpainter.name: inpainter for inpainter in inpainters}
    if not inpainters:
        raise InpaintError("the server needs at least one model")
    limits = limits or Limits()
    cors_origins = [check_origin_option(origin) for origin in cors_origins]
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

    class FacesJSON(BaseModel):
        """POST /v1/faces as JSON."""

        image: str = Field(description="the photo (PNG / JPEG / WebP), base64 or a data URL")

    app = FastAPI(
        title="faceinpaint",
        version=__version__,
        description='Complete masked face photos. The web app is at `/`; errors are `{"error": message}`.',
    )
    # Added innermost first: _CatchAll wraps everything, then Host / Origin, CORS headers, the body limit.
    app.add_middleware(_BodyLimit, limit=limits.max_upload_bytes)
    if cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Content-Type"],
            expose_headers=["X-Faceinpaint-Model", "X-Faceinpaint-Ms"],
            max_age=600,
        )
    app.add_middleware(_HostAndOrigin, allowed_hosts=allowed_hosts, cors_origins=cors_origins)
    app.add_middleware(_CatchAll)

    @app.exception_handler(HTTPError)
    async def _http_error(request, exc: HTTPError):
        return error_response(exc.status, str(exc), {"Retry-After": "1"} if exc.status == 503 else None)

    @app.exception_handler(InpaintError)
    async def _inpaint_error(request, exc: InpaintError):
        return error_response(status_of(exc), str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _starlette_error(request, exc: StarletteHTTPException):
        return error_response(exc.status_code, exc.detail)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request, exc: RequestValidationError):
        return error_response(422, "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))

    def pick(name: str | None):
        name = aliases.get(name, name) if name else default
        if name not in inpainters:
            raise HTTPError(404, f"unknown model {name!r}; served: {', '.join(inpainters)}")
        return name, inpainters[name]

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

    part = {"type": "string", "format": "binary"}
    text_fields = {key: {"type": "string"} for key in Options.model_fields}

    def body_docs(json_model, files: tuple[str, ...], texts: dict) -> dict:
        multipart = {"type": "object", "properties": {**dict.fromkeys(files, part), **texts}, "required": ["image"]}
        content = {"multipart/form-data": {"schema": multipart}, "application/json": {"schema": json_model}}
        return {"requestBody": {"required": True, "content": content}}

    inpaint_docs = body_docs(InpaintJSON.model_json_schema(), ("image", "mask", "reference"), text_fields)
    inpaint_docs["requestBody"]["content"]["multipart/form-data"]["schema"]["required"] = ["image", "mask"]

    @app.post("/v1/inpaint", summary="Inpaint one image", openapi_extra=inpaint_docs)
    async def inpaint(request: Request):
        """multipart -> the image itself (PNG or JPEG); JSON -> `{"image": data URL, "model", "width", ...}`."""
        upload = await read_upload(request, ("image", "mask", "reference"))

        def work():
            fields, chosen = parse_fields(upload, InpaintJSON)
            name, inpainter = pick(chosen.model)
            if not fields.get("image") or not fields.get("mask"):
                raise HTTPError(422, "image and mask are both required")
            start = time.perf_counter()
            image = decode_image(file_field(fields, "image"), "image", limits.max_pixels)
            hole = decode_mask(file_field(fields, "mask"), "mask", limits.max_pixels)
            if not hole.any():
                raise HTTPError(400, "the mask is empty: paint the area to fill first")
            reference = file_field(fields, "reference") if inpainter.uses_reference else None
            reference = None if not reference else decode_image(reference, "reference", limits.max_pixels)
            result = inpainter(image, hole, reference, align=chosen.align)
            return name, chosen.format, image.size, encode(result, chosen.format), time.perf_counter() - start

        name, image_format, (width, height), data, seconds = await pool.run(work, receive=request.receive)
        headers = {"X-Faceinpaint-Model": name, "X-Faceinpaint-Ms": f"{1000 * seconds:.1f}"}
        if isinstance(upload, dict):
            return Response(data, media_type=FORMATS[image_format][1], headers=headers)
        result = {"image": data_url(data, image_format), "model": name, "width": width, "height": height}
        return JSONResponse({**result, "format": image_format, "ms": round(1000 * seconds, 1)}, headers=headers)

    faces_docs = body_docs(FacesJSON.model_json_schema(), ("image",), {})

    @app.post("/v1/faces", summary="Find faces (boxes, points, eyes / mouth masks)", openapi_extra=faces_docs)
    async def faces(request: Request):
        """`{"available": false}` when the face pipeline (faceinpaint[faces]) is not installed."""
        upload = await read_upload(request, ("image",))

        def work():
            data = file_field(parse_fields(upload, FacesJSON)[0], "image")
            if not data:
                raise HTTPError(422, "image is required")
            return find_faces(np.asarray(decode_image(data, "image", limits.max_pixels).convert("RGB")))

        return await pool.run(work, receive=request.receive)

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
            body = parse_json(raw)
            pixels, hole, reference, rows = tfserving.parse_predict(body, limits.max_batch, limits.max_pixels)
            return tfserving.answer(tfserving.predict(inpainter, pixels, hole, reference), rows)

        return JSONResponse(await pool.run(work, receive=request.receive))

    app.mount("/", StaticFiles(directory=WEB_DIR, html=True), name="web")
    return app


def serve(
    inpainters: dict,
    host: str = "127.0.0.1",
    port: int = 8000,
    limits: Limits | None = None,
    allowed_hosts: Sequence[str] = (),
    **kwargs,
):
    """Run the server with uvicorn until interrupted (localhost only unless `host` says otherwise).

    Requests must name `host`, localhost or one of `allowed_hosts` in their Host header; `kwargs` go to create_app.
    """
    import uvicorn

    app = create_app(inpainters, limits, allowed_hosts=[host, *LOOPBACK_HOSTS, *allowed_hosts], **kwargs)
    uvicorn.run(app, host=host, port=port, log_level="info")
