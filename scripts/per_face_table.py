"""The shared loop of the per-face held-out scripts (swap_test.py, reference_ceiling.py): one mask set at a time,
score every face, then write the per-face CSV of each set and the Markdown table of all."""

import csv
import io
from collections.abc import Callable
from pathlib import Path

from faceinpaint.atomic import atomic_write
from faceinpaint.errors import InpaintError
from faceinpaint.evaluation.evaluate import load_masks, read_batch


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
