"""ASGI middleware: the request body limit, Host / Origin checks and the last-resort 500 answer."""

import logging
from urllib.parse import urlsplit

from faceinpaint.errors import InpaintError
from faceinpaint.server.pool import HTTPError, error_response

log = logging.getLogger("faceinpaint.server")


class BodyLimit:
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


class HostAndOrigin:
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


class CatchAll:
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
