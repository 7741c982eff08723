"""Inpainting whole photos: align each face under the mask, inpaint it at the model's resolution, paste it back.

The rule for `align="auto"` (see `needs_alignment`): classical methods never align (they work at any resolution);
an image that is square and exactly the model's resolution is taken as an aligned crop (the training data, the
bundled demo face); any other image is searched for faces, and a square one whose largest face's FFHQ quad
already fills the frame (e.g. a 1024x1024 FFHQ image) is also taken as an aligned crop.
"""

import warnings

import numpy as np
import torch

from faceinpaint.errors import InpaintError
from faceinpaint.images import tensor_to_uint8, uint8_to_tensor

ALIGN_MODES = ("auto", "always", "never")
DEFAULT_SIZE = 256  # the crop size for classical methods, which have no resolution of their own
# An image counts as an aligned crop when its largest face's quad is this close to the frame (fractions of its side).
ALIGNED_SIDE_TOLERANCE = 0.2
ALIGNED_CENTRE_TOLERANCE = 0.1


def _settings(inpainter) -> tuple[int, str, int]:
    """The crop size, face detector and landmark model this inpainter uses."""
    size = inpainter.resolution or DEFAULT_SIZE
    return size, getattr(inpainter, "face_detector", "hog"), getattr(inpainter, "landmarks", 68)


def _fills_frame(quad: np.ndarray, side: int) -> bool:
    """Whether an FFHQ quad (4, 2) is, within tolerance, the whole of a square image of this side."""
    quad_side = np.hypot(*(quad[3] - quad[0]))
    offset = np.abs(quad.mean(0) + 0.5 - side / 2).max()
    return abs(quad_side / side - 1) <= ALIGNED_SIDE_TOLERANCE and offset <= ALIGNED_CENTRE_TOLERANCE * side


def needs_alignment(inpainter, image: np.ndarray, align: str) -> bool:
    """Whether `image` (uint8 RGB (H, W, 3)) goes through the face pipeline under `align`; see the module doc."""
    if align not in ALIGN_MODES:
        raise InpaintError(f"align must be one of {', '.join(ALIGN_MODES)}, got {align!r}")
    if align != "auto":
        return align == "always"
    height, width = image.shape[:2]
    if inpainter.model is None or (height == width == inpainter.resolution):
        return False
    from faceinpaint.faces.detect import detect_faces, face_quad, faces_available

    if not faces_available():
        warnings.warn(
            "this photo is not an aligned face crop; install faceinpaint[faces] to align its faces "
            "(inpainting the whole image as it is)",
            stacklevel=5,  # needs_alignment, complete_photos, __call__, its decorator, the caller
        )
        return False
    if height != width:
        return True
    size, detector, landmarks = _settings(inpainter)
    faces = detect_faces(image, detector, landmarks)
    return not (faces and _fills_frame(face_quad(faces[0].points), width))


def _fill(inpainter, image: np.ndarray, hole: np.ndarray, reference: torch.Tensor | None) -> np.ndarray:
    """Inpaint uint8 (h, w, 3) with bool hole (h, w) by the inpainter's method -> float32 (h, w, 3) in [-1, 1]."""
    pixels = uint8_to_tensor(image[None])
    hole_tensor = torch.from_numpy(hole)[None, None]
    completed = inpainter.complete(pixels, hole_tensor, reference)
    return torch.where(hole_tensor, completed, pixels)[0].permute(1, 2, 0).numpy()


def _fill_around_mask(inpainter, image: np.ndarray, hole: np.ndarray, size: int, reference) -> np.ndarray:
    """Inpaint a square crop around the hole (twice its extent, at least the model's size, within the photo)."""
    height, width = hole.shape
    rows, columns = np.nonzero(hole)
    top, bottom, left, right = rows.min(), rows.max() + 1, columns.min(), columns.max() + 1
    side = min(max(2 * max(bottom - top, right - left), size), max(height, width))
    crop_top = int(np.clip((top + bottom - side) // 2, 0, max(height - side, 0)))
    crop_left = int(np.clip((left + right - side) // 2, 0, max(width - side, 0)))
    window = (slice(crop_top, crop_top + side), slice(crop_left, crop_left + side))
    result = np.zeros((height, width, 3), np.float32)
    result[window] = _fill(inpainter, image[window], hole[window], reference)
    return result


def _aligned_reference(inpainter, reference: torch.Tensor | None) -> torch.Tensor | None:
    """A reference photo (1, 3, H, W) as an aligned crop: its largest face aligned, unless it already is a crop."""
    if reference is None:
        return None
    from faceinpaint.faces.align import align_largest_face

    size, detector, landmarks = _settings(inpainter)
    image = tensor_to_uint8(reference)[0]
    if not needs_alignment(inpainter, image, "auto"):
        return reference
    crop = align_largest_face(image, size, detector, landmarks)
    return reference if crop is None else uint8_to_tensor(crop[None])


def inpaint_photo(
    inpainter, image: np.ndarray, hole: np.ndarray, reference: torch.Tensor | None = None
) -> tuple[np.ndarray, int]:
    """Inpaint the faces of a whole photo at the model's resolution and blend them back.

    Every face whose box meets the hole is aligned the FFHQ way, inpainted, warped back and blended in with a
    feathered edge, faces with more of the hole in their box on top. Hole pixels that no face crop covers fully
    (all of them where no face meets the hole) are filled from a square crop around the hole, with a warning.

    Args:
        inpainter: an Inpainter (its `complete` does the work; `face_detector` / `landmarks` pick the models).
        image: uint8 RGB (H, W, 3).
        hole: bool (H, W), True = hole; not empty.
        reference: for reference-guided models, float (1, 3, h, w) in [-1, 1]; its largest face is aligned.
    Returns:
        float32 (H, W, 3) in [-1, 1], meaningful at the hole's pixels only, and the number of faces inpainted.
    """
    from faceinpaint.faces.align import align_face, unalign, warp_mask
    from faceinpaint.faces.detect import detect_faces, face_quad, hole_pixels_in_box

    size, detector, landmarks = _settings(inpainter)
    reference = _aligned_reference(inpainter, reference)
    found = detect_faces(image, detector, landmarks)
    faces = [(face, hole_pixels_in_box(face.box, hole)) for face in found]
    faces = sorted([(face, overlap) for face, overlap in faces if overlap], key=lambda item: item[1])
    result = np.zeros((*hole.shape, 3), np.float32)
    covered = np.zeros(hole.shape, np.float32)  # how much of each pixel the pasted faces decide
    for face, _ in faces:
        crop, alignment = align_face(image, face_quad(face.points), size)
        crop_hole = warp_mask(hole, alignment)
        if crop_hole.all():
            raise InpaintError("the mask covers a whole face crop: no known pixel of the face is left to inpaint from")
        back, alpha = unalign(_fill(inpainter, crop, crop_hole, reference), alignment, hole.shape)
        result += (back - result) * alpha[..., None]
        covered += (1.0 - covered) * alpha
    rest = hole & (covered < 1.0)
    if rest.any():
        if not faces:
            what = f"none of the {len(found)} faces found meets the mask" if found else "no face was found"
            warnings.warn(f"{what}; inpainted a square crop around the mask instead", stacklevel=5)
        fill = _fill_around_mask(inpainter, image, hole, size, reference)
        result += (fill - result) * (1.0 - covered)[..., None]
    return np.clip(result, -1.0, 1.0), len(faces)


def complete_photos(
    inpainter, image: torch.Tensor, hole: torch.Tensor, reference: torch.Tensor | None, align: str
) -> torch.Tensor:
    """The Inpainter's output (B, 3, H, W) in [-1, 1] for a batch, each image aligned or not by `align`."""
    pixels = tensor_to_uint8(image)
    outputs = []
    for index in range(image.shape[0]):
        one_reference = None if reference is None else reference[index : index + 1]
        one_hole = hole[index : index + 1]
        if needs_alignment(inpainter, pixels[index], align):
            filled, _ = inpaint_photo(inpainter, pixels[index], one_hole[0, 0].numpy(), one_reference)
            outputs.append(torch.from_numpy(filled).permute(2, 0, 1)[None])
        else:
            outputs.append(inpainter.complete(image[index : index + 1], one_hole, one_reference))
    return torch.cat(outputs)
