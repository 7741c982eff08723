"""Request limits, the bounded worker pool and the one error answer (`{\"error\": message}`)."""

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from faceinpaint.errors import InpaintError, NotAnImageError, OverLimitError

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


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
