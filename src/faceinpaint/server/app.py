"""`create_app` (the FastAPI app over a set of models: middleware, routes, the web app) and `serve` (uvicorn)."""

from collections.abc import Sequence
from pathlib import Path

from faceinpaint import __version__
from faceinpaint.errors import InpaintError
from faceinpaint.server.middleware import BodyLimit, CatchAll, HostAndOrigin, check_origin_option
from faceinpaint.server.pool import LOOPBACK_HOSTS, Limits, WorkerPool

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
SEED_MODEL_NAME = "two_face_model"  # the name seed 001's clients ask TF Serving for


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
    from fastapi import FastAPI
    from fastapi.middleware.cors import CORSMiddleware
    from fastapi.staticfiles import StaticFiles

    from faceinpaint.server.routes import EXCEPTION_HANDLERS, Served, router

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

    app = FastAPI(
        title="faceinpaint",
        version=__version__,
        description='Complete masked face photos. The web app is at `/`; errors are `{"error": message}`.',
    )
    app.state.served = Served(inpainters, default, aliases, limits, WorkerPool(limits.workers, limits.queue))
    # Added innermost first: CatchAll wraps everything, then Host / Origin, CORS headers, the body limit.
    app.add_middleware(BodyLimit, limit=limits.max_upload_bytes)
    if cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Content-Type"],
            expose_headers=["X-Faceinpaint-Model", "X-Faceinpaint-Ms"],
            max_age=600,
        )
    app.add_middleware(HostAndOrigin, allowed_hosts=allowed_hosts, cors_origins=cors_origins)
    app.add_middleware(CatchAll)
    for exception, handler in EXCEPTION_HANDLERS.items():
        app.add_exception_handler(exception, handler)
    app.include_router(router)
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
