"""The shared parts of the per-face held-out scripts (swap_test.py, reference_ceiling.py): their common arguments,
and the loop that scores every face one mask set at a time and writes each set's per-face CSV and the Markdown table
of all."""

import argparse
import csv
import io
from collections.abc import Callable
from pathlib import Path

from faceinpaint.atomic import atomic_write
from faceinpaint.errors import InpaintError
from faceinpaint.evaluation.evaluate import load_masks, read_batch


def add_held_out_arguments(parser: argparse.ArgumentParser, out: str) -> None:
    """The arguments every such script takes: a reference-guided model, the held-out faces and reference pool, the
    mask sets, the seed of reference draws and generated masks, and where the CSVs and the table go (`out`)."""
    parser.add_argument("weights", help="a reference-guided model: an installed name or a model dir")
    parser.add_argument("--images", default="data/lists/val-twoface.flist", help="the held-out faces")
    parser.add_argument("--references", default="data/lists/val.flist", help="the pool references come from")
    parser.add_argument("--masks", nargs="+", default=["part:eyes"], help="mask sets (as for evaluate)")
    parser.add_argument("--seed", type=int, default=0, help="reference draws and generated masks")
    parser.add_argument("--out", type=Path, default=Path(out), help="per-face CSV and the table")


def write_csv(path: Path, rows: list[dict]) -> None:
    """Rows (dicts with the same keys) as a CSV file, written atomically."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    with atomic_write(path) as stream:
        stream.write(text.getvalue().encode())


def per_face_tables(
    images: dict[str, Path],
    mask_sets: list[str],
    seed: int,
    header: list[str],
    score: Callable[[object], list[dict]],  # holes (N, H, W) bool of the images, in order -> per-face rows
    table: Callable[[list[dict], str], list[str]],  # rows, mask set -> Markdown rows
    out: Path,
) -> str:
    """The Markdown table (header, then each mask set's rows); OUT/<masks>.csv per set and OUT/table.md written."""
    size = tuple(read_batch([next(iter(images.values()))]).shape[-2:])
    lines = list(header)
    out.mkdir(parents=True, exist_ok=True)
    for masks in mask_sets:
        holes, _ = load_masks(masks, list(images), size, seed, list(images.values()))
        rows = score(holes)
        if not rows:
            raise InpaintError(f"{masks}: SFace found no face to score")
        lines += table(rows, masks)
        write_csv(out / f"{masks.replace(':', '-')}.csv", rows)
    text = "\n".join(lines)
    with atomic_write(out / "table.md") as stream:
        stream.write((text + "\n").encode())
    return text
