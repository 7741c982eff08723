"""Evaluate inpainting methods on the same faces and masks: per-image and set-level metrics, per hole-ratio bin.

`evaluate(weights, images, masks, out_dir)` runs every method on every (image, mask) pair, writes the outputs
(`OUT/<method>/<key>.png`) and `results.json`, `results.csv`, `results.md` and `per_image.csv`, and returns the
results dict. Ground-truth features (Inception, face embeddings) are computed once and shared by all methods.
"""

import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from faceinpaint import __version__
from faceinpaint.atomic import atomic_write, write_csv
from faceinpaint.data.datasets import find_images, list_images, match_by_key
from faceinpaint.errors import InpaintError
from faceinpaint.evaluation.metrics import (
    HOLE_BINS,
    fid_from_features,
    hole_bin,
    hole_ratio,
    inception_discriminative_scores,
    l1,
    l1_hole,
    psnr,
    psnr_hole,
    ssim,
)
from faceinpaint.evaluation.results import write_results
from faceinpaint.images import read_image, read_mask, tensor_to_uint8, uint8_to_tensor, write_image

# What `--metrics` accepts -> the columns each one adds to the results (higher or lower is better, see
# results.COLUMNS).
METRICS = {
    "psnr": ("psnr", "psnr_hole"),
    "ssim": ("ssim",),
    "l1": ("l1", "l1_hole"),
    "stlpips": ("stlpips", "stlpips_hole"),
    "fid": ("fid",),
    "ids": ("u_ids", "p_ids"),
    "identity": ("identity_cosine_sface", "identity_cosine_dlib"),
}
SET_LEVEL = ("fid", "u_ids", "p_ids")
PART_MASKS = "part:"  # --masks part:eyes,mouth: a hole over those parts of every face (faceinpaint.faces.part_masks)
MASKS_FILE = "masks.npz"  # every run's holes, bit-packed, with the image keys
NO_REFERENCE = "-noref"  # suffix of a reference-guided method's run without its reference (reference_ablation)


def part_masks(masks: str, paths: list[Path]) -> tuple[np.ndarray, int]:
    """Bool holes (N, H, W) over the face parts named by `masks` ("part:eyes", "part:nose,mouth") of each image,
    and how many faces were not found (they take the others' mean landmarks: see aligned_part_masks)."""
    from faceinpaint.faces.part_masks import aligned_part_masks, parse_parts

    parts = parse_parts(masks.removeprefix(PART_MASKS))
    try:
        return aligned_part_masks([np.asarray(read_image(path).convert("RGB")) for path in paths], parts)
    except InpaintError as error:
        raise InpaintError(f"--masks {masks}: {error} ({paths[0]}{' ...' if len(paths) > 1 else ''})") from None


def load_masks(
    masks: str | Path, keys: list[str], size: tuple[int, int], seed: int = 0, paths: list[Path] | None = None
) -> tuple[np.ndarray, str]:
    """Bool holes (N, H, W) for the images `keys` (at `paths`) and a description: a mask kind, face parts of
    every image ("part:eyes", from dlib's landmarks), a folder or one file."""
    from faceinpaint.data.masks import MASK_KINDS, mask_set

    if str(masks).startswith(PART_MASKS):
        if paths is None:
            raise ValueError("part masks need the images' paths")
        holes, missing = part_masks(str(masks), paths)
        return holes, f"{masks} (dlib 68 landmarks; faces not found, given the mean: {missing})"
    if str(masks) in MASK_KINDS:
        if size[0] != size[1]:
            raise InpaintError(
                f"--masks {masks}: generated mask sets are square, but the images are {size[1]}x{size[0]}"
            )
        return mask_set(str(masks), len(keys), size[0], seed), f"{masks} (seed {seed})"
    path = Path(masks)
    if path.is_file():
        return np.repeat(read_mask(path)[None], len(keys), axis=0), str(path)
    if not path.is_dir():
        raise InpaintError(
            f"--masks {masks}: not a mask kind ({', '.join(MASK_KINDS)}), {PART_MASKS}PARTS, folder or file"
        )
    mask_paths = match_by_key(keys, {str(p.relative_to(path).with_suffix("")): p for p in find_images(path)})
    if None in mask_paths:
        raise InpaintError(f"--masks {path}: no mask for image {keys[mask_paths.index(None)]}")
    found = [read_mask(mask_path) for mask_path in mask_paths]
    if any(mask.shape != size for mask in found):
        raise InpaintError(f"--masks {path}: every mask must be {size[1]}x{size[0]}, the size of the images")
    return np.stack(found), str(path)


def read_batch(paths: list[Path], size: tuple[int, int] | None = None) -> torch.Tensor:
    """Images (B, 3, H, W) in [-1, 1] read from `paths`; all of `size` (H, W) when given, else of one size."""
    pixels = [np.asarray(read_image(p).convert("RGB")) for p in paths]
    for path, image in zip(paths, pixels, strict=True):
        if size is not None and image.shape[:2] != size:
            raise InpaintError(f"image {path} is {image.shape[1]}x{image.shape[0]}; all must be {size[1]}x{size[0]}")
    return uint8_to_tensor(np.stack(pixels))


class _Judges:
    """The metric networks a run needs, loaded once; ground-truth features are cached per image."""

    def __init__(self, columns: set[str], device: torch.device):
        self.inception = self.stlpips = None
        self.identity = {}
        if columns & set(SET_LEVEL):
            from faceinpaint.evaluation.fid import InceptionFeatures

            self.inception = InceptionFeatures(device)
        if "stlpips" in columns:
            from faceinpaint.models.perceptual import STLPIPS

            self.stlpips = STLPIPS.from_package(device)
        if "identity_cosine_sface" in columns:
            from faceinpaint.evaluation.identity import SFaceJudge

            self.identity["sface"] = SFaceJudge()
        if "identity_cosine_dlib" in columns:
            from faceinpaint.evaluation.identity import DlibJudge, dlib_available

            if dlib_available():
                self.identity["dlib"] = DlibJudge()


def evaluate(
    weights: list[str],
    images: str | Path | dict[str, Path],
    masks: str | Path,
    out_dir: str | Path,
    metrics: tuple[str, ...] = tuple(METRICS),
    references: str | Path | dict[str, Path] | None = None,
    reference_ablation: bool = False,
    mask_seed: int = 0,
    limit: int | None = None,
    batch_size: int = 16,
    device: str = "auto",
    save_outputs: bool = True,
    progress: bool = True,
) -> dict:
    """Run every method on the same images and masks and measure the outputs against the ground truth.

    Args:
        weights: method names or model dirs, as `Inpainter.from_pretrained` takes them.
        images: a folder (recursive), a file list, or a dict {key: path}; all images the same size (H, W).
        masks: a mask kind of `faceinpaint.data.masks.MASK_KINDS` (mask i = mask_set(kind, N, H, mask_seed)[i]), a
            folder of masks matched to images by relative path or stem, or one mask file for all; > 127 = hole.
        out_dir: where outputs (`<method>/<key>.png`) and the results files go.
        metrics: names of METRICS; "identity" measures with SFace, and with dlib too when it is installed.
        references: for reference-guided models: a folder of reference photos matched by key or stem, or a dict
            {key: path} (see faceinpaint.data.references); other methods ignore them.
        reference_ablation: also run every reference-guided method without its reference, as "<name>-noref".
        limit: use only the first `limit` images (in key order).
    Returns:
        {"protocol": {...}, "methods": {name: {"all": {column: value, "count": n}, "bins": {bin: {...}},
        "seconds": s}}}; per-image values are averaged (NaN-skipping), set-level ones use all images of the bin.
    """
    from faceinpaint.inpainter import Inpainter, resolve_device

    columns = _columns(metrics, weights)
    out_dir, run_device = Path(out_dir), resolve_device(device)
    found = images if isinstance(images, dict) else list_images(images)
    keys = list(found)[:limit] if limit else list(found)
    paths = [Path(found[key]) for key in keys]
    size = tuple(np.asarray(read_image(paths[0])).shape[:2])
    holes, mask_description = load_masks(masks, keys, size, mask_seed, paths)
    reference_paths = _reference_paths(references, keys)
    ratios = hole_ratio(torch.from_numpy(holes)[:, None])
    bins = np.array([hole_bin(r) for r in ratios])
    judges = _Judges(set(columns), run_device)
    if "identity_cosine_dlib" in columns and "dlib" not in judges.identity:
        columns.remove("identity_cosine_dlib")  # optional: not installed
    batches = [range(i, min(i + batch_size, len(keys))) for i in range(0, len(keys), batch_size)]

    real_features, targets_prepared = _ground_truth(judges, batches, paths, size, progress)

    results = {}
    per_image_rows = []
    for weight in weights:
        inpainter = Inpainter.from_pretrained(weight, device=device)
        for name, use_reference in _variants(inpainter, reference_paths is not None, reference_ablation):
            started = time.perf_counter()
            values, fake_features = _run_method(
                inpainter, name, keys, paths, size, holes, reference_paths if use_reference else None, columns,
                judges, targets_prepared, batches, out_dir if save_outputs else None, progress, run_device,
            )  # fmt: skip
            seconds = time.perf_counter() - started
            results[name] = _summarise(values, columns, bins, real_features, fake_features)
            results[name]["seconds"] = round(seconds, 2)
            for i, key in enumerate(keys):
                row = {"method": name, "image": key, "hole_ratio": round(float(ratios[i]), 5)}
                per_image_rows.append(row | {column: float(values[column][i]) for column in values})

    protocol = {
        "images": str(images) if not isinstance(images, dict) else f"{len(found)} listed images",
        "count": len(keys),
        "size": list(size),
        "masks": mask_description,
        "references": _describe_references(references),
        "mean_hole_ratio": round(float(ratios.mean()), 4),
        "metrics": columns,
        "faceinpaint": __version__,
        "device": str(run_device),
    }
    return _write_report({"protocol": protocol, "methods": results}, per_image_rows, keys, holes, out_dir)


def _write_report(report: dict, per_image_rows: list[dict], keys: list[str], holes: np.ndarray, out_dir: Path):
    """results.json / .csv / .md, per_image.csv and the exact holes (masks.npz, see read_masks); -> report."""
    write_results(report, out_dir)
    write_csv(out_dir / "per_image.csv", per_image_rows)
    with atomic_write(out_dir / MASKS_FILE) as stream:
        np.savez_compressed(stream, keys=np.array(keys), holes=np.packbits(holes, axis=-1), width=holes.shape[-1])
    return report


def _columns(metrics: tuple[str, ...], weights: list[str]) -> list[str]:
    """The result columns of the named metrics; unknown metrics or no method at all are errors."""
    unknown = [name for name in metrics if name not in METRICS]
    if unknown:
        raise InpaintError(f"unknown metric(s) {', '.join(unknown)}; valid: {', '.join(METRICS)}")
    if not weights:
        raise InpaintError("give at least one method to evaluate (--weights)")
    return [column for name in metrics for column in METRICS[name]]


def _variants(inpainter, have_references: bool, reference_ablation: bool) -> list[tuple[str, bool]]:
    """(result name, with its reference?) runs of one method: a guided model with references, and again without
    them as "<name>-noref" under `reference_ablation`; a method that needs references and has none is an error."""
    guided = have_references and inpainter.uses_reference
    if inpainter.needs_reference and not guided:
        raise InpaintError(f"{inpainter.name} needs reference photos: give --same-person POOL or --references DIR")
    variants = [(inpainter.name, guided)]
    if guided and reference_ablation and not inpainter.needs_reference:
        variants.append((inpainter.name + NO_REFERENCE, False))
    return variants


def _reference_paths(references, keys: list[str]) -> list[Path] | None:
    """Each image's reference photo: from a dict {key: path}, or matched by key or stem in a folder or list."""
    if references is None:
        return None
    if isinstance(references, dict):
        missing = [key for key in keys if key not in references]
        if missing:
            raise InpaintError(f"references: none given for image {missing[0]}")
        return [Path(references[key]) for key in keys]
    paths = match_by_key(keys, list_images(references))
    if None in paths:
        raise InpaintError(f"--references {references}: no reference for image {keys[paths.index(None)]}")
    return paths


def _ground_truth(judges, batches, paths, size, progress: bool) -> tuple[np.ndarray | None, dict]:
    """Once per evaluation: the ground truth's Inception features and each identity judge's prepared faces."""
    real_features, prepared = [], {name: [] for name in judges.identity}
    if judges.inception is not None or judges.identity:
        for batch in tqdm(batches, desc="ground truth", disable=not progress, unit="batch"):
            target = read_batch([paths[i] for i in batch], size)
            if judges.inception is not None:
                real_features.append(judges.inception(target))
            for name, judge in judges.identity.items():
                prepared[name] += [judge.prepare(t) for t in tensor_to_uint8(target)]
    return (torch.cat(real_features).numpy() if real_features else None), prepared


def _run_method(
    inpainter, name, keys, paths, size, holes, reference_paths, columns, judges, targets_prepared, batches, out_dir,
    progress, run_device,
) -> tuple[dict, np.ndarray | None]:  # fmt: skip
    """One method (or its no-reference variant, `reference_paths=None`) over every batch: per-image values of the
    columns and the outputs' Inception features; the outputs written under `out_dir / name` unless it is None."""
    values = {column: np.full(len(keys), np.nan) for column in columns if column not in SET_LEVEL}
    fake_features = []
    for batch in tqdm(batches, desc=name, disable=not progress, unit="batch"):
        index = list(batch)
        target = read_batch([paths[i] for i in index], size)
        hole = torch.from_numpy(holes[index])[:, None]  # (B, 1, H, W) bool
        reference = None if reference_paths is None else read_batch([reference_paths[i] for i in index])
        completed = torch.where(hole, inpainter.complete(target * ~hole, hole, reference), target)
        output_uint8 = tensor_to_uint8(completed)
        output = uint8_to_tensor(output_uint8)  # exactly what is saved
        if out_dir is not None:
            for i, pixels in zip(index, output_uint8, strict=True):
                write_image(Image.fromarray(pixels), out_dir / name / f"{keys[i]}.png")
        _measure(values, index, output, target, hole, judges, targets_prepared, run_device)
        if judges.inception is not None:
            fake_features.append(judges.inception(output))
    return values, (torch.cat(fake_features).numpy() if fake_features else None)


def read_masks(out_dir: str | Path) -> dict[str, np.ndarray]:
    """The holes an evaluate run used: {key: bool (H, W)}."""
    with np.load(Path(out_dir) / MASKS_FILE) as saved:
        holes = np.unpackbits(saved["holes"], axis=-1, count=int(saved["width"])).astype(bool)
        return dict(zip(saved["keys"].tolist(), holes, strict=True))


def _describe_references(references) -> str | None:
    if isinstance(references, dict):
        return f"{len(references)} given (same person)"
    return None if references is None else str(references)


def _measure(values, index, output, target, hole, judges, targets_prepared, device) -> None:
    """Fill the per-image columns of `values` at `index` for one batch."""
    if "psnr" in values:
        values["psnr"][index] = psnr(output, target)
        values["psnr_hole"][index] = psnr_hole(output, target, hole)
    if "ssim" in values:
        values["ssim"][index] = ssim(output.to(device), target.to(device))
    if "l1" in values:
        values["l1"][index] = l1(output, target)
        values["l1_hole"][index] = l1_hole(output, target, hole)
    if judges.stlpips is not None:
        with torch.inference_mode():
            whole, in_hole = judges.stlpips.distances(output, target, hole)
        values["stlpips"][index] = whole.double().cpu().numpy()
        values["stlpips_hole"][index] = in_hole.double().cpu().numpy()
    for name, judge in judges.identity.items():
        column = f"identity_cosine_{name}"
        for i, pixels in zip(index, tensor_to_uint8(output), strict=True):
            values[column][i] = judge.compare(pixels, targets_prepared[name][i])


def _summarise(values, columns, bins, real_features, fake_features) -> dict:
    """Means of the per-image columns and the set-level metrics, over all images and per hole-ratio bin."""

    def summary(selected: np.ndarray) -> dict:
        row = {"count": int(selected.sum())}
        for column in columns:
            if column in values:
                picked = values[column][selected]
                picked = picked[~np.isnan(picked)]
                row[column] = float(np.mean(picked)) if picked.size else None
        if fake_features is not None and selected.sum() >= 2:
            if "fid" in columns:
                row["fid"] = fid_from_features(real_features[selected], fake_features[selected])
            if "u_ids" in columns:
                row["u_ids"], row["p_ids"] = inception_discriminative_scores(
                    real_features[selected], fake_features[selected]
                )
        return row

    everything = np.ones(len(bins), dtype=bool)
    per_bin = {name: summary(bins == name) for name in HOLE_BINS if (bins == name).any()}
    return {"all": summary(everything), "bins": per_bin}
