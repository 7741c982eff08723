"""Tests of the face pipeline: detection, landmarks, alignment and its inverse, paste-back, part masks, data align."""

import warnings

import cv2
import numpy as np
import pytest
from PIL import Image
from skimage import data

from faceinpaint import Inpainter
from faceinpaint.cli import main
from faceinpaint.errors import InpaintError
from faceinpaint.faces import detect as faces_module
from faceinpaint.faces.align import align_face, unalign
from faceinpaint.faces.detect import detect_faces, face_quad
from faceinpaint.faces.part_masks import PARTS, part_mask
from faceinpaint.faces.photo import needs_alignment
from faceinpaint.inference.demo import load_sample

pytest.importorskip("dlib", reason="needs faceinpaint[faces]")
pytest.importorskip("face_recognition_models", reason="needs faceinpaint[faces]")


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return data.astronaut()


@pytest.fixture(scope="module")
def face(astronaut):
    found = detect_faces(astronaut)
    assert len(found) == 1
    return found[0]


@pytest.fixture(scope="module")
def tiny_network():
    return Inpainter.from_config("deepfillv2", {"width": 8}, 32, device="cpu")


def eye_hole(face, shape) -> np.ndarray:
    """A band over both eyes of a face."""
    hole = np.zeros(shape, bool)
    eyes = face.landmarks[36:48]
    left, top = np.floor(eyes.min(0) - 6).astype(int)
    right, bottom = np.ceil(eyes.max(0) + 6).astype(int)
    hole[top:bottom, left:right] = True
    return hole


def rotated_off_centre(image: np.ndarray, angle: float) -> np.ndarray:
    """The photo pasted off-centre into a larger, wider canvas and turned by `angle` degrees about the face."""
    canvas = np.full((700, 900, 3), 90, np.uint8)
    canvas[120:632, 330:842] = image
    turn = cv2.getRotationMatrix2D((330 + 224.0, 120 + 120.0), angle, 1.0)
    return cv2.warpAffine(canvas, turn, (900, 700), borderMode=cv2.BORDER_REFLECT_101)


def test_one_face_with_landmarks_in_a_plausible_order(face):
    marks = face.landmarks
    assert marks.shape == (68, 2) and face.points.shape == (5, 2)
    eyes, nose, mouth = marks[36:48, 1].mean(), marks[30, 1], marks[48:68, 1].mean()
    assert eyes < nose < mouth, "eyes above the nose tip above the mouth"
    assert marks[36:42, 0].mean() < marks[42:48, 0].mean(), "image-left eye first"
    assert marks[8, 1] > mouth, "chin below the mouth"
    left, top, right, bottom = face.box
    assert left < marks[30, 0] < right and top < marks[30, 1] < bottom


def test_five_point_models_give_nearly_the_same_quad(astronaut, face):
    reference = face_quad(face.points)
    side = np.hypot(*(reference[3] - reference[0]))
    for detector, landmarks in [("hog", 5), ("yunet", 5), ("yunet", 68)]:
        found = detect_faces(astronaut, detector, landmarks)
        assert len(found) == 1, (detector, landmarks)
        assert np.abs(face_quad(found[0].points) - reference).max() < 0.08 * side, (detector, landmarks)
        assert (found[0].landmarks is None) == (landmarks == 5)


def test_yunet_rows_of_inf_or_nan_are_no_face(monkeypatch):
    """YuNet has returned rows of inf / NaN on tiny flat images (seen in the slow tier): they must not reach dlib."""
    good = np.array([[4, 5, 20, 22, 9, 12, 18, 12, 14, 16, 10, 20, 17, 20, 0.9]], np.float32)
    bad = np.array([[-np.inf, -6e21, np.nan, -6e21, *[0.0] * 10, 0.8], [1, 1, 0, 5, *[1.0] * 10, 0.7]], np.float32)

    class Detector:
        def setInputSize(self, size):  # noqa: N802 (OpenCV's name)
            pass

        def detect(self, image):
            return 1, np.concatenate([bad, good])

    monkeypatch.setattr(faces_module, "_yunet", lambda: Detector())
    found = faces_module._detect_yunet(np.zeros((32, 32, 3), np.uint8))
    assert [box for box, _, _ in found] == [(4.0, 5.0, 24.0, 27.0)]


def test_align_unalign_round_trip(astronaut, face):
    crop, alignment = align_face(astronaut, face_quad(face.points), 256)
    assert crop.shape == (256, 256, 3) and crop.dtype == np.uint8
    back, weight = unalign(crop.astype(np.float32), alignment, astronaut.shape[:2])
    inside = weight > 0.999
    assert inside.sum() > 150 * 150  # the quad is about 180 px wide in the photo
    error = np.abs(back - astronaut)[inside]
    assert error.mean() < 4.0 and np.percentile(error, 99) < 25
    # The crop is framed like the training data: its own quad is (nearly) the whole crop.
    again = face_quad(detect_faces(crop)[0].points)
    frame = np.array([[0, 0], [0, 256], [256, 256], [256, 0]]) - 0.5
    assert np.abs(again - frame).max() < 0.04 * 256


def test_off_centre_rotated_face_still_aligns(astronaut, face):
    upright, _ = align_face(astronaut, face_quad(face.points), 128)
    for angle in (20, -20):
        photo = rotated_off_centre(astronaut, angle)
        found = detect_faces(photo)
        assert found, f"no face found at {angle} degrees"
        quad = face_quad(found[0].points)
        tilt = np.degrees(np.arctan2(*(quad[3] - quad[0])[::-1]))
        assert abs(tilt + angle) < 5, "the quad turns with the face"
        crop, _ = align_face(photo, quad, 128)
        assert np.abs(crop.astype(float) - upright).mean() < 20


def test_quad_outside_the_photo_is_reflect_padded(astronaut, face):
    corner = astronaut[60:, 150:]  # the face near the top-left corner: the quad leaves the photo
    found = detect_faces(corner)
    quad = face_quad(found[0].points)
    assert quad.min() < 0
    crop, alignment = align_face(corner, quad, 256)
    full, _ = align_face(astronaut, face_quad(face.points), 256)
    assert crop.shape == (256, 256, 3)
    centre = (slice(64, 192), slice(64, 192))  # inside the photo: the same face as from the whole photo
    assert np.abs(crop[centre].astype(float) - full[centre]).mean() < 6
    assert crop[:20].std() > 1, "reflected, not a flat border"


@pytest.mark.parametrize("method", ["telea", "network"])
def test_paste_back_changes_only_masked_pixels(astronaut, face, tiny_network, method):
    inpainter = Inpainter.from_pretrained("telea", device="cpu") if method == "telea" else tiny_network
    hole = eye_hole(face, astronaut.shape[:2])
    image = Image.fromarray(astronaut)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a face is found: no fallback warning
        result = np.asarray(inpainter(image, hole, align="always"))
    changed = (result != astronaut).any(-1)
    assert not changed[~hole].any()
    assert changed[hole].mean() > 0.5
    if method == "network":  # "auto" aligns a whole photo for a network, whatever its size
        assert needs_alignment(inpainter, astronaut, "auto")
        assert np.array_equal(np.asarray(inpainter(image, hole)), result)


def test_auto_keeps_aligned_crops_on_the_existing_path(astronaut, tiny_network):
    sample, hole = load_sample()
    sample = np.asarray(sample)
    assert not needs_alignment(tiny_network, sample, "auto"), "the demo crop's face fills the frame"
    at_resolution = Inpainter.from_config("deepfillv2", {"width": 8}, 256, device="cpu")
    assert not needs_alignment(at_resolution, sample, "auto"), "square at the model's resolution"
    assert not needs_alignment(Inpainter.from_pretrained("telea"), astronaut, "auto"), "classical methods"
    assert needs_alignment(tiny_network, sample[:, :200], "auto"), "not square"
    assert not needs_alignment(tiny_network, astronaut, "never")
    with pytest.raises(InpaintError, match="align must be one of"):
        tiny_network(sample, hole, align="sometimes")
    result = tiny_network(Image.fromarray(sample), hole)
    assert np.array_equal(np.asarray(result), np.asarray(tiny_network(Image.fromarray(sample), hole, align="never")))


def test_no_face_inpaints_a_crop_around_the_mask(tiny_network):
    rng = np.random.default_rng(0)
    image = cv2.GaussianBlur(rng.integers(0, 256, (300, 420, 3), dtype=np.uint8), (0, 0), 3)
    hole = np.zeros((300, 420), bool)
    hole[200:240, 300:380] = True
    with pytest.warns(UserWarning, match="no face was found; inpainted a square crop around the mask"):
        result = tiny_network(image, hole)
    changed = (result != image).any(-1)
    assert not changed[~hole].any() and changed[hole].mean() > 0.5


def test_missing_extra_is_a_clear_error(monkeypatch, astronaut, tiny_network):
    def missing(name):
        raise ImportError(name)

    monkeypatch.setattr(faces_module.importlib, "import_module", missing)
    faces_module.hog_detector.cache_clear()
    try:
        with pytest.raises(InpaintError, match=r"install 'faceinpaint\[faces\]'"):
            detect_faces(astronaut)
    finally:
        monkeypatch.undo()
        faces_module.hog_detector.cache_clear()
    monkeypatch.setattr(faces_module, "faces_available", lambda: False)
    with pytest.warns(UserWarning, match=r"install faceinpaint\[faces\]"):
        assert not needs_alignment(tiny_network, astronaut[:, :400], "auto")


@pytest.mark.parametrize("part", list(PARTS))
def test_part_masks_cover_their_landmarks(astronaut, face, part):
    hole = part_mask([face.landmarks], astronaut.shape[:2], [part])
    indices = sorted({i for _, points, _ in PARTS[part] for i in points})
    xs, ys = np.rint(face.landmarks[indices]).astype(int).T
    assert hole[ys, xs].all()
    assert hole.mean() < 0.1, "a part, not the whole face"
    grown = part_mask([face.landmarks], astronaut.shape[:2], [part], dilate=5)
    assert grown.sum() > hole.sum() and grown[hole].all()


def test_part_masks_keep_to_their_part(astronaut, face):
    eyes = part_mask([face.landmarks], astronaut.shape[:2], ["eyes"])
    xs, ys = np.rint(face.landmarks[48:68]).astype(int).T
    assert not eyes[ys, xs].any(), "the eyes' mask does not reach the mouth"


def test_mask_command(tmp_path, astronaut, capsys):
    Image.fromarray(astronaut).save(tmp_path / "photo.png")
    assert main(["mask", str(tmp_path / "photo.png"), "--parts", "eyes,mouth", "--out", str(tmp_path / "m.png")]) == 0
    written = Image.open(tmp_path / "m.png")
    assert written.mode == "L" and written.size == (512, 512) and 0 < np.mean(np.asarray(written) > 127) < 0.05
    Image.new("RGB", (200, 150), "grey").save(tmp_path / "blank.png")
    assert main(["mask", str(tmp_path / "blank.png"), "--parts", "eyes", "--out", str(tmp_path / "n.png")]) == 1
    assert main(["mask", str(tmp_path / "photo.png"), "--parts", "ears", "--out", str(tmp_path / "n.png")]) == 1
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 2 and "no face found" in errors[0] and "unknown face part(s) ears" in errors[1]


@pytest.mark.slow
def test_data_align_keeps_identities_and_lists_failures(tmp_path, astronaut, capsys):
    source, target = tmp_path / "photos", tmp_path / "aligned"
    for name in ("alice", "bob"):
        (source / name).mkdir(parents=True)
    Image.fromarray(astronaut).save(source / "alice" / "001.jpg")
    Image.fromarray(rotated_off_centre(astronaut, 20)).save(source / "alice" / "002.png")
    Image.fromarray(astronaut[:, ::-1]).save(source / "bob" / "001.jpg")
    Image.new("RGB", (320, 240), "grey").save(source / "bob" / "wall.png")
    (source / "bob" / "notes.txt").write_text("not an image")

    command = ["data", "align", str(source), str(target), "--size", "64", "--workers", "2"]
    assert main(command) == 0
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*.*")) == [
        "alice/001.jpg",
        "alice/002.png",
        "bob/001.jpg",
        "failures.txt",
    ]
    assert Image.open(target / "alice" / "002.png").size == (64, 64)
    assert (target / "failures.txt").read_text() == "bob/wall.png: no face found\n"
    assert "aligned 3 of 4 images" in capsys.readouterr().out
    assert main(command[:-2]) == 0  # a second run keeps what is there
    out = capsys.readouterr().out
    assert "aligned 0 of 4 images" in out and "3 already there" in out
    assert main(["data", "align", str(source), str(source / "out")]) == 1


@pytest.mark.parametrize("command", [["mask"], ["data", "align"]])
def test_help_shows_an_example(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0 and "example:" in capsys.readouterr().out
