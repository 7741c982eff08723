"""`reference-paste`: the classical reference-guided method — the same person's photo, warped, colour matched and
blended into the hole. No training; the baseline that every learned reference model must beat.

Steps: warp the reference onto the masked face by the landmarks both share (faces/reference_warp.py); match its colours
to the photo's in a ring of known pixels around the hole (mean and spread of each CIE Lab channel); blend it into
the hole by Poisson (gradient-domain) cloning, OpenCV's `seamlessClone`, so that its edges take the photo's
colours; hole pixels that the warped reference does not cover are filled by Telea.
"""

import cv2
import numpy as np

from faceinpaint.errors import InpaintError
from faceinpaint.faces.reference_warp import eye_distance, warp_reference

RING = 0.15  # the colour-matching ring around the hole, in eye-to-eye distances
SPREAD_RATIO = (0.5, 2.0)  # the colour match may scale a Lab channel's spread by no more than this
CLONE_PAD = 16  # seamlessClone needs its region clear of the image border: pad by this many pixels


def match_colours(source: np.ndarray, target: np.ndarray, region: np.ndarray) -> np.ndarray:
    """`source` (uint8 RGB) with each Lab channel's mean and spread over `region` moved to `target`'s there."""
    if region.sum() < 16:
        return source
    source_lab = cv2.cvtColor(source, cv2.COLOR_RGB2LAB).astype(np.float32)
    target_lab = cv2.cvtColor(target, cv2.COLOR_RGB2LAB).astype(np.float32)
    mean_s, mean_t = source_lab[region].mean(0), target_lab[region].mean(0)
    ratio = np.clip((target_lab[region].std(0) + 1.0) / (source_lab[region].std(0) + 1.0), *SPREAD_RATIO)
    matched = (source_lab - mean_s) * ratio + mean_t
    return cv2.cvtColor(np.clip(np.rint(matched), 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)


def poisson_blend(source: np.ndarray, target: np.ndarray, region: np.ndarray) -> np.ndarray:
    """`source` cloned into `target` over bool `region` in the gradient domain (both uint8 RGB, same size)."""
    pad = ((CLONE_PAD, CLONE_PAD), (CLONE_PAD, CLONE_PAD), (0, 0))
    source_p, target_p = np.pad(source, pad, mode="reflect"), np.pad(target, pad, mode="reflect")
    mask = np.pad(region, pad[:2]).astype(np.uint8) * 255
    rows, columns = np.nonzero(mask)
    top, left = rows.min(), columns.min()
    height, width = rows.max() + 1 - top, columns.max() + 1 - left
    # seamlessClone centres the mask's bounding box at `centre` (integer halves): this puts it back where it was.
    centre = (int(left + width // 2), int(top + height // 2))
    # OpenCV's colour order does not matter here: every channel is solved on its own.
    blended = cv2.seamlessClone(source_p, target_p, mask, centre, cv2.NORMAL_CLONE)
    return blended[CLONE_PAD:-CLONE_PAD, CLONE_PAD:-CLONE_PAD]


def reference_paste(image: np.ndarray, hole: np.ndarray, reference: np.ndarray | None, landmarks: int = 68):
    """Fill `hole` (bool (H, W)) of `image` (uint8 RGB (H, W, 3)) from `reference` (uint8 RGB, the same person).

    Returns uint8 (H, W, 3): the photo's own pixels outside the hole.
    """
    if reference is None:
        raise InpaintError("reference-paste needs a reference photo of the same person (--reference)")
    warped = warp_reference(image, hole, reference, landmarks)
    ring_width = max(round(RING * eye_distance(warped.points)), 2)
    kernel = np.ones((2 * ring_width + 1, 2 * ring_width + 1), np.uint8)
    grown = cv2.dilate(hole.astype(np.uint8), kernel) > 0
    matched = match_colours(warped.image, image, grown & ~hole & warped.valid)
    # The clone region: the hole grown by a few pixels (its boundary condition comes from known pixels), where
    # the warp has data; shrink the validity by one pixel so that no black edge of the warp enters.
    valid = cv2.erode(warped.valid.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    region = (cv2.dilate(hole.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0) & valid
    # OpenCV's clone lets the destination's own pixels inside the region leak into the result: put the matched
    # reference there first, so that whatever the hole held (grey, black, the old face) does not matter.
    result = np.where(region[..., None], matched, image)
    if (region & hole).any():
        result = poisson_blend(matched, result, region)
    rest = hole & ~region
    if rest.any():
        result = cv2.inpaint(result, rest.astype(np.uint8) * 255, 5, cv2.INPAINT_TELEA)
    return np.where(hole[..., None], result, image)
