"""Is onnxruntime worth it for the reference model? twoface-face-256 (v2) on the bundled 256 face (its eyes + mouth
mask, the sample mirrored as the reference), the whole `Inpainter` call (the landmark warp included) in PyTorch and
on the onnx backend, interleaved, median of warm runs; and how long the onnx backend takes to build (its two
exports, with and without the reference). `serve --backend auto` reads this: see backends/export.onnx_is_faster.

Run: .venv/bin/python benchmarks/reference_onnx.py [--weights twoface-face-256] [--repeats 5] [--threads 2]
"""

import argparse
import statistics
import time

import numpy as np
import torch

from faceinpaint.inference.demo import load_sample
from faceinpaint.inpainter import Inpainter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default="twoface-face-256")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    image, hole = load_sample()
    face = np.asarray(image)
    mirror = np.ascontiguousarray(face[:, ::-1])
    eager = Inpainter.from_pretrained(args.weights, device="cpu")
    start = time.perf_counter()
    onnx = Inpainter(eager.name, eager.config, eager.model, "cpu", "onnx")
    build = time.perf_counter() - start
    arms = {"torch": eager, "onnx": onnx}
    outputs = {name: arm(face, hole, reference=mirror, align="never") for name, arm in arms.items()}  # warm-up
    times = {name: [] for name in arms}
    for _ in range(args.repeats):
        for name, arm in arms.items():
            tick = time.perf_counter()
            arm(face, hole, reference=mirror, align="never")
            times[name].append(time.perf_counter() - tick)
    difference = int(np.abs(outputs["torch"].astype(int) - outputs["onnx"]).max())
    print(f"{args.weights}, {args.threads} threads, torch {torch.__version__}; onnx backend built in {build:.1f} s")
    print("\n| backend | ms per face, with a reference | max uint8 difference from torch |\n|---|---|---|")
    for name, values in times.items():
        print(f"| {name} | {1000 * statistics.median(values):.0f} | {difference if name == 'onnx' else 0} |")


if __name__ == "__main__":
    main()
