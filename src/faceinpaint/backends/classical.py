"""Classical (non-learned) inpainting baselines, usable wherever a model name is."""

import cv2
import numpy as np


def _opencv(flag: int):
    def inpaint(image: np.ndarray, hole: np.ndarray) -> np.ndarray:
        # OpenCV's methods work on any channel order; our arrays are RGB throughout.
        return cv2.inpaint(np.ascontiguousarray(image), hole.astype(np.uint8) * 255, 5, flag)

    return inpaint


def _biharmonic(image: np.ndarray, hole: np.ndarray) -> np.ndarray:
    from skimage.restoration import inpaint_biharmonic

    result = inpaint_biharmonic(image.astype(np.float64) / 255.0, hole, channel_axis=-1)
    return np.clip(np.round(result * 255.0), 0, 255).astype(np.uint8)


def _reference_paste(image: np.ndarray, hole: np.ndarray, reference: np.ndarray | None, landmarks: int) -> np.ndarray:
    from faceinpaint.faces.reference_paste import reference_paste

    return reference_paste(image, hole, reference, landmarks)


# name -> function(image uint8 (H, W, 3) RGB, hole bool (H, W)) -> uint8 (H, W, 3); they run at full resolution.
# Those in REFERENCE_METHODS also take the reference photo (uint8 RGB or None) and the landmark model (68 or 5).
CLASSICAL_METHODS = {
    "telea": _opencv(cv2.INPAINT_TELEA),  # Telea 2004, fast marching; radius 5
    "navier-stokes": _opencv(cv2.INPAINT_NS),  # Bertalmio et al. 2001; radius 5
    "biharmonic": _biharmonic,  # scikit-image: smooth biharmonic continuation of the boundary
    "reference-paste": _reference_paste,  # faces/reference_paste.py: the same person's photo, warped, Poisson-blended
}
REFERENCE_METHODS = frozenset({"reference-paste"})
