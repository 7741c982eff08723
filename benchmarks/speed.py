"""Milliseconds per 256x256 face for DeepFillv2 (random weights: speed does not depend on them) and the classical
methods, median of several runs, on the CPU and on CUDA when present. Prints a markdown table.

Run: .venv/bin/python benchmarks/speed.py [--repeats 5] [--threads N]
"""

import argparse
import platform
import statistics
import time

import numpy as np
import torch

from faceinpaint.classical import CLASSICAL_METHODS, REFERENCE_METHODS
from faceinpaint.demo import load_sample
from faceinpaint.errors import InpaintError
from faceinpaint.inpainter import Inpainter


def median_ms(run, repeats: int) -> float:
    run()  # warm-up: first-call allocations and lazy imports are not what we measure
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    image, hole = load_sample()
    pixels = np.asarray(image)
    rows = []
    mirrored = np.ascontiguousarray(pixels[:, ::-1])  # reference-paste's "other photo": the sample mirrored
    for name in CLASSICAL_METHODS:
        inpainter = Inpainter.from_pretrained(name)
        reference = mirrored if name in REFERENCE_METHODS else None
        run = lambda inpainter=inpainter, reference=reference: inpainter(pixels, hole, reference)  # noqa: E731
        rows.append((name, "cpu", 1, median_ms(run, args.repeats)))

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        torch.manual_seed(0)
        network = Inpainter.from_config("deepfillv2", {"width": 48}, 256, device=device)
        for batch in (1, 8):
            images, holes = np.stack([pixels] * batch), np.stack([hole] * batch)

            def run(images=images, holes=holes, network=network, device=device):
                network(images, holes)
                if device == "cuda":
                    torch.cuda.synchronize()

            rows.append(("deepfillv2 (width 48)", device, batch, median_ms(run, args.repeats) / batch))

    # The same network through the exported uint8 ONNX graph in onnxruntime (Inpainter backend "onnx").
    try:
        torch.manual_seed(0)
        exported = Inpainter.from_config("deepfillv2", {"width": 48}, 256, device="cpu", backend="onnx")
    except InpaintError as error:  # faceinpaint[export] not installed
        print(f"skipping onnxruntime: {error}")
    else:
        for batch in (1, 8):
            images, holes = np.stack([pixels] * batch), np.stack([hole] * batch)
            ms = median_ms(lambda images=images, holes=holes: exported(images, holes), args.repeats) / batch
            rows.append(("deepfillv2 (width 48), onnxruntime", "cpu", batch, ms))

    print(f"CPU: {platform.processor() or platform.machine()}, {args.threads} threads; torch {torch.__version__}")
    print("| method | device | batch | ms per 256x256 face |")
    print("|---|---|---|---|")
    for name, device, batch, ms in rows:
        print(f"| {name} | {device} | {batch} | {ms:.1f} |")


if __name__ == "__main__":
    main()
