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

Modules: app (create_app, serve), routes (the endpoints and request models; FastAPI is imported only there and in
create_app, as the server is an optional extra), pool (limits, worker pool, error answers), middleware, payloads
(bodies in and out), tfserving (seed 001's predict format).
"""

from faceinpaint.server.app import create_app, serve
from faceinpaint.server.pool import LOOPBACK_HOSTS, Limits

__all__ = ["LOOPBACK_HOSTS", "Limits", "create_app", "serve"]
