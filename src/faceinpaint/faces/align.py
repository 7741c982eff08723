"""FFHQ-style face alignment to the model's resolution, its inverse, and aligning whole folders into training data.

Coordinates: `Alignment.matrix` maps photo points to aligned-crop points in pixel *edge* coordinates (pixel (i, j)
spans [j, j + 1] x [i, i + 1]), in which resizing is a plain multiplication; OpenCV's warps use pixel *index*
coordinates (centres at integers), so `_cv2_matrix` converts.
"""

import math
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

from faceinpaint.atomic import atomic_write
from faceinpaint.errors import InpaintError
from faceinpaint.faces.detect import detect_faces, face_quad
from faceinpaint.images import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, read_image, write_image

FEATHER = 0.04  # width of the soft edge of a pasted face, as a fraction of the aligned crop's side
FAILURES_FILE = "failures.txt"


@dataclass(frozen=True)
class Alignment:
    """Where an aligned crop came from: matrix (3, 3) maps photo edge coordinates to crop edge coordinates."""

    matrix: np.ndarray
    size: int  # the crop's side in pixels
    quad: np.ndarray  # (4, 2) the FFHQ quad in the photo, index coordinates: top-left, bottom-left, ...

    @property
    def scale(self) -> float:
        """Crop pixels per photo pixel."""
        return float(math.sqrt(abs(np.linalg.det(self.matrix[:2, :2]))))


def _scale(sx: float, sy: float | None = None) -> np.ndarray:
    return np.diag([sx, sx if sy is None else sy, 1.0])


def _translate(tx: float, ty: float) -> np.ndarray:
    return np.array([[1.0, 0.0, tx], [0.0, 1.0, ty], [0.0, 0.0, 1.0]])


def _cv2_matrix(matrix: np.ndarray) -> np.ndarray:
    """An edge-coordinate affine (3, 3) as OpenCV's index-coordinate (2, 3)."""
    return (_translate(-0.5, -0.5) @ matrix @ _translate(0.5, 0.5))[:2]


def _fade_padding(region: np.ndarray, pad: tuple[int, int, int, int], blur: float) -> np.ndarray:
    """Soften reflected padding as the FFHQ recipe does: blur it, and fade it towards the median colour outwards."""
    height, width = region.shape[:2]
    left, top, right, bottom = pad
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    # 0 inside the photo, rising to 1 at the outer edge of the padding.
    outside = np.maximum.reduce(
        [
            (left - xs) / max(left, 1),
            (xs - (width - 1 - right)) / max(right, 1),
            (top - ys) / max(top, 1),
            (ys - (height - 1 - bottom)) / max(bottom, 1),
            np.zeros_like(xs),
        ]
    )[..., None]
    values = region.astype(np.float32)
    blurred = cv2.GaussianBlur(values, (0, 0), max(blur, 0.5))
    values += (blurred - values) * np.clip(outside * 3.0, 0.0, 1.0)
    values += (np.median(values.reshape(-1, 3), axis=0) - values) * outside
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def align_face(image: np.ndarray, quad: np.ndarray, size: int) -> tuple[np.ndarray, Alignment]:
    """Cut the FFHQ quad out of a photo as a size x size crop.

    The FFHQ recipe's steps: shrink very large faces first, crop to the quad with a border, pad by reflection where
    the quad leaves the photo (blurred and faded), warp the quad to a square and Lanczos-resize it to `size`.

    Args:
        image: uint8 RGB (H, W, 3).
        quad: (4, 2) from `faces.face_quad`.
        size: the side of the crop, normally the model's resolution.
    Returns:
        The crop, uint8 (size, size, 3), and the Alignment that `unalign` needs to put it back.
    """
    height, width = image.shape[:2]
    corners = quad + 0.5  # edge coordinates from here on
    quad_side = float(np.hypot(*(corners[3] - corners[0])))

    # Crop with a border; pad by reflection where the quad leaves the photo.
    border = max(round(quad_side * 0.1), 3)
    left, top = np.floor(corners.min(0)).astype(int) - border
    right, bottom = np.ceil(corners.max(0)).astype(int) + border
    pad = (max(-left, 0), max(-top, 0), max(right - width, 0), max(bottom - height, 0))
    region = image[max(top, 0) : min(bottom, height), max(left, 0) : min(right, width)]
    if any(pad):
        region = np.pad(region, ((pad[1], pad[3]), (pad[0], pad[2]), (0, 0)), mode="reflect")
        region = _fade_padding(region, pad, quad_side * 0.02)
    to_work = _translate(-left, -top)  # photo -> the working region (cropped, padded, shrunk)

    # Shrink large faces: keep at most about 4x the crop's side for the warp.
    shrink = int(quad_side / size * 0.5)
    if shrink > 1:
        region_height, region_width = region.shape[:2]
        small = (max(round(region_width / shrink), 1), max(round(region_height / shrink), 1))
        region = np.asarray(Image.fromarray(region).resize(small, Image.Resampling.LANCZOS))
        to_work = _scale(small[0] / region_width, small[1] / region_height) @ to_work
        quad_side /= shrink
    work_corners = (to_work[:2, :2] @ corners.T).T + to_work[:2, 2]

    # Warp the quad to a square at least as large as the crop, then Lanczos down.
    side = max(size, math.ceil(quad_side))
    square = np.float32([[0, 0], [0, side], [side, side]])
    to_square = np.vstack([cv2.getAffineTransform(np.float32(work_corners[:3]), square), [0.0, 0.0, 1.0]])
    crop = cv2.warpAffine(
        region, _cv2_matrix(to_square), (side, side), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT_101
    )
    if side != size:
        crop = np.asarray(Image.fromarray(crop).resize((size, size), Image.Resampling.LANCZOS))
    matrix = _scale(size / side) @ to_square @ to_work
    return crop, Alignment(matrix, size, quad)


def unalign(crop: np.ndarray, alignment: Alignment, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Warp an aligned crop back into the photo's frame.

    Args:
        crop: float32 (size, size, C), any range.
        alignment: from `align_face`.
        shape: the photo's (H, W).
    Returns:
        The warped crop, float32 (H, W, C), and its weight, float32 (H, W) in [0, 1]: 1 inside the quad, 0
        outside, with a feathered edge FEATHER x size wide (where the warped values are not to be trusted fully).
    """
    matrix, side = alignment.matrix, alignment.size
    photo_side = side / alignment.scale  # the quad's side in the photo
    if photo_side < side:  # the face is smaller in the photo: shrink with area averaging first, against aliasing
        side = max(math.ceil(photo_side), 2)
        crop = cv2.resize(crop, (side, side), interpolation=cv2.INTER_AREA).reshape(side, side, -1)
        matrix = _scale(side / alignment.size) @ matrix
    ramp = np.minimum(np.arange(side) + 0.5, side - 0.5 - np.arange(side)) / max(FEATHER * side, 1.0)
    ramp = np.clip(ramp, 0.0, 1.0).astype(np.float32)
    weight = np.minimum(ramp[:, None], ramp[None, :])
    # Warp only into the quad's bounding box: a face is often a small part of a large photo.
    left, top = np.clip(np.floor(alignment.quad.min(0)).astype(int) - 2, 0, None)
    right, bottom = np.minimum(np.ceil(alignment.quad.max(0)).astype(int) + 3, shape[::-1])
    back = np.zeros((*shape, crop.shape[2] if crop.ndim == 3 else 1), np.float32)
    alpha = np.zeros(shape, np.float32)
    if right <= left or bottom <= top:
        return back, alpha
    window = _cv2_matrix(matrix @ _translate(left, top))
    flags, window_size = cv2.WARP_INVERSE_MAP, (int(right - left), int(bottom - top))
    warped = cv2.warpAffine(crop, window, window_size, flags=flags | cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    back[top:bottom, left:right] = warped.reshape(bottom - top, right - left, -1)
    alpha[top:bottom, left:right] = cv2.warpAffine(weight, window, window_size, flags=flags | cv2.INTER_LINEAR)
    return back, np.clip(alpha, 0.0, 1.0)


def warp_mask(hole: np.ndarray, alignment: Alignment) -> np.ndarray:
    """A photo's hole (bool (H, W)) in the aligned crop: bool (size, size), grown so that it covers every crop
    pixel that `unalign` reads for a hole pixel of the photo."""
    scale = alignment.scale
    if scale < 1:  # the crop is smaller than the face: grow first so that thin holes are not skipped
        grow = math.ceil(1 / scale)
        hole = cv2.dilate(hole.astype(np.uint8), np.ones((2 * grow + 1,) * 2, np.uint8)).astype(bool)
    size = alignment.size
    warped = cv2.warpAffine(hole.astype(np.float32), _cv2_matrix(alignment.matrix), (size, size)) > 0
    grow = math.ceil(2 * max(1.0, scale)) + 1  # the support of the cubic warp back, in crop pixels
    return cv2.dilate(warped.astype(np.uint8), np.ones((2 * grow + 1,) * 2, np.uint8)).astype(bool)


def align_largest_face(image: np.ndarray, size: int, detector: str = "hog", landmarks: int = 68):
    """The largest face of a photo aligned to size x size (uint8), or None where no face is found."""
    faces = detect_faces(image, detector, landmarks)
    if not faces:
        return None
    return align_face(image, face_quad(faces[0].points), size)[0]


@dataclass
class FolderReport:
    """What `align_folder` did: counts, and (relative path, reason) for every image it could not align."""

    total: int
    aligned: int
    already_there: int
    failures: list[tuple[str, str]] = field(default_factory=list)


def _align_file(task: tuple[Path, Path, int, str, int, int]) -> str | None:
    """Align one file; returns None, or why it failed."""
    source, target, size, detector, landmarks, max_pixels = task
    try:
        crop = align_largest_face(np.asarray(read_image(source, max_pixels).convert("RGB")), size, detector, landmarks)
        if crop is None:
            return "no face found"
        write_image(Image.fromarray(crop), target)
    except InpaintError as error:
        return " ".join(str(error).split())
    return None


def _init_worker() -> None:
    cv2.setNumThreads(1)  # one process per core already


def align_folder(
    source: str | os.PathLike,
    target: str | os.PathLike,
    size: int = 256,
    workers: int = 1,
    detector: str = "hog",
    landmarks: int = 68,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> FolderReport:
    """Align every photo under `source` (largest face each) into `target`, keeping sub-folders (identities).

    Outputs keep their relative path and file name; ones already in `target` are kept (so an interrupted run
    resumes). Images without a face, or unreadable, are listed as "relative/path: reason" in target/failures.txt.

    Args:
        source: a folder of photos, any depth (e.g. <identity>/<image>.jpg).
        target: where the crops go; must not lie inside `source`.
        size: the crops' side (the model's resolution).
        workers: processes (1 = in this process).
        detector, landmarks: as in `faces.detect_faces`.
    Returns:
        A FolderReport.
    """
    source, target = Path(source), Path(target)
    if not source.is_dir():
        raise InpaintError(f"source {source}: no such folder")
    if target.resolve() == source.resolve() or source.resolve() in target.resolve().parents:
        raise InpaintError(f"target {target} lies inside the source folder {source}; choose a folder outside it")
    if size < 8:
        raise InpaintError(f"--size must be at least 8, got {size}")
    files = sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise InpaintError(f"source {source} holds no image files ({', '.join(IMAGE_EXTENSIONS)})")
    detect_faces(np.zeros((8, 8, 3), np.uint8), detector, landmarks)  # a missing extra fails here, once

    tasks = [(p, target / p.relative_to(source), size, detector, landmarks, max_pixels) for p in files]
    pending = [task for task in tasks if not task[1].exists()]
    report = FolderReport(total=len(tasks), aligned=0, already_there=len(tasks) - len(pending))
    progress = tqdm(total=len(pending), desc="aligning faces", unit="image", disable=None, file=sys.stderr)
    if workers > 1:
        # Spawned, not forked: a fork of a process whose torch / OpenMP threads have run can deadlock.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker) as pool:
            results = list(_progress(pool.map(_align_file, pending, chunksize=4), progress))
    else:
        results = list(_progress(map(_align_file, pending), progress))
    progress.close()
    for task, failure in zip(pending, results, strict=True):
        if failure is None:
            report.aligned += 1
        else:
            report.failures.append((task[0].relative_to(source).as_posix(), failure))
    _write_failures(target / FAILURES_FILE, report.failures)
    return report


def _progress(results, progress: tqdm):
    """Pass results through, ticking the progress bar."""
    for result in results:
        progress.update()
        yield result


def _write_failures(path: Path, failures: list[tuple[str, str]]) -> None:
    """Write (or, with no failures, remove) the failure list, atomically."""
    if not failures:
        path.unlink(missing_ok=True)
        return
    with atomic_write(path) as stream:
        stream.write("".join(f"{name}: {reason}\n" for name, reason in failures).encode())
