"""Random hole masks for training and evaluation: DeepFillv2 box + strokes, LaMa thin/medium/thick, centre square,
face parts (ellipses over the eyes, nose or mouth of an FFHQ-aligned face).

`random_mask` / `mask_set` / `write_mask_set` (numpy + OpenCV, bool (S, S), True = hole): mask i of a set depends only
on (kind, size, seed, i), so evaluation mask sets regenerate bit for bit anywhere (numpy Generator, integer geometry).
`mask_batches.torch_masks` draws the same distributions on the training device. Lengths are given at 256 px, as the
papers give them, and scaled linearly with the mask size.
"""

import csv
import io
import math
import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from faceinpaint.atomic import atomic_write
from faceinpaint.errors import InpaintError
from faceinpaint.images import write_image

BASE_SIZE = 256  # the size the published mask parameters are given at
MAX_HOLE_RATIO = 0.5  # LaMa's protocols reject and redraw masks with more hole than this

# DeepFillv2 (Yu et al., ICCV 2019), as in the authors' release: one box united with 1-3 zig-zag brush strokes.
DEEPFILL_BOX = 128  # box side before shrinking
DEEPFILL_MAX_DELTA = 32  # each box dimension shrinks by up to this, half taken from either side
DEEPFILL_STROKES = (1, 3)  # strokes per mask, inclusive
DEEPFILL_SEGMENTS = (4, 11)  # segments per stroke, inclusive
DEEPFILL_WIDTH = (12, 40)  # brush width: uniform in [12, 40), truncated to whole pixels
DEEPFILL_MEAN_ANGLE = 2 * math.pi / 5  # the stroke turns by about this at every vertex, alternating sides
DEEPFILL_ANGLE_RANGE = 2 * math.pi / 15

LAMA_MAX_ANGLE = 4  # segment direction: 0.01 + an integer in [0, 4) radians, mirrored on every other stroke
LAMA_SEGMENTS = 5  # 1-5 segments per stroke
LAMA_MIN_WIDTH = 5  # brush width = 5 + an integer in [0, max_width)
LAMA_MIN_LENGTH = 10  # segment length = 10 + an integer in [0, max_length)

# Face parts of an FFHQ-aligned 256 face (the framing of ../shared/data/faces and of `faceinpaint data align`), as
# filled ellipses (centre x, centre y, half-width, half-height): the mean extent of dlib's 68 landmarks of each part on
# 480 training faces, grown by the margins of the evaluation's `part:` masks (part_masks.PARTS). Each mask covers one
# part (a second one with FACE_PARTS_SECOND), scaled by FACE_PARTS_SCALE and shifted by FACE_PARTS_SHIFT px (normal,
# clipped at 2.5 sd): about the spread of those landmarks (5 px sd) plus the margin that hides the whole part.
FACE_PARTS = {
    "eyes": ((96, 121, 20, 12), (159, 121, 20, 12)),
    "nose": ((127, 146, 19, 30),),
    "mouth": ((127, 190, 34, 18),),
}
FACE_PARTS_SCALE = (0.9, 1.6)
FACE_PARTS_SHIFT = 6.0
FACE_PARTS_SECOND = 0.3


@dataclass(frozen=True)
class LamaProtocol:
    """One of LaMa's evaluation mask protocols (Suvorov et al., WACV 2022), lengths in pixels at 256.

    LaMa picks ONE generator per mask by normalised weight (strokes 1, boxes `box_weight`): strokes or boxes, not both.
    """

    min_strokes: int  # strokes per mask, inclusive range
    max_strokes: int
    max_width: int  # brush width is LAMA_MIN_WIDTH + an integer in [0, max_width)
    max_length: int  # segment length is LAMA_MIN_LENGTH + an integer in [0, max_length)
    box_weight: float = 0.0  # 0: strokes only
    min_boxes: int = 1  # boxes per box mask, inclusive range
    max_boxes: int = 1
    min_box: int = 1  # box sides are integers in [min_box, max_box)
    max_box: int = 2
    box_margin: int = 0  # boxes keep this far from the border


LAMA_PROTOCOLS = {
    "thin": LamaProtocol(4, 50, max_width=10, max_length=40),
    "medium": LamaProtocol(4, 5, max_width=50, max_length=100, box_weight=0.3, max_boxes=5, min_box=10, max_box=50),
    "thick": LamaProtocol(
        1, 5, max_width=100, max_length=200, box_weight=0.3, max_boxes=3, min_box=30, max_box=150, box_margin=10
    ),
}


def scaled_px(length: float, size: int, minimum: int = 0) -> int:
    """A length given at BASE_SIZE, in whole pixels at `size`."""
    return max(minimum, round(length * size / BASE_SIZE))


def _deepfill_mask(size: int, rng: np.random.Generator) -> np.ndarray:
    """DeepFillv2's training mask: a shrunken box united with 1-3 brush strokes (flipped at random)."""
    box, shrink = scaled_px(DEEPFILL_BOX, size, 1), scaled_px(DEEPFILL_MAX_DELTA, size) // 2
    top, left = (int(value) for value in rng.integers(0, size - box + 1, size=2))
    shrink_y, shrink_x = (int(value) for value in rng.integers(0, shrink + 1, size=2))
    mask = np.zeros((size, size), np.uint8)
    mask[top + shrink_y : top + box - shrink_y, left + shrink_x : left + box - shrink_x] = 1

    strokes = np.zeros((size, size), np.uint8)
    mean_radius = math.hypot(size, size) / 8
    for _ in range(rng.integers(DEEPFILL_STROKES[0], DEEPFILL_STROKES[1] + 1)):
        num_segments = int(rng.integers(DEEPFILL_SEGMENTS[0], DEEPFILL_SEGMENTS[1] + 1))
        width = max(1, int(rng.uniform(*DEEPFILL_WIDTH) * size / BASE_SIZE))
        low = DEEPFILL_MEAN_ANGLE - rng.uniform(0, DEEPFILL_ANGLE_RANGE)
        high = DEEPFILL_MEAN_ANGLE + rng.uniform(0, DEEPFILL_ANGLE_RANGE)
        x, y = (int(value) for value in rng.integers(0, size, size=2))
        cv2.circle(strokes, (x, y), width // 2, 1, -1)
        for segment in range(num_segments):
            angle = rng.uniform(low, high)
            angle = 2 * math.pi - angle if segment % 2 == 0 else angle
            radius = float(np.clip(rng.normal(mean_radius, mean_radius / 2), 0, 2 * mean_radius))
            end_x = min(max(round(x + radius * math.cos(angle)), 0), size - 1)
            end_y = min(max(round(y + radius * math.sin(angle)), 0), size - 1)
            cv2.line(strokes, (x, y), (end_x, end_y), 1, width)
            cv2.circle(strokes, (end_x, end_y), width // 2, 1, -1)  # round joints, as the release draws them
            x, y = end_x, end_y
    flip_x, flip_y = rng.random(2) < 0.5
    strokes = strokes[:: -1 if flip_y else 1, :: -1 if flip_x else 1]
    return (mask | strokes).astype(bool)


def _lama_mask(protocol: LamaProtocol, size: int, rng: np.random.Generator) -> np.ndarray:
    """One LaMa protocol mask: strokes, or boxes with probability box_weight / (1 + box_weight); redrawn if too big."""
    box_chance = protocol.box_weight / (1 + protocol.box_weight)
    while True:
        mask = np.zeros((size, size), np.uint8)
        if box_chance > 0 and rng.random() < box_chance:
            margin = scaled_px(protocol.box_margin, size)
            max_box = min(scaled_px(protocol.max_box, size, 2), size - 2 * margin)
            min_box = min(scaled_px(protocol.min_box, size, 1), max_box - 1)
            for _ in range(rng.integers(protocol.min_boxes, protocol.max_boxes + 1)):
                height, width = (int(value) for value in rng.integers(min_box, max_box, size=2))
                top = int(rng.integers(margin, size - margin - height + 1))
                left = int(rng.integers(margin, size - margin - width + 1))
                mask[top : top + height, left : left + width] = 1
        else:
            min_width, max_width = scaled_px(LAMA_MIN_WIDTH, size, 1), scaled_px(protocol.max_width, size, 1)
            min_length, max_length = scaled_px(LAMA_MIN_LENGTH, size, 1), scaled_px(protocol.max_length, size, 1)
            for stroke in range(rng.integers(protocol.min_strokes, protocol.max_strokes + 1)):
                x, y = (int(value) for value in rng.integers(0, size, size=2))
                for _ in range(rng.integers(1, LAMA_SEGMENTS + 1)):
                    angle = 0.01 + int(rng.integers(0, LAMA_MAX_ANGLE))
                    angle = 2 * math.pi - angle if stroke % 2 == 0 else angle
                    length = min_length + int(rng.integers(0, max_length))
                    width = min_width + int(rng.integers(0, max_width))
                    end_x = min(max(round(x + length * math.sin(angle)), 0), size - 1)
                    end_y = min(max(round(y + length * math.cos(angle)), 0), size - 1)
                    cv2.line(mask, (x, y), (end_x, end_y), 1, width)
                    x, y = end_x, end_y
        if 0 < mask.mean() <= MAX_HOLE_RATIO:
            return mask.astype(bool)


def center_mask(size: int, rng: np.random.Generator) -> np.ndarray:
    """Two-Face's fixed hole: a centred square of side size/4 (rows/cols 48..79 at 128); `rng` is unused."""
    side = size // 4
    start = (size - side) // 2
    mask = np.zeros((size, size), bool)
    mask[start : start + side, start : start + side] = True
    return mask


def _face_part_ellipses(choice: int, second: int, scale: float, shift: np.ndarray, size: int) -> list:
    """The ellipses (cx, cy, ax, ay) at `size` px of part `choice` (and `second`, if >= 0) of FACE_PARTS."""
    names = list(FACE_PARTS)
    chosen = [names[choice]] + ([names[second]] if second >= 0 else [])
    factor = size / BASE_SIZE
    return [
        ((x + shift[0]) * factor, (y + shift[1]) * factor, half_x * scale * factor, half_y * scale * factor)
        for name in chosen
        for x, y, half_x, half_y in FACE_PARTS[name]
    ]


def _face_parts_mask(size: int, rng: np.random.Generator) -> np.ndarray:
    """One or two of an aligned face's eyes / nose / mouth under filled ellipses (Two-Face's training holes)."""
    choice = int(rng.integers(len(FACE_PARTS)))
    other = int(rng.integers(len(FACE_PARTS) - 1))
    second = other + (other >= choice) if rng.random() < FACE_PARTS_SECOND else -1
    scale = rng.uniform(*FACE_PARTS_SCALE)
    shift = np.clip(rng.normal(0, FACE_PARTS_SHIFT, 2), -2.5 * FACE_PARTS_SHIFT, 2.5 * FACE_PARTS_SHIFT)
    canvas = np.zeros((size, size), np.uint8)
    for x, y, half_x, half_y in _face_part_ellipses(choice, second, scale, shift, size):
        center, axes = (round(x), round(y)), (max(round(half_x), 1), max(round(half_y), 1))
        cv2.ellipse(canvas, center, axes, 0, 0, 360, 255, thickness=-1)
    return canvas > 0


MASK_KINDS = {
    "deepfill": _deepfill_mask,
    "lama-thin": partial(_lama_mask, LAMA_PROTOCOLS["thin"]),
    "lama-medium": partial(_lama_mask, LAMA_PROTOCOLS["medium"]),
    "lama-thick": partial(_lama_mask, LAMA_PROTOCOLS["thick"]),
    "center": center_mask,
    "face-parts": _face_parts_mask,
}


def check_kind(kind: str, size: int, count: int = 1, seed: int = 0) -> None:
    """Raise an InpaintError naming the first bad argument."""
    if kind not in MASK_KINDS:
        raise InpaintError(f"unknown mask kind {kind!r}; choose one of {', '.join(MASK_KINDS)}")
    for name, value, minimum in (("size", size, 8), ("count", count, 1), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
            raise InpaintError(f"mask {name} must be an integer >= {minimum}, got {value!r}")
    if size % 8:
        raise InpaintError(f"mask size {size} is not a multiple of 8 (the networks downsample by 8)")


def random_mask(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """Draw one mask of a kind in MASK_KINDS.

    Args:
        kind: "deepfill", "lama-thin", "lama-medium", "lama-thick" or "center".
        size: side in pixels, a multiple of 8 (>= 8).
        rng: the numpy Generator to draw from.

    Returns:
        bool (size, size), True = hole.
    """
    check_kind(kind, size)
    return MASK_KINDS[kind](size, rng)


def _mask_at(kind: str, size: int, seed: int, index: int) -> np.ndarray:
    """Mask `index` of a set: its own Generator seeded from (seed, index), so it never depends on the others."""
    return MASK_KINDS[kind](size, np.random.default_rng([int(seed), index]))


def mask_set(kind: str, count: int, size: int, seed: int) -> np.ndarray:
    """A reproducible set of masks: mask i depends only on (kind, size, seed, i).

    A prefix of a larger set equals the smaller set, and the same call gives the same bits on any machine.

    Returns:
        bool (count, size, size), True = hole.
    """
    check_kind(kind, size, count, seed)
    return np.stack([_mask_at(kind, size, seed, index) for index in range(count)])


def write_mask_set(kind: str, count: int, size: int, seed: int, out_dir: str | os.PathLike) -> Path:
    """Write `mask_set(kind, count, size, seed)` as out_dir/00000.png ... (mode L, 255 = hole) and out_dir/masks.csv.

    masks.csv has the columns file,hole_ratio and is written last, so its presence marks a complete set. Every file
    is written atomically; a folder that already holds anything is refused rather than mixed with a new set.

    Returns:
        out_dir as a Path.
    """
    check_kind(kind, size, count, seed)
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise InpaintError(f"output {out_dir} is not an empty folder; write a mask set into a new or empty folder")
    digits = max(5, len(str(count - 1)))
    rows = [("file", "hole_ratio")]
    for index in range(count):
        mask = _mask_at(kind, size, seed, index)
        name = f"{index:0{digits}d}.png"
        write_image(Image.fromarray(mask.astype(np.uint8) * 255, "L"), out_dir / name)
        rows.append((name, f"{mask.mean():.6f}"))
    text = io.StringIO(newline="")
    csv.writer(text).writerows(rows)
    try:
        with atomic_write(out_dir / "masks.csv") as stream:
            stream.write(text.getvalue().encode())
    except OSError as error:
        raise InpaintError(f"output {out_dir / 'masks.csv'}: cannot write it ({error.strerror or error})") from None
    return out_dir
