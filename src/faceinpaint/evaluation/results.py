"""The results files of an evaluation: results.json, results.csv and results.md, and the markdown tables that
evaluate and study print."""

import json
import math
from pathlib import Path

from faceinpaint.atomic import write_csv, write_text

# column -> (table heading, format); the arrow says which way is better.
COLUMNS = {
    "psnr": ("PSNR ↑", "{:.2f}"),
    "psnr_hole": ("PSNR hole ↑", "{:.2f}"),
    "ssim": ("SSIM ↑", "{:.4f}"),
    "l1": ("L1 ↓", "{:.4f}"),
    "l1_hole": ("L1 hole ↓", "{:.4f}"),
    "stlpips": ("ST-LPIPS ↓", "{:.4f}"),
    "stlpips_hole": ("ST-LPIPS hole ↓", "{:.4f}"),
    "fid": ("FID ↓", "{:.2f}"),
    "u_ids": ("U-IDS ↑", "{:.3f}"),
    "p_ids": ("P-IDS ↑", "{:.3f}"),
    "identity_cosine_sface": ("ID SFace ↑", "{:.3f}"),
    "identity_cosine_dlib": ("ID dlib ↑", "{:.3f}"),
}


def _format(value, column: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float) and math.isinf(value):
        return "∞"
    return COLUMNS[column][1].format(value)


def results_table(report: dict, per_bin: bool = False, mask_label: str | None = None) -> str:
    """A markdown table of a results dict: one row per method (and per bin with `per_bin`)."""
    columns = report["protocol"]["metrics"]
    lead = (["masks"] if mask_label else []) + ["method"] + (["hole"] if per_bin else []) + ["n"]
    lines = ["| " + " | ".join(lead + [COLUMNS[c][0] for c in columns]) + " |"]
    lines.append("|" + "---|" * (len(lead) + len(columns)))
    for method, result in report["methods"].items():
        groups = result["bins"].items() if per_bin else [("all", result["all"])]
        for bin_name, row in groups:
            cells = ([mask_label] if mask_label else []) + [method] + ([bin_name] if per_bin else [])
            cells += [str(row["count"])] + [_format(row.get(c), c) for c in columns]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def result_rows(report: dict) -> list[dict]:
    """Flat rows (method, hole bin, count, every column) of a results dict, for CSV."""
    rows = []
    for method, result in report["methods"].items():
        for bin_name, row in [("all", result["all"]), *result["bins"].items()]:
            rows.append({"method": method, "hole": bin_name} | row)
    return rows


def write_results(report: dict, out_dir: Path) -> None:
    """Write results.json, results.csv and results.md (overall and per-bin tables) atomically into out_dir."""
    protocol = report["protocol"]
    write_text(out_dir / "results.json", json.dumps(report, indent=2, allow_nan=True) + "\n")
    write_csv(out_dir / "results.csv", result_rows(report))
    title = f"{protocol['count']} images ({protocol['images']}), masks {protocol['masks']}"
    text = f"# Evaluation: {title}\n\n{results_table(report)}\n## Per hole-ratio bin\n\n"
    write_text(out_dir / "results.md", text + results_table(report, per_bin=True))
