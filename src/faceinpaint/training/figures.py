"""Image grids: training samples, and seed 000's training-progress figure (faces x checkpoints)."""

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from faceinpaint.errors import InpaintError
from faceinpaint.images import IMAGE_EXTENSIONS, read_image, read_mask, tensor_to_uint8, write_image
from faceinpaint.training.checkpoint import inpainter_from_checkpoint, list_checkpoints, load_checkpoint

LABEL_HEIGHT = 16  # pixels above each column for its title


def _masked(images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Show holes as white, the way the figures of the papers do."""
    return images * (1.0 - masks) + masks


def save_grid(real, mask, coarse, refined, path: Path, rows: int = 4, reference=None) -> np.ndarray:
    """Rows of (masked input | [reference |] coarse | refined | ground truth); returns the grid as uint8 (H, W, 3).

    A dropped reference (zeroed in training) shows as mid-grey."""
    columns = [_masked(real, mask)] + ([reference] if reference is not None else []) + [coarse, refined, real]
    tiles = [tensor_to_uint8(column[:rows].detach().float()) for column in columns]  # each (rows, R, R, 3)
    grid = np.concatenate([np.concatenate(list(row), axis=1) for row in zip(*tiles, strict=True)], axis=0)
    write_image(Image.fromarray(grid), path)
    return grid


def labelled_grid(columns: list[tuple[str, list[np.ndarray]]], gap: int = 4) -> Image.Image:
    """Columns of equal-size uint8 tiles, each under its title, on white."""
    size = columns[0][1][0].shape[0]
    rows = len(columns[0][1])
    canvas = Image.new("RGB", (len(columns) * (size + gap) - gap, LABEL_HEIGHT + rows * (size + gap) - gap), "white")
    draw = ImageDraw.Draw(canvas)
    for number, (title, tiles) in enumerate(columns):
        x = number * (size + gap)
        draw.text((x + 2, 2), title, fill="black")
        for row, tile in enumerate(tiles):
            canvas.paste(Image.fromarray(tile), (x, LABEL_HEIGHT + row * (size + gap)))
    return canvas


def _pairs(images_dir: Path, masks_dir: Path) -> list[tuple[Path, Path]]:
    """Images with their masks: by file stem, else in sorted order."""
    images = sorted(p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    masks = sorted(p for p in masks_dir.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    by_stem = {p.stem: p for p in masks}
    if images and all(p.stem in by_stem for p in images):
        return [(p, by_stem[p.stem]) for p in images]
    if not images or not masks:
        raise InpaintError(f"need images in {images_dir} and masks in {masks_dir}")
    return list(zip(images, masks[: len(images)], strict=False))


def progress_figure(run_dir: Path, images_dir: Path, masks_dir: Path, out: Path, columns: int = 6) -> Path:
    """Seed 000's figure: rows of faces; input | the EMA generator at `columns` checkpoints | ground truth.

    The checkpoints are spread evenly over the run (the last one always included); keep them with the config's
    `train.keep_every`.
    """
    found = list_checkpoints(run_dir)
    if not found:
        raise InpaintError(f"run dir {run_dir} holds no checkpoint")
    count = min(columns, len(found))
    picks = sorted({found[round(i * (len(found) - 1) / max(1, count - 1))] for i in range(count)})
    pairs = _pairs(images_dir, masks_dir)
    faces = [np.asarray(read_image(image).convert("RGB")) for image, _ in pairs]
    holes = [read_mask(mask) for _, mask in pairs]
    if any(face.shape[:2] != hole.shape for face, hole in zip(faces, holes, strict=True)):
        raise InpaintError("every mask must have the size of its image")
    masked = [np.where(hole[..., None], 255, face).astype(np.uint8) for face, hole in zip(faces, holes, strict=True)]
    grid = [("input", masked)]
    for step, path in picks:
        inpainter = inpainter_from_checkpoint(load_checkpoint(path))
        grid.append((f"step {step}", [inpainter(face, hole) for face, hole in zip(faces, holes, strict=True)]))
    grid.append(("ground truth", faces))
    size = max(face.shape[0] for face in faces)
    grid = [(title, [np.asarray(Image.fromarray(t).resize((size, size))) for t in tiles]) for title, tiles in grid]
    write_image(labelled_grid(grid), out)
    return out
