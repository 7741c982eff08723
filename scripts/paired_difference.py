"""Paired comparison of two methods of a study, image by image: is A's metric higher than B's, and by how much?

A study's means differ by little when two models share most of their weights (Two-Face with and without its
reference); a paired difference with its standard error says whether such a gap is more than noise. Reads the
`per_image.csv` of every mask set of a study folder (or of one evaluate folder) and prints a Markdown table: images
where both values exist, both means, the mean difference A - B, its 95 % interval (normal, 1.96 standard errors)
and the share of images where A is higher.

Run: python scripts/paired_difference.py runs/study-twoface-val-256 identity_cosine_sface \
         twoface-face-256 twoface-face-256-noref
`--second-folder OTHER` reads method B from another study of the same images and masks (e.g. a new model's study
against the shipped model's), mask set by mask set.
"""

import argparse
import csv
import math
import sys
from pathlib import Path


def read_values(path: Path, metric: str, method: str) -> dict[str, float]:
    """{image: value} of `method` in one per_image.csv, where it has a number for `metric`."""
    found = {}
    with open(path, newline="") as stream:
        reader = csv.DictReader(stream)
        if metric not in (reader.fieldnames or []):
            raise ValueError(f"{path}: no column {metric!r} (columns: {', '.join(reader.fieldnames or [])})")
        for row in reader:
            if row["method"] == method and row[metric] not in ("", "nan"):
                found[row["image"]] = float(row[metric])
    if not found:
        raise ValueError(f"{path}: no values of {metric} for method {method!r}")
    return found


def read_pairs(path: Path, metric: str, first: str, second: str, second_path: Path | None = None) -> list:
    """(A, B) of every image where both methods have a number for `metric`; B from `second_path` when given."""
    values_a, values_b = read_values(path, metric, first), read_values(second_path or path, metric, second)
    return [(values_a[key], values_b[key]) for key in values_a if key in values_b]


def summary(pairs: list[tuple[float, float]]) -> tuple[int, float, float, float, float, float]:
    """(n, mean A, mean B, mean A - B, half-width of its 95 % interval, share of A > B)."""
    count = len(pairs)
    differences = [a - b for a, b in pairs]
    mean = sum(differences) / count
    variance = sum((d - mean) ** 2 for d in differences) / max(count - 1, 1)
    return (
        count,
        sum(a for a, _ in pairs) / count,
        sum(b for _, b in pairs) / count,
        mean,
        1.96 * math.sqrt(variance / count),
        sum(d > 0 for d in differences) / count,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="a study's out folder, or one evaluate folder")
    parser.add_argument("metric", help="a column of per_image.csv, e.g. identity_cosine_sface or psnr_hole")
    parser.add_argument("first", help="method A")
    parser.add_argument("second", help="method B")
    parser.add_argument("--second-folder", type=Path, help="read method B from this study instead (same masks)")
    args = parser.parse_args()
    files = sorted(args.folder.glob("*/per_image.csv")) or sorted(args.folder.glob("per_image.csv"))
    if not files:
        print(f"paired_difference: {args.folder}: no per_image.csv in it or its subfolders", file=sys.stderr)
        return 1
    rows = []
    try:
        for path in files:
            other = None if args.second_folder is None else args.second_folder / path.relative_to(args.folder)
            pairs = read_pairs(path, args.metric, args.first, args.second, other)
            if not pairs:
                raise ValueError(f"{path}: the two methods share no image")
            count, first, second, difference, half, share = summary(pairs)
            name = path.parent.name if path.parent != args.folder else args.folder.name
            rows.append(
                f"| {name} | {count} | {first:.4f} | {second:.4f} | {difference:+.4f} ± {half:.4f} | {share:.0%} |"
            )
    except (OSError, ValueError, KeyError) as error:
        print(f"paired_difference: {error}", file=sys.stderr)
        return 1
    print(f"| masks | n | {args.first} | {args.second} | difference (95 % interval) | A higher |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
