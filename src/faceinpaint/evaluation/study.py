"""The comparison study of seed 000 as one command: methods x mask sets on the same faces -> table, figure, plots.

A study config is a flat YAML file (see configs/study_*.yaml); every key is listed in StudyConfig and an unknown
key is an error. Paths in it are relative to the current folder.
"""

import json
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from faceinpaint.atomic import write_csv, write_text
from faceinpaint.data.datasets import list_images
from faceinpaint.data.references import same_person_references
from faceinpaint.errors import InpaintError
from faceinpaint.evaluation.evaluate import METRICS, evaluate, read_masks
from faceinpaint.evaluation.results import COLUMNS, result_rows
from faceinpaint.evaluation.results import results_table as method_table


@dataclass(frozen=True)
class StudyConfig:
    """One study: which faces, which methods, which mask sets, which metrics, where the results go."""

    images: str  # a folder (searched recursively) or a file list
    out: str  # the study folder: one evaluate run per mask set, plus the study table, figure and plots
    methods: tuple[str, ...] = ("all",)  # names or model dirs; "all" = every installed model and classical method
    mask_sets: tuple[str, ...] = ("deepfill", "lama-thin", "lama-thick")  # kinds of faceinpaint.data.masks
    mask_seed: int = 0
    metrics: tuple[str, ...] = tuple(METRICS)
    subfolders: tuple[str, str] | None = None  # keep only images whose first folder is in [first, last]
    limit: int | None = None  # the first N images (in path order) after the subfolder filter
    figure_faces: int = 6  # rows of the comparison figure, spread evenly over the images
    # A folder or file list of photos to draw same-person references from (faceinpaint.data.references), for
    # reference-guided methods, which then also run without one ("<name>-noref"); empty: no references.
    references: str = ""
    batch_size: int = 16


def load_study_config(path: str | Path) -> StudyConfig:
    """Read a study YAML file into a StudyConfig; unknown keys and missing required keys are InpaintErrors."""
    from faceinpaint.config import read_yaml

    path = Path(path)
    raw = read_yaml(path, "study config")
    known = {field.name for field in fields(StudyConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise InpaintError(f"study config {path}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(known)}")
    for key in ("methods", "mask_sets", "metrics", "subfolders"):
        if raw.get(key) is not None:
            raw[key] = tuple(str(item) for item in ([raw[key]] if isinstance(raw[key], str) else raw[key]))
    try:
        return StudyConfig(**raw)
    except TypeError as error:
        raise InpaintError(f"study config {path}: {error}") from None


def study_images(config: StudyConfig) -> dict[str, Path]:
    """The study's images {key: path}: the config's folder or list, filtered by `subfolders` and `limit`."""
    found = list_images(config.images)
    if config.subfolders is not None:
        first, last = config.subfolders
        found = {key: path for key, path in found.items() if first <= key.split("/")[0] <= last}
    keys = list(found)[: config.limit] if config.limit else list(found)
    if not keys:
        raise InpaintError(f"study: no images in {config.images} match subfolders {config.subfolders}")
    return {key: found[key] for key in keys}


def run_study(config: StudyConfig, device: str = "auto", progress: bool = True) -> dict:
    """Evaluate every method on every mask set of the same images; write the study table, figures and plots.

    Returns {mask_set: evaluate's results dict}; writes OUT/study.md, study.csv, study.json,
    comparison-<mask_set>.png and metrics-vs-hole-ratio.png (and OUT/<mask_set>/ with each run's files).
    """
    from faceinpaint.backends.classical import REFERENCE_METHODS
    from faceinpaint.weights import installed_models

    methods = list(config.methods)
    if config.methods == ("all",):  # reference-only methods (reference-paste) join where there are references
        methods = [name for name in installed_models() if config.references or name not in REFERENCE_METHODS]
    images, out = study_images(config), Path(config.out)
    references = same_person_references(images, config.references, config.mask_seed) if config.references else None
    reports = {}
    for kind in config.mask_sets:
        reports[kind] = evaluate(
            methods,
            images,
            kind,
            out / _slug(kind),
            metrics=config.metrics,
            references=references,
            reference_ablation=references is not None,
            mask_seed=config.mask_seed,
            batch_size=config.batch_size,
            device=device,
            progress=progress,
        )
    write_text(out / "study.json", json.dumps(reports, indent=2) + "\n")
    rows = [{"masks": kind} | row for kind, report in reports.items() for row in result_rows(report)]
    write_csv(out / "study.csv", rows)
    write_text(out / "study.md", study_markdown(reports, len(images)))
    for kind in config.mask_sets:
        figure = out / f"comparison-{_slug(kind)}.png"
        comparison_figure(images, reports[kind], out / _slug(kind), figure, config.figure_faces, references)
    hole_ratio_plot(reports, out / "metrics-vs-hole-ratio.png")
    return reports


def _slug(kind: str) -> str:
    """A mask set's folder and file name part: "part:nose,mouth" -> "part-nose-mouth"."""
    return kind.replace(":", "-").replace(",", "-")


def study_markdown(reports: dict, count: int) -> str:
    """The study table: every mask set x method on all images, then the same per hole-ratio bin."""
    first = next(iter(reports.values()))["protocol"]
    overall = [method_table(report, mask_label=kind).splitlines() for kind, report in reports.items()]
    binned = [method_table(report, per_bin=True, mask_label=kind).splitlines() for kind, report in reports.items()]
    # One table: the header of the first, the rows of all.
    table = overall[0] + [line for lines in overall[1:] for line in lines[2:]]
    table_bins = binned[0] + [line for lines in binned[1:] for line in lines[2:]]
    text = f"{count} faces at {first['size'][1]}x{first['size'][0]}, mask seed in each set's name.\n\n"
    return text + "\n".join(table) + "\n\nPer hole-ratio bin:\n\n" + "\n".join(table_bins) + "\n"


def comparison_figure(
    images: dict, report: dict, run_dir: Path, path: Path, faces: int, references: dict | None = None
) -> Path:
    """Seed 000's figure: rows = faces (spread evenly), columns = ground truth | input | (reference |) each
    method's output."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from faceinpaint.atomic import atomic_write
    from faceinpaint.images import read_image

    keys = list(images)
    picked = [keys[i] for i in np.linspace(0, len(keys) - 1, min(faces, len(keys))).round().astype(int)]
    methods = list(report["methods"])
    masks = read_masks(run_dir)
    titles = ["ground truth", "input"] + (["reference"] if references else []) + methods
    figure, axes = plt.subplots(
        len(picked), len(titles), figsize=(1.6 * len(titles), 1.6 * len(picked)), squeeze=False
    )
    for row, key in enumerate(picked):
        truth = np.asarray(read_image(images[key]).convert("RGB"))
        masked = truth.copy()
        masked[masks[key]] = 255  # holes shown white
        shown = [references[key]] if references else []
        shown += [run_dir / method / f"{key}.png" for method in methods]
        panels = [truth, masked] + [np.asarray(read_image(p).convert("RGB")) for p in shown]
        for column, panel in enumerate(panels):
            axis = axes[row][column]
            axis.imshow(panel)
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(titles[column], fontsize=8)
    figure.tight_layout(pad=0.2)
    with atomic_write(path) as stream:
        figure.savefig(stream, format="png", dpi=110)
    plt.close(figure)
    return path


def hole_ratio_plot(reports: dict, path: Path) -> Path:
    """One panel per metric: its value in each hole-ratio bin, one line per method and mask set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from faceinpaint.atomic import atomic_write

    columns = next(iter(reports.values()))["protocol"]["metrics"]
    width = min(4, len(columns))
    rows = -(-len(columns) // width)
    figure, axes = plt.subplots(rows, width, figsize=(3.6 * width, 2.8 * rows), squeeze=False)
    styles = ["-o", "--s", ":^", "-.v"]
    for index, column in enumerate(columns):
        axis = axes[index // width][index % width]
        for set_index, (kind, report) in enumerate(reports.items()):
            for method_index, (method, result) in enumerate(report["methods"].items()):
                points = [(name, row.get(column)) for name, row in result["bins"].items()]
                points = [(name, value) for name, value in points if value is not None and np.isfinite(value)]
                if points:
                    axis.plot(
                        [name for name, _ in points],
                        [value for _, value in points],
                        styles[set_index % len(styles)],
                        color=f"C{method_index}",
                        label=f"{method} / {kind}",
                        markersize=3,
                    )
        axis.set_title(COLUMNS[column][0], fontsize=9)
        axis.set_xlabel("hole ratio", fontsize=8)
        axis.tick_params(labelsize=7)
    for index in range(len(columns), rows * width):
        axes[index // width][index % width].axis("off")
    handles, labels = axes[0][0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=min(4, max(1, len(labels))), fontsize=7)
    figure.tight_layout(rect=(0, 0.04 + 0.02 * (len(labels) // 4), 1, 1))
    with atomic_write(path) as stream:
        figure.savefig(stream, format="png", dpi=100)
    plt.close(figure)
    return path
