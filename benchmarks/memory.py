"""Peak memory (process RSS) of `faceinpaint inpaint` on long thin photos and on a file declaring 20000x20000 pixels.

Each case runs the CLI in a process of its own (`faceinpaint.cli.main`, default options unless the case says
otherwise) on inputs that another process wrote; its peak resident set (ru_maxrss from wait4) is what it cost,
Python, torch and the model included. A data-segment limit (--limit-gb, RLIMIT_DATA) makes a case that needs more
fail with "out of memory" instead of waking the kernel's OOM killer. Prints a markdown table.

Run: .venv/bin/python benchmarks/memory.py [--weights deepfillv2-face-256] [--cases face,strip-8000,...]
"""

import argparse
import json
import os
import resource
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

# name -> (image height, width, hole height, hole width, extra CLI options); the hole is centred.
CASES = {
    "face": (256, 256, 64, 80, []),
    "strip-4000": (3, 4000, 1, 2000, []),
    "strip-8000": (3, 8000, 1, 4000, []),
    "strip-100000": (3, 100000, 1, 20000, []),
    "square-6000": (6000, 6000, 1000, 800, []),  # about the largest photo the default pixel limit lets in
    "square-6000-align-never": (6000, 6000, 1000, 800, ["--align", "never"]),  # the Inpainter alone, no face pass
    "declared-20000": (20000, 20000, 0, 0, []),
    "declared-20000-limit-raised": (20000, 20000, 0, 0, ["--max-pixels", "400000000"]),
    # Under Pillow's own decompression-bomb limit (about 179 million pixels), over faceinpaint's default one.
    "declared-12000": (12000, 12000, 0, 0, []),
    "declared-12000-limit-raised": (12000, 12000, 0, 0, ["--max-pixels", "200000000"]),
}


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def declared_png(path: Path, height: int, width: int) -> None:
    """A small PNG whose header declares height x width RGB pixels but whose data holds only 16 rows."""
    rows = zlib.compress(b"".join(b"\x00" + bytes(3 * width) for _ in range(16)))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", rows) + _chunk(b"IEND", b""))


def write_inputs(case: str, folder: Path) -> tuple[Path, Path]:
    """The case's image and mask files: a smooth gradient with a centred hole, or one declared-size PNG."""
    height, width, hole_height, hole_width, _ = CASES[case]
    image, mask = folder / f"{case}.png", folder / f"{case}-mask.png"
    if case.startswith("declared"):
        declared_png(image, height, width)
        return image, image
    x, y = np.arange(width, dtype=np.int64), np.arange(height, dtype=np.int64)[:, None]
    pixels = np.empty((height, width, 3), np.uint8)
    pixels[..., 0] = (x * 255 // max(width - 1, 1)).astype(np.uint8)
    pixels[..., 1] = (y * 255 // max(height - 1, 1)).astype(np.uint8)
    pixels[..., 2] = ((x + y) % 256).astype(np.uint8)
    Image.fromarray(pixels).save(image)
    hole = np.zeros((height, width), np.uint8)
    top, left = (height - hole_height) // 2, (width - hole_width) // 2
    hole[top : top + hole_height, left : left + hole_width] = 255
    Image.fromarray(hole).save(mask)
    return image, mask


def child(case: str, weights: str, folder: Path, limit_gb: float) -> None:
    """Run one case on the files in `folder` and print {"rc", "seconds"} as the last line of stdout."""
    limit = int(limit_gb * 2**30)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    from faceinpaint.cli import main

    image, mask = (
        folder / f"{case}.png",
        folder / (f"{case}.png" if case.startswith("declared") else f"{case}-mask.png"),
    )
    arguments = ["inpaint", "--weights", weights, "--device", "cpu", "--image", str(image), "--mask", str(mask),
                 "--out", str(folder / f"{case}-out.png"), *CASES[case][4]]  # fmt: skip
    start = time.perf_counter()
    try:
        rc = main(arguments)
    except MemoryError:
        rc = "out of memory"
    print(json.dumps({"rc": rc, "seconds": time.perf_counter() - start}), flush=True)


def measure(case: str, weights: str, limit_gb: float) -> dict:
    """Run a case in a child process; its outcome, seconds, peak RSS and the last line of its stderr."""
    with tempfile.TemporaryDirectory() as folder:
        # The inputs are made by a process of their own: a child's peak RSS starts from its parent's.
        subprocess.run([sys.executable, __file__, "--write-inputs", case, "--folder", folder], check=True)
        out, err = Path(folder) / "stdout", Path(folder) / "stderr"
        with open(out, "w") as stdout, open(err, "w") as stderr:
            command = [sys.executable, __file__, "--child", case, "--weights", weights, "--folder", folder,
                       "--limit-gb", str(limit_gb)]  # fmt: skip
            process = subprocess.Popen(command, stdout=stdout, stderr=stderr)
            _, status, usage = os.wait4(process.pid, 0)
            process.returncode = os.waitstatus_to_exitcode(status)
        lines = out.read_text().splitlines()
        result = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {"rc": process.returncode}
        messages = [line for line in err.read_text().splitlines() if line.strip()]
        result["message"] = messages[-1].replace(folder + "/", "")[:150] if messages else ""
        result["peak_rss_mib"] = usage.ru_maxrss / 1024  # kilobytes on Linux
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default="deepfillv2-face-256")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}")
    parser.add_argument("--limit-gb", type=float, default=4.0, help="data-segment limit of each case (default 4)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--write-inputs", help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write_inputs:
        write_inputs(args.write_inputs, args.folder)
        return
    if args.child:
        child(args.child, args.weights, args.folder, args.limit_gb)
        return
    cases = args.cases.split(",")
    unknown = [case for case in cases if case not in CASES]
    if unknown:
        parser.exit(1, f"unknown case(s) {', '.join(unknown)}; valid: {', '.join(CASES)}\n")
    print(f"weights {args.weights}, data limit {args.limit_gb} GiB per case\n")
    print("| case | image (HxW) | hole (HxW) | options | exit | seconds | peak RSS (MiB) | last message |")
    print("|---|---|---|---|---|---|---|---|")
    for case in cases:
        height, width, hole_height, hole_width, options = CASES[case]
        result = measure(case, args.weights, args.limit_gb)
        cells = [case, f"{height}x{width}", f"{hole_height}x{hole_width}" if hole_height else "-",
                 " ".join(options) or "defaults", str(result["rc"]),
                 f"{result['seconds']:.1f}" if "seconds" in result else "-", f"{result['peak_rss_mib']:.0f}",
                 result["message"].replace("|", "/")]  # fmt: skip
        print(f"| {' | '.join(cells)} |", flush=True)


if __name__ == "__main__":
    main()
