"""Random hole masks for training and evaluation: DeepFillv2 box + strokes, LaMa thin/medium/thick, centre square,
face parts (ellipses over the eyes, nose or mouth of an FFHQ-aligned face).

`random_mask` / `mask_set` / `write_mask_set` (numpy + OpenCV, bool (S, S), True = hole): mask i of a set depends only
on (kind, size, seed, i), so evaluation mask sets regenerate bit for bit anywhere (numpy Generator, integer geometry).
`torch_masks` (float (B, 1, S, S), 1 = hole) draws the same distributions, not the same bits, vectorised on the
training device so the GPU data path never waits for a CPU loader. Lengths are given at 256 px, as the papers give
them, and scaled linearly with the mask size.
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
import torch
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

# Pixels x segments the torch rasteriser tests at once (at least one segment for the whole batch): bounds its memory
# to a few float32 tensors of this many elements while keeping each kernel big enough; GPUs want more than CPUs.
_CHUNK_ELEMENTS = {"cpu": 1 << 23, "cuda": 1 << 25}


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


def _px(length: float, size: int, minimum: int = 0) -> int:
    """A length given at BASE_SIZE, in whole pixels at `size`."""
    return max(minimum, round(length * size / BASE_SIZE))


def _deepfill_mask(size: int, rng: np.random.Generator) -> np.ndarray:
    """DeepFillv2's training mask: a shrunken box united with 1-3 brush strokes (flipped at random)."""
    box, shrink = _px(DEEPFILL_BOX, size, 1), _px(DEEPFILL_MAX_DELTA, size) // 2
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
            margin = _px(protocol.box_margin, size)
            max_box = min(_px(protocol.max_box, size, 2), size - 2 * margin)
            min_box = min(_px(protocol.min_box, size, 1), max_box - 1)
            for _ in range(rng.integers(protocol.min_boxes, protocol.max_boxes + 1)):
                height, width = (int(value) for value in rng.integers(min_box, max_box, size=2))
                top = int(rng.integers(margin, size - margin - height + 1))
                left = int(rng.integers(margin, size - margin - width + 1))
                mask[top : top + height, left : left + width] = 1
        else:
            min_width, max_width = _px(LAMA_MIN_WIDTH, size, 1), _px(protocol.max_width, size, 1)
            min_length, max_length = _px(LAMA_MIN_LENGTH, size, 1), _px(protocol.max_length, size, 1)
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


def _center_mask(size: int, rng: np.random.Generator) -> np.ndarray:
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
    "center": _center_mask,
    "face-parts": _face_parts_mask,
}


def _check(kind: str, size: int, count: int = 1, seed: int = 0) -> None:
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
    _check(kind, size)
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
    _check(kind, size, count, seed)
    return np.stack([_mask_at(kind, size, seed, index) for index in range(count)])


def write_mask_set(kind: str, count: int, size: int, seed: int, out_dir: str | os.PathLike) -> Path:
    """Write `mask_set(kind, count, size, seed)` as out_dir/00000.png ... (mode L, 255 = hole) and out_dir/masks.csv.

    masks.csv has the columns file,hole_ratio and is written last, so its presence marks a complete set. Every file
    is written atomically; a folder that already holds anything is refused rather than mixed with a new set.

    Returns:
        out_dir as a Path.
    """
    _check(kind, size, count, seed)
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


def _rand(generator: torch.Generator, shape: tuple[int, ...]) -> torch.Tensor:
    """Uniform [0, 1) float32 on the generator's device."""
    return torch.rand(shape, generator=generator, device=generator.device)


def _randint(generator: torch.Generator, low, high, shape: tuple[int, ...]) -> torch.Tensor:
    """Integers in [low, high) as float32; low and high may be tensors broadcasting to `shape`."""
    return (low + _rand(generator, shape) * (high - low)).floor()


def _rasterise(size, starts, ends, radii, valid, boxes, box_valid, device) -> torch.Tensor:
    """Union of thick segments (capsules) and boxes over a (size, size) pixel grid.

    starts, ends (B, N, 2) as (x, y); radii, valid (B, N); boxes (B, M, 4) as top, left, bottom, right (bottom and
    right exclusive), box_valid (B, M). Returns bool (B, size, size), True = hole.
    """
    chunk_elements = _CHUNK_ELEMENTS.get(device.type, _CHUNK_ELEMENTS["cpu"])
    starts, ends = starts.to(device), ends.to(device)
    # An invalid segment gets a negative squared radius, so no pixel is inside it.
    radius2 = torch.where(valid.to(device), radii.to(device).square(), -1.0)
    batch, num_segments = radius2.shape
    coords = torch.arange(size, device=device, dtype=torch.float32)
    hole = torch.zeros((batch, size, size), dtype=torch.bool, device=device)
    chunk = max(1, chunk_elements // (batch * size * size))
    for first in range(0, num_segments, chunk):
        part = slice(first, first + chunk)
        delta = (ends[:, part] - starts[:, part])[..., None]  # (B, n, 2, 1)
        length2 = delta.square().sum(2, keepdim=True).clamp_min(1e-6)  # (B, n, 1, 1)
        offset = coords - starts[:, part, :, None]  # (B, n, 2, S): pixel minus start, per axis
        # With q = pixel - start and t = q.delta / |delta|^2 clamped to [0, 1], the squared distance to the segment
        # is |q|^2 - 2 t (q.delta) + t^2 |delta|^2; both q-terms separate into a row part plus a column part.
        projection = offset * delta / length2  # (B, n, 2, S)
        along_raw = projection[:, :, 0, None, :] + projection[:, :, 1, :, None]  # (B, n, S, S): rows y, cols x
        along = along_raw.clamp(0, 1)
        offset2 = offset.square()
        distance2 = along_raw.mul_(-2).add_(along).mul_(along).mul_(length2)
        distance2 += offset2[:, :, 0, None, :] + offset2[:, :, 1, :, None]
        hole |= (distance2 <= radius2[:, part, None, None]).any(1)
    x, y = coords.view(1, 1, 1, size), coords.view(1, 1, size, 1)
    top, left, bottom, right = (side[..., None, None] for side in boxes.to(device).unbind(-1))  # (B, M, 1, 1)
    inside = (y >= top) & (y < bottom) & (x >= left) & (x < right) & box_valid.to(device)[..., None, None]
    return hole | inside.any(1)


def _segments(points: torch.Tensor, widths: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(B, K, V + 1, 2) polyline vertices, (B, K, V) widths -> flat (B, K * V, ...) starts, ends, radii.

    OpenCV draws thickness w with radius (w + 1) // 2 but fills the polygon generously (every pixel its edges touch):
    on average 0.4 px more, measured over random segments; adding that keeps both implementations' hole ratios equal.
    """
    batch = points.shape[0]
    radii = ((widths + 1) / 2).floor() + 0.4
    return points[:, :, :-1].reshape(batch, -1, 2), points[:, :, 1:].reshape(batch, -1, 2), radii.reshape(batch, -1)


def _deepfill_torch(batch: int, size: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """`_deepfill_mask` for a whole batch: up to 3 strokes x 11 segments each, unused ones marked invalid."""
    box, shrink = _px(DEEPFILL_BOX, size, 1), _px(DEEPFILL_MAX_DELTA, size) // 2
    corner = _randint(generator, 0, size - box + 1, (batch, 1, 2))  # (B, 1, 2): top, left
    shrunk = _randint(generator, 0, shrink + 1, (batch, 1, 2))
    boxes = torch.cat([corner + shrunk, corner + box - shrunk], -1)  # (B, 1, 4)
    strokes, segments = DEEPFILL_STROKES[1], DEEPFILL_SEGMENTS[1]
    num_strokes = _randint(generator, DEEPFILL_STROKES[0], strokes + 1, (batch, 1))
    num_segments = _randint(generator, DEEPFILL_SEGMENTS[0], segments + 1, (batch, strokes, 1))
    width = DEEPFILL_WIDTH[0] + _rand(generator, (batch, strokes, 1)) * (DEEPFILL_WIDTH[1] - DEEPFILL_WIDTH[0])
    width = (width * size / BASE_SIZE).floor().clamp_min(1)
    low = DEEPFILL_MEAN_ANGLE - _rand(generator, (batch, strokes, 1)) * DEEPFILL_ANGLE_RANGE
    high = DEEPFILL_MEAN_ANGLE + _rand(generator, (batch, strokes, 1)) * DEEPFILL_ANGLE_RANGE
    angle = low + _rand(generator, (batch, strokes, segments)) * (high - low)
    segment_index = torch.arange(segments, device=generator.device)
    angle = torch.where(segment_index % 2 == 0, 2 * math.pi - angle, angle)
    mean_radius = math.hypot(size, size) / 8
    noise = torch.randn((batch, strokes, segments), generator=generator, device=generator.device)
    radius = (mean_radius + mean_radius / 2 * noise).clamp(0, 2 * mean_radius)
    vertices = [_randint(generator, 0, size, (batch, strokes, 2))]
    for segment in range(segments):  # each vertex is clipped to the image before the next step
        step = radius[..., segment, None] * torch.stack([angle[..., segment].cos(), angle[..., segment].sin()], -1)
        vertices.append((vertices[-1] + step).round().clamp(0, size - 1))
    points = torch.stack(vertices, 2)  # (B, K, V + 1, 2) as (x, y)
    flip = _rand(generator, (batch, 1, 1, 2)) < 0.5
    points = torch.where(flip, size - 1 - points, points)
    stroke_index = torch.arange(strokes, device=generator.device)
    valid = (stroke_index[None, :, None] < num_strokes[:, :, None]) & (segment_index < num_segments)  # (B, K, V)
    starts, ends, radii = _segments(points, width.expand(-1, -1, segments))
    always = torch.ones((batch, 1), dtype=torch.bool)
    return _rasterise(size, starts, ends, radii, valid.reshape(batch, -1), boxes, always, device)


def _lama_torch(protocol: LamaProtocol, batch: int, size: int, generator, device: torch.device) -> torch.Tensor:
    """`_lama_mask` for a whole batch: every mask draws strokes and boxes, and keeps one of them by weight."""
    use_boxes = _rand(generator, (batch,)) < protocol.box_weight / (1 + protocol.box_weight)
    strokes = protocol.max_strokes
    min_width, max_width = _px(LAMA_MIN_WIDTH, size, 1), _px(protocol.max_width, size, 1)
    min_length, max_length = _px(LAMA_MIN_LENGTH, size, 1), _px(protocol.max_length, size, 1)
    num_strokes = _randint(generator, protocol.min_strokes, strokes + 1, (batch, 1))
    num_segments = _randint(generator, 1, LAMA_SEGMENTS + 1, (batch, strokes, 1))
    angle = 0.01 + _randint(generator, 0, LAMA_MAX_ANGLE, (batch, strokes, LAMA_SEGMENTS))
    stroke_index = torch.arange(strokes, device=generator.device)
    angle = torch.where((stroke_index % 2 == 0)[:, None], 2 * math.pi - angle, angle)
    length = min_length + _randint(generator, 0, max_length, (batch, strokes, LAMA_SEGMENTS))
    width = min_width + _randint(generator, 0, max_width, (batch, strokes, LAMA_SEGMENTS))
    vertices = [_randint(generator, 0, size, (batch, strokes, 2))]
    for segment in range(LAMA_SEGMENTS):  # each vertex is clipped to the image before the next step
        step = length[..., segment, None] * torch.stack([angle[..., segment].sin(), angle[..., segment].cos()], -1)
        vertices.append((vertices[-1] + step).round().clamp(0, size - 1))
    segment_index = torch.arange(LAMA_SEGMENTS, device=generator.device)
    valid = (stroke_index[None, :, None] < num_strokes[:, :, None]) & (segment_index < num_segments)
    valid &= ~use_boxes[:, None, None]
    starts, ends, radii = _segments(torch.stack(vertices, 2), width)
    # Boxes are drawn for every mask (a strokes-only protocol never uses them) to keep one code path.
    margin = _px(protocol.box_margin, size)
    max_box = min(_px(protocol.max_box, size, 2), size - 2 * margin)
    min_box = min(_px(protocol.min_box, size, 1), max_box - 1)
    num_boxes = _randint(generator, protocol.min_boxes, protocol.max_boxes + 1, (batch, 1))
    sides = _randint(generator, min_box, max_box, (batch, protocol.max_boxes, 2))  # height, width
    corner = _randint(generator, margin, size - margin - sides + 1, sides.shape)  # top, left
    boxes = torch.cat([corner, corner + sides], -1)
    box_index = torch.arange(protocol.max_boxes, device=generator.device)
    box_valid = (box_index < num_boxes) & use_boxes[:, None]
    hole = _rasterise(size, starts, ends, radii, valid.reshape(batch, -1), boxes, box_valid, device)

    ratio = hole.float().mean((1, 2))
    redraw = (ratio > MAX_HOLE_RATIO) | (ratio == 0)
    count = int(redraw.sum())  # one host sync per round; rounds shrink fast (lama-thick redraws ~30%, others less)
    if count:
        hole[redraw] = _lama_torch(protocol, count, size, generator, device)
    return hole


def _center_torch(batch: int, size: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """`_center_mask` for a whole batch; `generator` is unused."""
    return torch.from_numpy(_center_mask(size, None)).to(device).expand(batch, -1, -1)


def _face_parts_torch(batch: int, size: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """`_face_parts_mask` for a whole batch: every mask tests all parts' ellipses, keeping its chosen ones."""
    parts = len(FACE_PARTS)
    choice = _randint(generator, 0, parts, (batch,)).long()
    other = _randint(generator, 0, parts - 1, (batch,)).long()
    other = other + (other >= choice).long()
    keep = torch.nn.functional.one_hot(choice, parts).bool()
    keep |= torch.nn.functional.one_hot(other, parts).bool() & (_rand(generator, (batch, 1)) < FACE_PARTS_SECOND)
    low, high = FACE_PARTS_SCALE
    scale = (low + _rand(generator, (batch, 1)) * (high - low)).to(device)
    noise = torch.randn((batch, 2), generator=generator, device=generator.device)
    shift = (noise * FACE_PARTS_SHIFT).clamp(-2.5 * FACE_PARTS_SHIFT, 2.5 * FACE_PARTS_SHIFT).to(device)
    factor = size / BASE_SIZE
    coords = torch.arange(size, device=device, dtype=torch.float32)
    x, y = coords.view(1, 1, size), coords.view(1, size, 1)
    hole = torch.zeros((batch, size, size), dtype=torch.bool, device=device)
    for number, ellipses in enumerate(FACE_PARTS.values()):
        for center_x, center_y, half_x, half_y in ellipses:
            dx = (x - (center_x + shift[:, 0, None, None]) * factor) / (half_x * factor * scale[..., None])
            dy = (y - (center_y + shift[:, 1, None, None]) * factor) / (half_y * factor * scale[..., None])
            hole |= (dx.square() + dy.square() <= 1) & keep[:, number, None, None].to(device)
    return hole


FACE_PARTS_REGION_SCALE = 1.25  # the middle of FACE_PARTS_SCALE: the region `part_l1_weight` counts again


def face_parts_region(size: int, device: str | torch.device = "cpu") -> torch.Tensor:
    """Where an FFHQ-aligned face's eyes, nose and mouth are (all FACE_PARTS ellipses, unshifted, at
    FACE_PARTS_REGION_SCALE): float (1, 1, size, size), 1 inside. The training loss weighs holes there more."""
    factor = size / BASE_SIZE
    coords = torch.arange(size, device=device, dtype=torch.float32)
    x, y = coords.view(1, size), coords.view(size, 1)
    region = torch.zeros((size, size), dtype=torch.bool, device=device)
    for ellipses in FACE_PARTS.values():
        for center_x, center_y, half_x, half_y in ellipses:
            dx = (x - center_x * factor) / (half_x * factor * FACE_PARTS_REGION_SCALE)
            dy = (y - center_y * factor) / (half_y * factor * FACE_PARTS_REGION_SCALE)
            region |= dx.square() + dy.square() <= 1
    return region[None, None].float()


_TORCH_KINDS = {
    "deepfill": _deepfill_torch,
    "lama-thin": partial(_lama_torch, LAMA_PROTOCOLS["thin"]),
    "lama-medium": partial(_lama_torch, LAMA_PROTOCOLS["medium"]),
    "lama-thick": partial(_lama_torch, LAMA_PROTOCOLS["thick"]),
    "center": _center_torch,
    "face-parts": _face_parts_torch,
}


def torch_masks(
    kind: str, batch: int, size: int, generator: torch.Generator, device: str | torch.device
) -> torch.Tensor:
    """Draw a batch of masks on `device`, vectorised over the batch and the pixels (for the GPU data path).

    Same distributions as `random_mask`, not the same bits. The random parameters are drawn on the generator's
    device (a CUDA generator keeps everything on the GPU; a CPU generator costs one small copy).

    Args:
        kind: a key of MASK_KINDS.
        batch: number of masks (>= 1).
        size: side in pixels, a multiple of 8 (>= 8).
        generator: the torch Generator to draw from; the same seed gives the same masks on the same device.
        device: where the masks are made.

    Returns:
        float32 (batch, 1, size, size) on `device`, 1 = hole.
    """
    _check(kind, size, batch)
    hole = _TORCH_KINDS[kind](batch, size, generator, torch.device(device))
    return hole[:, None].float()
