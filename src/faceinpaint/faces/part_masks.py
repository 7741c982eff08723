"""Masks of facial parts (eyes, eyebrows, nose, mouth, jaw) drawn from dlib's 68 landmarks: the CLI's `mask`
command and the web app's presets."""

from collections.abc import Sequence

import cv2
import numpy as np

from faceinpaint.errors import InpaintError

# Each part: (shape, landmark indices, margin). "hull" fills the convex hull of the points, "line" strokes the
# polyline through them; either is grown by `margin` eye-to-eye distances so that the whole part is covered.
PARTS = {
    "eyes": [("hull", range(36, 42), 0.12), ("hull", range(42, 48), 0.12)],
    "eyebrows": [("line", range(17, 22), 0.1), ("line", range(22, 27), 0.1)],
    "nose": [("hull", range(27, 36), 0.08)],
    "mouth": [("hull", range(48, 60), 0.1)],
    "jaw": [("line", range(0, 17), 0.12)],  # a band along the jaw line, ear to ear
}


def parse_parts(text: str) -> list[str]:
    """Split a comma-separated list of parts ("eyes,mouth"), checked against PARTS."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [part for part in parts if part not in PARTS]
    if unknown or not parts:
        raise InpaintError(f"unknown face part(s) {', '.join(unknown) or '(none given)'}; use {','.join(PARTS)}")
    return parts


def part_mask(
    landmarks: Sequence[np.ndarray], shape: tuple[int, int], parts: Sequence[str], dilate: int = 0
) -> np.ndarray:
    """The hole mask over some parts of some faces.

    Args:
        landmarks: dlib's 68 points (68, 2) of each face, (x, y) in pixels.
        shape: the image's (H, W).
        parts: names from PARTS.
        dilate: grow the mask by this many pixels more.
    Returns:
        bool (H, W), True = hole.
    """
    for part in parts:
        if part not in PARTS:
            raise InpaintError(f"unknown face part {part!r}; use one of {', '.join(PARTS)}")
    if dilate < 0:
        raise InpaintError(f"--dilate must be 0 or more pixels, got {dilate}")
    canvas = np.zeros(shape, np.uint8)
    for points in landmarks:
        if points.shape != (68, 2):
            raise InpaintError(f"part masks need dlib's 68 landmarks per face, got an array of shape {points.shape}")
        eye_distance = np.hypot(*(points[42:48].mean(0) - points[36:42].mean(0)))
        for part in parts:
            for kind, indices, margin in PARTS[part]:
                outline = np.rint(points[list(indices)]).astype(np.int32)
                width = max(round(2 * margin * eye_distance), 1)
                if kind == "hull":
                    outline = cv2.convexHull(outline)
                    cv2.fillPoly(canvas, [outline], 255)
                cv2.polylines(canvas, [outline], kind == "hull", 255, thickness=width, lineType=cv2.LINE_8)
    if dilate:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * dilate + 1, 2 * dilate + 1))
        canvas = cv2.dilate(canvas, kernel)
    return canvas > 0


def face_part_mask(image: np.ndarray, parts: Sequence[str], dilate: int = 0, detector: str = "hog") -> np.ndarray:
    """Find the faces of a photo and mask the given parts of all of them.

    Args:
        image: uint8 RGB (H, W, 3).
        parts: names from PARTS, e.g. ["eyes", "mouth"].
        dilate: grow the mask by this many pixels more.
        detector: "hog" or "yunet" (the landmarks are always dlib's 68 points).
    Returns:
        bool (H, W), True = hole. No face found is an InpaintError.
    """
    from faceinpaint.faces.detect import detect_faces

    faces = detect_faces(image, detector, 68)
    if not faces:
        raise InpaintError("no face found in the image, so there are no face parts to mask; draw the mask by hand")
    return part_mask([face.landmarks for face in faces], image.shape[:2], parts, dilate)


def aligned_part_masks(images: Sequence[np.ndarray], parts: Sequence[str]) -> tuple[np.ndarray, int]:
    """Masks over the same parts of a set of aligned faces (evaluation), one largest face per image.

    Faces are found with HOG, then YuNet; an image where neither finds one gets the mean landmarks of the others,
    which aligned faces share closely. Returns bool (N, H, W) and how many images took the mean.
    """
    from faceinpaint.faces.detect import detect_faces

    found = []
    for image in images:
        faces = detect_faces(image, "hog", 68) or detect_faces(image, "yunet", 68)
        found.append(faces[0].landmarks if faces else None)
    detected = [points for points in found if points is not None]
    if not detected:
        raise InpaintError("no face found in any image, so there are no face parts to mask")
    mean = np.mean(detected, axis=0)
    masks = [
        part_mask([mean if points is None else points], image.shape[:2], parts)
        for points, image in zip(found, images, strict=True)
    ]
    return np.stack(masks), len(found) - len(detected)
