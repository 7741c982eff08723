"""Milliseconds per 256x256 face: the shipped networks on the default CPU path against the same weights in the
models as committed at `--before` (today's PyTorch float32 path), run in turn in one process; the exported ONNX
graph in onnxruntime; the classical methods. Median of several warm runs. Prints markdown tables.

Arms of a network, interleaved (before, after, onnx, before, after, onnx, ...) so that other work on the machine
slows all alike: "before" swaps in the generator architectures of `--before` (src/faceinpaint/models/*.py read
with `git show`, see train_profile.architectures_at) holding the same weights, with up to 8 faces per network call
as the Inpainter made them before issue 23; "after" is the working tree. Each
is the whole `Inpainter` call on the bundled face (its hole: eyes and mouth), `align="never"` as the sample is an
aligned 256 face; Two-Face gets the sample mirrored as its reference. Outputs of the arms are compared in uint8.

Run: .venv/bin/python benchmarks/speed.py [--repeats 5] [--threads 2] [--before HEAD] [--no-onnx]
"""

import argparse
import copy
import platform
import statistics
import time

import numpy as np
import torch
from train_profile import architectures_at

from faceinpaint.backends.classical import CLASSICAL_METHODS, REFERENCE_METHODS
from faceinpaint.errors import InpaintError
from faceinpaint.inference.demo import load_sample
from faceinpaint.inpainter import Inpainter

NETWORKS = ("deepfillv2-face-256", "twoface-face-256")
HEAD_BATCH = 8  # faces per network call of the Inpainter before the CPU default became 1 (commit of issue 23)


def seconds(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def median_ms(run, repeats: int) -> float:
    run()  # warm-up: first-call allocations and lazy imports are not what we measure
    return 1000.0 * statistics.median(seconds(run) for _ in range(repeats))


def before_arm(inpainter: Inpainter, architectures: dict) -> Inpainter:
    """The same Inpainter and weights, with the generator rebuilt from the `--before` architecture."""
    model = architectures[inpainter.config["arch"]](**inpainter.config.get("args", {}))
    model.load_state_dict(inpainter.model.state_dict(), strict=True)
    before = copy.copy(inpainter)
    before.model = model.eval()
    before.batch_size = HEAD_BATCH
    return before


def onnx_arm(name: str) -> Inpainter | None:
    try:
        return Inpainter.from_pretrained(name, device="cpu", backend="onnx")
    except InpaintError as error:  # no onnxruntime (or onnxscript) installed
        print(f"{name}: no onnxruntime arm ({error})")
        return None


def interleaved(arms: dict, inputs: tuple, repeats: int) -> dict[str, float]:
    """Median ms per call of each arm, run in turn `repeats` times after one warm-up each."""
    times = {name: [] for name in arms}
    for run in arms.values():
        run(*inputs)
    for _ in range(repeats):
        for name, run in arms.items():
            times[name].append(seconds(lambda run=run: run(*inputs)))
    return {name: 1000.0 * statistics.median(values) for name, values in times.items()}


def network_rows(args, pixels: np.ndarray, hole: np.ndarray, mirrored: np.ndarray) -> list[tuple]:
    architectures = architectures_at(args.before)
    rows = []
    for name in NETWORKS:
        after = Inpainter.from_pretrained(name, device="cpu")
        reference = mirrored if after.uses_reference else None
        arms = {"before": before_arm(after, architectures), "after": after}
        if not args.no_onnx and (exported := onnx_arm(name)) is not None:
            arms["onnx"] = exported
        for batch in (1, 8):
            images, holes = np.stack([pixels] * batch), np.stack([hole] * batch)
            references = None if reference is None else np.stack([reference] * batch)
            calls = {arm: (lambda i, h, r, run=run: run(i, h, r, align="never")) for arm, run in arms.items()}
            ms = interleaved(calls, (images, holes, references), args.repeats)
            outputs = {arm: np.asarray(call(images[:1], holes[:1], None if references is None else references[:1]))
                       for arm, call in calls.items()}  # fmt: skip
            for arm in arms:
                difference = np.abs(outputs[arm].astype(np.int16) - outputs["before"]).max()
                rows.append((name, arm, batch, ms[arm] / batch, ms["before"] / ms[arm], int(difference)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--before", default="HEAD", help="commit of the 'before' models")
    parser.add_argument("--no-onnx", action="store_true", help="skip the onnxruntime arm (its export takes ~30 s)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    image, hole = load_sample()
    pixels, hole = np.asarray(image), np.asarray(hole)
    mirrored = np.ascontiguousarray(pixels[:, ::-1])  # the "other photo" of reference methods: the sample mirrored
    network = network_rows(args, pixels, hole, mirrored)
    classical = []
    for name in CLASSICAL_METHODS:
        inpainter = Inpainter.from_pretrained(name)
        reference = mirrored if name in REFERENCE_METHODS else None
        classical.append((name, median_ms(lambda i=inpainter, r=reference: i(pixels, hole, r), args.repeats)))

    print(f"CPU: {platform.processor() or platform.machine()}, {args.threads} threads; torch {torch.__version__}; "
          f"median of {args.repeats}, arms interleaved; before = models at {args.before}")  # fmt: skip
    print("| model | arm | batch | ms per 256x256 face | before / arm | max uint8 difference from before |")
    print("|---|---|---|---|---|---|")
    for name, arm, batch, ms, ratio, difference in network:
        print(f"| {name} | {arm} | {batch} | {ms:.1f} | {ratio:.2f}x | {difference} |")
    print("\n| classical method | ms per 256x256 face |")
    print("|---|---|")
    for name, ms in classical:
        print(f"| {name} | {ms:.1f} |")


if __name__ == "__main__":
    main()
