"""Load test of `faceinpaint serve` on loopback: N concurrent clients for T seconds -> requests/s, p50 / p99, errors.

The server runs in a subprocess (as users run it); the clients post the bundled 256x256 face and its mask as
multipart to /v1/inpaint. `--weights deepfillv2-random` builds a DeepFillv2 of width 48 with random weights
(speed does not depend on them). Prints one markdown table row.

Run: .venv/bin/python benchmarks/serve_load.py [--weights telea] [--clients 50] [--seconds 30] [--queue 64]
"""

import argparse
import asyncio
import io
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import httpx
import numpy as np
import torch
from PIL import Image

from faceinpaint.inference.demo import load_sample
from faceinpaint.inpainter import Inpainter


def _png(array: np.ndarray) -> bytes:
    stream = io.BytesIO()
    Image.fromarray(array).save(stream, format="PNG")
    return stream.getvalue()


async def _client(http: httpx.AsyncClient, url: str, files: dict, stop: float, latencies: list, errors: list):
    while time.monotonic() < stop:
        start = time.perf_counter()
        try:
            response = await http.post(url, files=files, data={"align": "never"})
            ok = response.status_code == 200
        except httpx.HTTPError:
            ok = False
        (latencies if ok else errors).append(time.perf_counter() - start)


async def _load(url: str, clients: int, seconds: float) -> tuple[list, list, float]:
    image, hole = load_sample()
    files = {"image": ("face.png", _png(np.asarray(image)), "image/png")}
    files["mask"] = ("mask.png", _png(hole.astype(np.uint8) * 255), "image/png")
    latencies, errors = [], []
    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        start = time.monotonic()
        stop = start + seconds
        await asyncio.gather(*(_client(http, url, files, stop, latencies, errors) for _ in range(clients)))
        return latencies, errors, time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default="telea", help="model name or dir, or deepfillv2-random")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--queue", type=int, default=64)
    parser.add_argument("--backend", default="torch")
    args = parser.parse_args()

    weights = args.weights
    if weights == "deepfillv2-random":
        torch.manual_seed(0)
        weights = Inpainter.from_config("deepfillv2", {"width": 48}, 256, device="cpu").save_pretrained(
            os.path.join(tempfile.mkdtemp(), "deepfillv2-random")
        )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "faceinpaint.cli", "serve", "--weights", str(weights), "--port", str(port)]
    command += ["--device", "cpu", "--workers", str(args.workers), "--queue", str(args.queue)]
    command += ["--backend", args.backend]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(1200):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        latencies, errors, elapsed = asyncio.run(
            _load(f"http://127.0.0.1:{port}/v1/inpaint", args.clients, args.seconds)
        )
    finally:
        server.terminate()
        server.wait(30)
    ms = sorted(1000 * value for value in latencies) or [float("nan")]
    p99 = ms[min(len(ms) - 1, int(0.99 * len(ms)))]
    print("| model | backend | clients | seconds | requests/s | p50 ms | p99 ms | errors |")
    print("|---|---|---|---|---|---|---|---|")
    print(
        f"| {args.weights} | {args.backend} | {args.clients} | {elapsed:.0f} | {len(latencies) / elapsed:.1f} | "
        f"{statistics.median(ms):.0f} | {p99:.0f} | {len(errors)} |"
    )


if __name__ == "__main__":
    main()
