"""Random hole masks drawn on the training device: `torch_masks` (float (B, 1, S, S), 1 = hole) draws the
distributions of data/masks.py (DeepFillv2, LaMa, centre, face parts), not the same bits, vectorised over the batch and
the pixels so the GPU data path never waits for a CPU loader; `face_parts_region` is the face-part loss's region.
"""

import math
from functools import partial

import torch

from faceinpaint.data.masks import (
    BASE_SIZE,
    DEEPFILL_ANGLE_RANGE,
    DEEPFILL_BOX,
    DEEPFILL_MAX_DELTA,
    DEEPFILL_MEAN_ANGLE,
    DEEPFILL_SEGMENTS,
    DEEPFILL_STROKES,
    DEEPFILL_WIDTH,
    FACE_PARTS,
    FACE_PARTS_SCALE,
    FACE_PARTS_SECOND,
    FACE_PARTS_SHIFT,
    LAMA_MAX_ANGLE,
    LAMA_MIN_LENGTH,
    LAMA_MIN_WIDTH,
    LAMA_PROTOCOLS,
    LAMA_SEGMENTS,
    MAX_HOLE_RATIO,
    LamaProtocol,
    center_mask,
    check_kind,
    scaled_px,
)  # fmt: skip

# Pixels x segments the torch rasteriser tests at once (at least one segment for the whole batch): bounds its memory
# to a few float32 tensors of this many elements while keeping each kernel big enough; GPUs want more than CPUs.
_CHUNK_ELEMENTS = {"cpu": 1 << 23, "cuda": 1 << 25}


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
    box, shrink = scaled_px(DEEPFILL_BOX, size, 1), scaled_px(DEEPFILL_MAX_DELTA, size) // 2
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
    min_width, max_width = scaled_px(LAMA_MIN_WIDTH, size, 1), scaled_px(protocol.max_width, size, 1)
    min_length, max_length = scaled_px(LAMA_MIN_LENGTH, size, 1), scaled_px(protocol.max_length, size, 1)
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
    margin = scaled_px(protocol.box_margin, size)
    max_box = min(scaled_px(protocol.max_box, size, 2), size - 2 * margin)
    min_box = min(scaled_px(protocol.min_box, size, 1), max_box - 1)
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
    """`center_mask` for a whole batch; `generator` is unused."""
    return torch.from_numpy(center_mask(size, None)).to(device).expand(batch, -1, -1)


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
    check_kind(kind, size, batch)
    hole = _TORCH_KINDS[kind](batch, size, generator, torch.device(device))
    return hole[:, None].float()
