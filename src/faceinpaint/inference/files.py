"""Inpaint files or folders (under torchrun, a rank's slice): pair inputs by file stem, write outputs safely."""

import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from faceinpaint.errors import InpaintError
from faceinpaint.images import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, path_exists, read_image, read_mask, write_image
from faceinpaint.inference.shards import SINGLE_PROCESS, Shard, gather_counts
from faceinpaint.inpainter import Inpainter


@dataclass(frozen=True)
class Job:
    """One image to inpaint: where it comes from, its mask and reference, and where the result goes."""

    image: Path
    mask: Path | None  # None: no mask was found for this image (reported as a failure)
    reference: Path | None
    out: Path


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _by_stem(source: Path | None, folder_mode: bool) -> dict[str, Path] | Path | None:
    """A folder becomes {stem: file}; a single file applies to every image."""
    if source is None or not source.is_dir():
        return source
    if not folder_mode:
        raise InpaintError(f"{source} is a folder, but --image is a single file; give a file here too")
    return {p.stem: p for p in _images_in(source)}


def plan_jobs(image: Path, mask: Path, reference: Path | None, out: Path) -> list[Job]:
    """Pair every image with its mask / reference (same stem in a folder, or one file for all) and its output."""
    for path, what in ((image, "image"), (mask, "mask"), (reference, "reference")):
        if path is not None and not path_exists(path, what):
            raise InpaintError(f"{what} {path}: no such file or folder")
    out_exists = path_exists(out, "--out")
    out_is_folder = out_exists and out.is_dir()
    folder_mode = image.is_dir()
    masks, references = _by_stem(mask, folder_mode), _by_stem(reference, folder_mode)
    if folder_mode:
        if out_exists and not out_is_folder:
            raise InpaintError(f"--out {out}: --image is a folder, so --out must be a folder too")
        if out.resolve() == image.resolve():
            raise InpaintError(f"--out {out} is the input folder; choose another one (inputs are never overwritten)")
        images = _images_in(image)
        if not images:
            raise InpaintError(f"image folder {image} holds no image files ({', '.join(IMAGE_EXTENSIONS)})")
        targets = [out / p.name for p in images]
    else:
        images, targets = [image], [out / image.name if out_is_folder else out]

    jobs = []
    for source, target in zip(images, targets, strict=True):
        job = Job(
            image=source,
            mask=masks.get(source.stem) if isinstance(masks, dict) else masks,
            reference=references.get(source.stem) if isinstance(references, dict) else references,
            out=target,
        )
        inputs = {p.resolve() for p in (job.image, job.mask, job.reference) if p is not None}
        if target.resolve() in inputs:
            raise InpaintError(
                f"--out {target} is one of the inputs; choose another path (inputs are never overwritten)"
            )
        jobs.append(job)
    return jobs


def run_job(inpainter: Inpainter, job: Job, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    """Read, inpaint and write one image; any problem is an InpaintError naming the file."""
    if job.mask is None:
        raise InpaintError(f"no mask named {job.image.stem}.* for {job.image.name}")
    image = read_image(job.image, max_pixels)
    hole = read_mask(job.mask, max_pixels)
    reference = None if job.reference is None else read_image(job.reference, max_pixels)
    if hole.shape != (image.height, image.width):
        raise InpaintError(
            f"mask {job.mask} is {hole.shape[1]}x{hole.shape[0]} but image {job.image} is {image.width}x{image.height}"
        )
    write_image(inpainter(image, hole, reference), job.out)


def run_jobs(inpainter: Inpainter, jobs: list[Job], max_pixels: int, progress: bool = True) -> int:
    """Run jobs with a progress bar (unless `progress` is False); report and skip failures. Returns the failures."""
    failed = 0
    bar = tqdm(
        jobs,
        desc=f"inpainting with {inpainter.name}",
        unit="image",
        disable=None if progress else True,
        file=sys.stderr,
    )
    for job in bar:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("always")
                run_job(inpainter, job, max_pixels)
        except InpaintError as error:
            failed += 1
            tqdm.write(f"faceinpaint: skipped {job.image.name}: {error}", file=sys.stderr)
    return failed


def inpaint_paths(
    inpainter: Inpainter,
    image: Path,
    mask: Path,
    reference: Path | None,
    out: Path,
    max_pixels: int,
    shard: Shard = SINGLE_PROCESS,
) -> list[tuple[int, int]]:
    """Inpaint a file or a folder; under torchrun (`shard` of several) only this rank's slice of the folder.

    Returns (images written, images failed) for each rank, in rank order: one pair for a plain run. A single
    image whose inputs are bad is an InpaintError; in a folder, failures are reported and skipped.
    """
    jobs = plan_jobs(image, mask, reference, out)
    if shard.world == 1 and len(jobs) == 1:
        run_job(inpainter, jobs[0], max_pixels)
        return [(1, 0)]
    mine = shard.take(jobs)
    # Ranks other than 0 work silently: interleaved progress bars on one terminal are unreadable.
    failed = run_jobs(inpainter, mine, max_pixels, progress=shard.rank == 0)
    return gather_counts((len(mine) - failed, failed), shard)
