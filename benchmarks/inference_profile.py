"""Where one 256x256 forward of deepfillv2-face-256 spends its time, in PyTorch and in onnxruntime. Prints tables.

PyTorch: each stage of the generator (coarse, refinement's dilated branch, attention encoder, contextual attention,
attention decoder, decoder) timed by forward hooks around it, median of several forwards, plus its FLOPs
(`FlopCounterMode`); what is left of the forward is "other" (mask, paste, tanh, concatenation); and the floor those
FLOPs set at the best fp32 matmul rate of the same threads. onnxruntime: the exported uint8 graph with its
profiler on, node times summed by op type.

Run: .venv/bin/python benchmarks/inference_profile.py [--repeats 5] [--threads 2] [--model deepfillv2-face-256]
"""

import argparse
import collections
import json
import os
import statistics
import tempfile
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode
from train_profile import peak_gflops

from faceinpaint.backends.export import example_inputs, input_names, onnx_bytes
from faceinpaint.inference.demo import load_sample
from faceinpaint.inpainter import Inpainter


def stage_times(model: torch.nn.Module, inputs: tuple, repeats: int) -> tuple[dict[str, float], float]:
    """Median milliseconds per top-level child of `model` and of the whole forward."""
    per_stage, totals, starts = collections.defaultdict(list), [], {}
    hooks = []

    def started(name: str):
        return lambda *_: starts.__setitem__(name, time.perf_counter())

    def ended(name: str):
        return lambda *_: per_stage[name].append(time.perf_counter() - starts[name])

    for name, child in model.named_children():
        hooks += [child.register_forward_pre_hook(started(name)), child.register_forward_hook(ended(name))]
    with torch.inference_mode():
        model(*inputs)  # warm-up
        per_stage.clear()
        for _ in range(repeats):
            start = time.perf_counter()
            model(*inputs)
            totals.append(time.perf_counter() - start)
    for hook in hooks:
        hook.remove()
    medians = {name: 1000 * statistics.median(times) for name, times in per_stage.items()}
    return medians, 1000 * statistics.median(totals)


def stage_flops(model: torch.nn.Module, inputs: tuple) -> dict[str, float]:
    """GFLOP per top-level child (2 per multiply-add, as FlopCounterMode counts)."""
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(*inputs)
    prefix = type(model).__name__ + "."
    return {
        module[len(prefix) :]: sum(counts.values()) / 1e9
        for module, counts in counter.get_flop_counts().items()
        if module.startswith(prefix) and module.count(".") == 1
    } | {"total": counter.get_total_flops() / 1e9}


def onnx_op_times(inpainter: Inpainter, repeats: int, threads: int) -> tuple[dict[str, float], float]:
    """Milliseconds per forward by ONNX op type (mean over `repeats` profiled runs) and the median wall time."""
    import onnxruntime

    arrays = example_inputs(inpainter, batch=1)
    feeds = dict(zip(input_names(inpainter), arrays, strict=True))
    with tempfile.TemporaryDirectory() as folder:
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.log_severity_level = 3
        session = onnxruntime.InferenceSession(onnx_bytes(inpainter), options, providers=["CPUExecutionProvider"])
        session.run(None, feeds)
        walls = []
        for _ in range(repeats):
            start = time.perf_counter()
            session.run(None, feeds)
            walls.append(time.perf_counter() - start)
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(folder, "ort")
        profiled = onnxruntime.InferenceSession(onnx_bytes(inpainter), options, providers=["CPUExecutionProvider"])
        profiled.run(None, feeds)  # warm-up, also profiled: dropped below by keeping the last `repeats` runs
        for _ in range(repeats):
            profiled.run(None, feeds)
        with open(profiled.end_profiling()) as file:
            events = json.load(file)
    nodes = [event for event in events if event.get("cat") == "Node" and event["name"].endswith("_kernel_time")]
    by_type = collections.defaultdict(float)
    for event in nodes:
        by_type[event["args"]["op_name"]] += event["dur"] / 1000.0
    runs = repeats + 1
    return {op: ms / runs for op, ms in by_type.items()}, 1000 * statistics.median(walls)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", default="deepfillv2-face-256")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    inpainter = Inpainter.from_pretrained(args.model, device="cpu")
    image, hole = load_sample()
    x = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float() / 127.5 - 1.0
    mask = torch.from_numpy(np.asarray(hole) > 127)[None, None].float()
    inputs = (x * (1 - mask), mask)
    model = inpainter.model.eval()

    times, total = stage_times(model, inputs, args.repeats)
    flops = stage_flops(model, inputs)
    print(f"PyTorch {torch.__version__}, {args.threads} threads, {args.model}, batch 1, median of {args.repeats}")
    print("| stage | ms | share | GFLOP | GFLOP/s |")
    print("|---|---|---|---|---|")
    for name, ms in times.items():
        gflop = flops.get(name, 0.0)
        print(f"| {name} | {ms:.1f} | {ms / total:.0%} | {gflop:.2f} | {gflop / ms * 1e3:.1f} |")
    other = total - sum(times.values())
    print(f"| other | {other:.1f} | {other / total:.0%} | | |")
    print(f"| **forward** | {total:.1f} | 100% | {flops['total']:.2f} | {flops['total'] / total * 1e3:.1f} |")
    peak = peak_gflops(args.threads)
    print(f"fp32 peak (best 2048^2 matmul, {args.threads} threads): {peak:.1f} GFLOP/s; the forward's FLOPs at that "
          f"rate: {flops['total'] / peak * 1e3:.0f} ms")  # fmt: skip

    ops, wall = onnx_op_times(inpainter, args.repeats, args.threads)
    print(f"\nonnxruntime, the uint8 graph, {args.threads} threads: median wall {wall:.1f} ms")
    print("| op type | ms | share |")
    print("|---|---|---|")
    summed = sum(ops.values())
    for op, ms in sorted(ops.items(), key=lambda item: -item[1]):
        if ms / summed >= 0.005:
            print(f"| {op} | {ms:.1f} | {ms / summed:.0%} |")
    print(f"| **nodes in all** | {summed:.1f} | 100% |")


if __name__ == "__main__":
    main()
