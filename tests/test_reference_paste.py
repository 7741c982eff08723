"""Reference alignment and `reference-paste`: a known similarity is recovered, the hole gets the reference's eyes."""

import cv2
import numpy as np
import pytest
from PIL import Image
from skimage import data

from faceinpaint.errors import InpaintError
from faceinpaint.faces.part_masks import face_part_mask
from faceinpaint.inpainter import Inpainter

pytest.importorskip("dlib", reason="needs faceinpaint[faces]")
pytest.importorskip("face_recognition_models", reason="needs faceinpaint[faces]")

from faceinpaint.faces.reference_paste import match_colours, reference_paste  # noqa: E402
from faceinpaint.faces.reference_warp import ALIGNED_LANDMARKS_68, masked_face_landmarks, warp_reference  # noqa: E402

# The reference: the astronaut turned by 12 degrees, shrunk to 0.85, moved, and darker (another "photo" of her).
REFERENCE_TRANSFORM = cv2.getRotationMatrix2D((260.0, 200.0), 12.0, 0.85) + np.array([[0, 0, 30.0], [0, 0, -20.0]])


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return data.astronaut()


@pytest.fixture(scope="module")
def reference(astronaut) -> np.ndarray:
    moved = cv2.warpAffine(astronaut, REFERENCE_TRANSFORM, (512, 512), borderMode=cv2.BORDER_REFLECT)
    return np.clip(moved.astype(np.float32) * 0.8 + 10, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def eyes(astronaut) -> np.ndarray:
    return face_part_mask(astronaut, ["eyes"], dilate=4)


def _hole_psnr(result: np.ndarray, truth: np.ndarray, hole: np.ndarray) -> float:
    error = result[hole].astype(np.float64) - truth[hole]
    return float(10 * np.log10(255.0**2 / np.mean(error**2)))


def test_warp_recovers_the_inverse_of_a_known_similarity(astronaut, reference, eyes):
    warped = warp_reference(astronaut, eyes, reference)
    inverse = cv2.invertAffineTransform(REFERENCE_TRANSFORM)
    corners = np.array([[150.0, 150.0, 1.0], [350.0, 150.0, 1.0], [250.0, 300.0, 1.0]])
    error = np.abs(corners @ warped.matrix.T - corners @ inverse.T).max()
    assert error < 4.0, f"the fitted transform misplaces face points by {error:.1f} px"
    assert not warped.trusted[36:48].any(), "landmarks under the eye hole must not be trusted"
    assert warped.valid.mean() > 0.6 and not warped.valid.all(), "the turned reference leaves uncovered corners"
    uncovered = ~cv2.dilate(warped.valid.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    assert (warped.image[uncovered] == 0).all()


def test_landmarks_of_a_faceless_square_crop_fall_back_to_the_aligned_mean():
    grey, hole = np.full((128, 128, 3), 128, np.uint8), np.zeros((128, 128), bool)
    hole[40:70, 30:100] = True
    points, trusted = masked_face_landmarks(grey, hole)
    np.testing.assert_allclose(points, (ALIGNED_LANDMARKS_68 + 0.5) / 2 - 0.5)
    assert trusted.sum() >= 6 and not trusted[36:48].any()
    with pytest.raises(InpaintError, match="no face found in the masked photo"):
        masked_face_landmarks(grey[:, :100], hole[:, :100])


def test_paste_brings_back_the_eyes_far_better_than_telea(astronaut, reference, eyes):
    pasted = reference_paste(astronaut, eyes, reference)
    telea = cv2.inpaint(astronaut, eyes.astype(np.uint8) * 255, 5, cv2.INPAINT_TELEA)
    gain = _hole_psnr(pasted, astronaut, eyes) - _hole_psnr(telea, astronaut, eyes)
    assert gain > 3.0, f"reference-paste beats Telea by only {gain:.2f} dB on the eye holes"
    assert (pasted[~eyes] == astronaut[~eyes]).all(), "pixels outside the hole are the photo's own"


def test_what_the_hole_held_does_not_matter(astronaut, reference, eyes):
    black, white = astronaut.copy(), astronaut.copy()
    black[eyes], white[eyes] = 0, 255
    np.testing.assert_array_equal(reference_paste(black, eyes, reference), reference_paste(white, eyes, reference))


def test_colour_match_moves_the_reference_to_the_photos_colours(astronaut, reference):
    region = np.zeros(astronaut.shape[:2], bool)
    region[100:300, 150:350] = True
    darker = np.clip(astronaut.astype(np.int16) - 40, 0, 255).astype(np.uint8)
    matched = match_colours(darker, astronaut, region)
    before = np.abs(darker[region].astype(float) - astronaut[region]).mean()
    after = np.abs(matched[region].astype(float) - astronaut[region]).mean()
    assert after < before / 3


def test_reference_paste_is_a_method_name_with_a_reference(astronaut, reference, eyes):
    inpainter = Inpainter.from_pretrained("reference-paste")
    assert inpainter.uses_reference
    result = np.asarray(inpainter(Image.fromarray(astronaut), eyes, reference=Image.fromarray(reference)))
    assert _hole_psnr(result, astronaut, eyes) > 20.0
    assert (result[~eyes] == astronaut[~eyes]).all()
    with pytest.raises(InpaintError, match="needs a reference photo"):
        inpainter(Image.fromarray(astronaut), eyes)


def test_a_reference_without_a_face_is_a_clear_error(astronaut, eyes):
    with pytest.raises(InpaintError, match="no face found in the reference photo"):
        reference_paste(astronaut, eyes, np.full((200, 200, 3), 90, np.uint8))
