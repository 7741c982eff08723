"""Training speed of a config (default: the 256 DeepFillv2 face recipe): images/s of the code before and after a
change, measured in one run, and the FLOP/s reached against the machine's fp32 peak. Runs the real loop
(`faceinpaint.training.loop.train`) on generated images and prints a markdown table.

Arms, run in turn (before, after, before, after, ...) so that other work on the machine slows both alike:
  before: the generator architectures as committed at `--before` (default HEAD; src/faceinpaint/models/layers.py,
          deepfill.py and twoface.py read with `git show`) and the config as given;
  after:  the working tree, with `--after-set` overrides (default: contiguous layout), and the trainer
          (src/faceinpaint/training/: loop, step, setup, ...) patched with `--loop-patch` when given (a proposed
          diff, measured before it is merged); one such arm for each of `--after-threads` (default: --threads, as
          the before arm).
`--before none` measures the working tree alone. FLOPs are counted (torch.utils.flop_counter.FlopCounterMode) over
one more step of each arm at batch 1; the peak is the best 2048 x 2048 fp32 matmul on the same threads.

Run: nice -n 19 .venv/bin/python benchmarks/train_speed.py [--config configs/deepfillv2_face-256.yaml] [--steps 2]
     [--batch 4] [--repeats 2] [--losses stlpips,dlib,matching] [--loop-patch /tmp/train_speed.patch]
"""

import argparse
import contextlib
import importlib.util
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode
from train_profile import architectures_at, peak_gflops

import faceinpaint.training.loop
from faceinpaint.config import load_config
from faceinpaint.models import ARCHITECTURES
from faceinpaint.training.checkpoint import read_metrics

LOSS_WEIGHTS = {"stlpips": "train.stlpips_weight", "dlib": "train.dlib_feature_weight",
                "matching": "train.feature_matching_weight"}  # fmt: skip


def _images(folder: Path, count: int, size: int) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for number in range(count):
        pixels = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
        Image.fromarray(pixels).resize((size, size), Image.Resampling.BILINEAR).save(folder / f"{number:04d}.png")
    return folder


def patched_train(patch: Path, scratch: Path):
    """`faceinpaint.training.loop.train` from a copy of the training package with `patch` applied: a unified diff
    (e.g. `git diff -- src/faceinpaint/training`) of any of its modules (loop.py, step.py, setup.py, ...).

    The copy is imported under the real module names, so that the patched loop binds the patched step and setup;
    the installed modules are put back afterwards and the other arms run them unchanged."""
    package = Path(faceinpaint.training.__file__).parent
    copy = scratch / "training_patched"
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__"))
    # -p4: git's a/src/faceinpaint/training/step.py -> step.py, wherever the package is installed
    subprocess.run(["patch", "--quiet", "-p4", "-d", str(copy), "-i", str(patch.resolve())], check=True)
    names = [name for name in sys.modules if name.startswith("faceinpaint.training.")]
    saved = {name: sys.modules.pop(name) for name in names}
    saved_path, attributes = faceinpaint.training.__path__, dict(vars(faceinpaint.training))
    faceinpaint.training.__path__ = [str(copy)]
    try:
        return importlib.import_module("faceinpaint.training.loop").train
    finally:
        for name in [name for name in sys.modules if name.startswith("faceinpaint.training.")]:
            del sys.modules[name]
        sys.modules.update(saved)
        faceinpaint.training.__path__ = saved_path
        for name in set(vars(faceinpaint.training)) - set(attributes):
            delattr(faceinpaint.training, name)
        vars(faceinpaint.training).update(attributes)


@contextlib.contextmanager
def arm(architectures: dict | None, threads: int):
    """Run with these generator classes in the registry (None: the working tree's) and this many threads."""
    saved, saved_threads = dict(ARCHITECTURES), torch.get_num_threads()
    ARCHITECTURES.update(architectures or {})
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        ARCHITECTURES.update(saved)
        torch.set_num_threads(saved_threads)


def measure(train, config: str, overrides: list[str], warmup: int) -> float:
    """it/s of the steps after `warmup`, from the loop's own log (train.log_every=1)."""
    result = train(load_config(config, overrides))
    records = [r for r in read_metrics(result.run_dir) if r["kind"] == "train"][warmup:]
    return len(records) / sum(1.0 / r["it_per_s"] for r in records)


def flops_per_image(train, config: str, overrides: list[str]) -> float:
    """FLOPs of one training step at batch 1 (convolutions and matmuls, forward and backward)."""
    with FlopCounterMode(display=False) as counter:
        train(load_config(config, overrides + ["train.batch_size=1", "train.max_steps=1"]))
    return counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/deepfillv2_face-256.yaml")
    parser.add_argument("--steps", type=int, default=2, help="measured steps per run, after --warmup")
    parser.add_argument("--warmup", type=int, default=1, help="steps not counted at the start of each run")
    parser.add_argument("--batch", type=int, help="override train.batch_size")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each arm, interleaved")
    parser.add_argument(
        "--losses", default="stlpips,dlib,matching", help=f"terms on (weight 1), of {list(LOSS_WEIGHTS)}"
    )
    parser.add_argument("--set", nargs="*", default=[], help="config overrides of both arms, e.g. model.resolution=64")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--before", default="HEAD", help="commit of the 'before' models, or 'none'")
    parser.add_argument("--after-set", nargs="*", default=["train.channels_last=false"], help="config overrides")
    parser.add_argument("--after-threads", type=int, nargs="*", help="an 'after' arm for each (default --threads)")
    parser.add_argument(
        "--loop-patch", type=Path, help="a unified diff of src/faceinpaint/training/ (git diff paths) for 'after'"
    )
    args = parser.parse_args()
    losses = [name for name in args.losses.split(",") if name]
    if set(losses) - set(LOSS_WEIGHTS):
        parser.error(f"unknown --losses {sorted(set(losses) - set(LOSS_WEIGHTS))}")

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        base = load_config(args.config, args.set)
        size, batch = base.model.resolution, args.batch or base.train.batch_size
        folder = _images(scratch / "images", max(2 * batch, 32), size)
        common = [f"data.train={folder}", "data.val=", "train.log_every=1", "train.save_every=1000000",
                  "train.sample_every=1000000", f"train.run_root={scratch / 'runs'}",
                  *(f"{LOSS_WEIGHTS[name]}=1.0" for name in losses), *args.set]  # fmt: skip
        arms = {}  # name -> (generator classes, loop, overrides, threads, what it is)
        if args.before != "none":
            arms["before"] = (architectures_at(args.before), faceinpaint.training.loop.train, [], args.threads,
                              f"models at {args.before}, config as given")  # fmt: skip
        loop = patched_train(args.loop_patch, scratch) if args.loop_patch else faceinpaint.training.loop.train
        what = "working tree" + (f" + {args.loop_patch.name}" if args.loop_patch else "")
        what += f", {' '.join(args.after_set)}" if args.after_set else ""
        for threads in args.after_threads or [args.threads]:
            name = "after" if threads == args.threads else f"after, {threads} thread{'s' * (threads > 1)}"
            arms[name] = (None, loop, list(args.after_set), threads, what)
        steps = [f"train.batch_size={batch}", f"train.max_steps={args.steps + args.warmup}"]
        speeds = {name: [] for name in arms}
        for repeat in range(args.repeats):
            for name, (architectures, train, overrides, threads, _) in arms.items():
                with arm(architectures, threads):
                    speeds[name].append(measure(train, args.config, common + overrides + steps, args.warmup))
                print(f"repeat {repeat}: {name} {speeds[name][-1] * batch:.3f} images/s", file=sys.stderr)
        flops = {}
        for name, (architectures, train, overrides, threads, _) in arms.items():
            with arm(architectures, threads):
                flops[name] = flops_per_image(train, args.config, common + overrides)
        peaks = {threads: peak_gflops(threads) for threads in {arm[3] for arm in arms.values()}}

    memory = f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB"
    print(f"config {args.config}, {size}x{size}, batch {batch}, losses {','.join(losses) or 'none'}, torch "
          f"{torch.__version__}; median of {args.repeats} interleaved runs of {args.steps} steps after {args.warmup} "
          f"warm-up; peak process RSS {memory}")  # fmt: skip
    print("| arm | code and settings | threads | it/s | images/s | GFLOP / image | GFLOP/s | of fp32 peak |")
    print("|---|---|---|---|---|---|---|---|")
    for name, (_, _, _, threads, what) in arms.items():
        it_per_s = statistics.median(speeds[name])
        rate = flops[name] / 1e9 * it_per_s * batch
        print(f"| {name} | {what} | {threads} | {it_per_s:.4f} | {it_per_s * batch:.3f} | {flops[name] / 1e9:.1f} | "
              f"{rate:.1f} | {rate / peaks[threads]:.0%} of {peaks[threads]:.0f} |")  # fmt: skip
    for name in [name for name in arms if name != "before" and "before" in arms]:
        ratio = statistics.median(speeds[name]) / statistics.median(speeds["before"])
        runs = ", ".join(
            f"{b * batch:.3f} / {a * batch:.3f}" for b, a in zip(speeds["before"], speeds[name], strict=True)
        )
        print(f"\n{name} / before: {ratio:.2f}x images/s (per repeat, before / {name}: {runs})")


if __name__ == "__main__":
    sys.exit(main())
