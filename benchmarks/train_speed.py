"""Training speed of a config (default: the 256 DeepFillv2 face recipe): it/s, images/s and peak memory, on the CPU
and on CUDA when present. Runs the real loop (`faceinpaint.train.train`) on generated images; prints a table.

Run: .venv/bin/python benchmarks/train_speed.py [--config configs/deepfillv2_face-256.yaml] [--steps 6] [--batch 16]
"""

import argparse
import resource
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from faceinpaint.checkpoint import read_metrics
from faceinpaint.config import load_config
from faceinpaint.train import train


def _images(folder: Path, count: int, size: int) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for number in range(count):
        pixels = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
        Image.fromarray(pixels).resize((size, size), Image.Resampling.BILINEAR).save(folder / f"{number:04d}.png")
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/deepfillv2_face-256.yaml")
    parser.add_argument("--steps", type=int, default=6, help="measured steps (after 2 warm-up steps)")
    parser.add_argument("--batch", type=int, help="override train.batch_size")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        base = load_config(args.config)
        size = base.model.resolution
        batch = args.batch or base.train.batch_size
        folder = _images(scratch / "images", max(2 * batch, 32), size)
        overrides = [f"data.train={folder}", "data.val=", f"train.batch_size={batch}", "train.log_every=1",
                     f"train.max_steps={args.steps + 2}", "train.save_every=1000000", "train.sample_every=1000000",
                     f"train.run_root={scratch / 'runs'}"]  # fmt: skip
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        result = train(load_config(args.config, overrides))
        records = [r for r in read_metrics(result.run_dir) if r["kind"] == "train"][2:]  # skip warm-up
        seconds = sum(1.0 / r["it_per_s"] for r in records)
        it_per_s = len(records) / seconds
        device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cuda":
            memory = f"{torch.cuda.max_memory_allocated() / 2**30:.2f} GiB (GPU)"
        else:
            memory = f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB (process RSS)"
        print(f"config {args.config}, {size}x{size}, torch {torch.__version__}, {torch.get_num_threads()} threads")
        print("| device | batch | it/s | images/s | peak memory |")
        print("|---|---|---|---|---|")
        print(f"| {device} | {batch} | {it_per_s:.3f} | {it_per_s * batch:.2f} | {memory} |")


if __name__ == "__main__":
    sys.exit(main())
