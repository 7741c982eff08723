"""Two-Face v2's reference prior: the batched warp matches OpenCV's, the model uses it, training builds it."""

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from skimage import data

from faceinpaint.config import from_dict
from faceinpaint.errors import InpaintError
from faceinpaint.faces.part_masks import face_part_mask
from faceinpaint.inpainter import Inpainter
from faceinpaint.models import TwoFace

pytest.importorskip("dlib", reason="needs faceinpaint[faces]")
pytest.importorskip("face_recognition_models", reason="needs faceinpaint[faces]")

from faceinpaint.faces import landmark_cache  # noqa: E402
from faceinpaint.faces.reference_prior import (  # noqa: E402
    batch_prior,
    fit_similarity,
    image_prior,
    mirror_landmarks,
    trusted_weights,
    warp_batch,
)
from faceinpaint.faces.reference_warp import ALIGNED_LANDMARKS_68, aligned_landmarks  # noqa: E402
from faceinpaint.training.loop import train  # noqa: E402
from test_twoface import batch_inputs, tiny_config  # noqa: E402

TRANSFORM = np.array([[0.9, -0.2, 30.0], [0.2, 0.9, -10.0]])


def _to_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 127.5 - 1.0


@pytest.fixture(scope="module")
def astronaut_face() -> np.ndarray:
    return np.ascontiguousarray(data.astronaut()[:256, 100:356])


def test_mirrored_landmarks_of_the_aligned_mean_are_the_aligned_mean():
    points = torch.tensor(ALIGNED_LANDMARKS_68)
    mirrored = mirror_landmarks(points, 256)
    assert (mirrored - points).norm(dim=1).mean() < 1.0  # the mean face is nearly symmetric, point for point
    torch.testing.assert_close(mirror_landmarks(mirrored, 256), points)  # an involution


def test_fit_recovers_a_similarity_and_ignores_points_of_weight_zero():
    torch.manual_seed(0)
    source = torch.rand(2, 20, 2) * 200
    linear, shift = torch.tensor(TRANSFORM[:, :2]).float(), torch.tensor(TRANSFORM[:, 2]).float()
    target = source @ linear.T + shift
    weights = torch.ones(2, 20)
    target[1, :5] += 80.0  # outliers...
    weights[1, :5] = 0.0  # ...not trusted
    torch.testing.assert_close(
        fit_similarity(source, target, weights), torch.tensor(TRANSFORM).float().expand(2, 2, 3)
    )


def test_batched_warp_matches_opencv(astronaut_face):
    expected = cv2.warpAffine(astronaut_face, TRANSFORM, (256, 256), flags=cv2.INTER_LINEAR)
    coverage = cv2.warpAffine(np.full((256, 256), 255, np.uint8), TRANSFORM, (256, 256)) == 255
    prior = warp_batch(_to_tensor(astronaut_face), torch.tensor(TRANSFORM)[None].float(), (256, 256))
    assert prior.shape == (1, 4, 256, 256)
    valid = prior[0, 3].numpy() > 0.5
    warped = ((prior[0, :3] + 1) * 127.5).permute(1, 2, 0).numpy()
    assert (valid != coverage).mean() < 1e-3
    assert np.abs(warped - expected)[valid & coverage].max() <= 3.0  # OpenCV interpolates in fixed point
    assert (prior[0, :3].abs().sum(0)[~torch.from_numpy(valid)] == 0).all()  # no pixels where the warp has none


def test_landmarks_in_or_near_the_hole_are_not_trusted():
    points = torch.tensor(ALIGNED_LANDMARKS_68).float()[None]
    mask = torch.zeros(1, 1, 256, 256)
    mask[..., 100:135, 70:190] = 1  # the eyes and brows' lower half
    weights = trusted_weights(points, mask)[0]
    eyes = list(range(36, 48))
    assert weights[eyes].sum() == 0 and weights[list(range(48, 68))].min() == 1  # eyes out, mouth in
    assert trusted_weights(points, torch.ones(1, 1, 256, 256)).min() == 1  # nothing outside: all of them


def test_the_training_prior_aligns_a_moved_reference(astronaut_face):
    # The reference is the face moved by TRANSFORM; its landmarks moved alike: the prior must bring it back.
    reference = cv2.warpAffine(astronaut_face, TRANSFORM, (256, 256), borderMode=cv2.BORDER_REFLECT)
    points = torch.tensor(aligned_landmarks(256, 68)).float()
    moved = points @ torch.tensor(TRANSFORM[:, :2]).float().T + torch.tensor(TRANSFORM[:, 2]).float()
    mask = torch.from_numpy(face_part_mask(astronaut_face, ["eyes"], dilate=4))[None, None].float()
    prior = batch_prior(_to_tensor(reference), moved[None], points[None], mask)
    valid = prior[0, 3] > 0.5
    error = (prior[0, :3] - _to_tensor(astronaut_face)[0]).abs().mean(0)[valid]
    assert valid.float().mean() > 0.9 and error.mean() < 0.05


def test_inference_prior_of_a_faceless_reference_is_empty_with_a_warning(astronaut_face):
    hole = torch.from_numpy(face_part_mask(astronaut_face, ["eyes"], dilate=4))[None, None].float()
    grey = torch.zeros(1, 3, 256, 256)
    with pytest.warns(UserWarning, match="no face found in the reference"):
        prior = image_prior(_to_tensor(astronaut_face), hole, grey)
    assert prior.shape == (1, 4, 256, 256) and prior.abs().sum() == 0
    found = image_prior(_to_tensor(astronaut_face), hole, _to_tensor(astronaut_face))
    assert found[0, 3].float().mean() > 0.9


def _v2(seed: int = 0, live: bool = True) -> TwoFace:
    torch.manual_seed(seed)
    model = TwoFace(width=8, reference_width=8, identity_dim=16, prior=True)
    if live:
        for layer in model.prior_inputs.values():
            torch.nn.init.normal_(layer.weight, std=1.0)
    return model.eval()


def _batch(size: int = 32) -> tuple[torch.Tensor, ...]:
    """test_twoface's image, mask and reference, and a prior that covers the whole image."""
    image, mask, reference = batch_inputs(size)
    prior = torch.cat([torch.rand(2, 3, size, size) * 2 - 1, torch.ones(2, 1, size, size)], 1)
    return image, mask, reference, prior


def test_a_fresh_v2_is_v1_and_a_dropped_sample_sees_no_prior():
    image, mask, reference, prior = _batch()
    fresh = _v2(live=False)
    v1 = TwoFace(width=8, reference_width=8, identity_dim=16).eval()
    v1.load_state_dict({k: v for k, v in fresh.state_dict().items() if not k.startswith("prior_inputs")})
    with torch.no_grad():
        torch.testing.assert_close(fresh(image, mask, reference, prior=prior)[1], v1(image, mask, reference)[1])
        model = _v2()
        used = model(image, mask, reference, prior=prior)[1]
        other = model(image, mask, reference, prior=prior.roll(7, -1))[1]
        mixed = model(image, mask, reference, has_reference=torch.tensor([True, False]), prior=prior)[1]
        assert (used - other)[mask.expand_as(used) > 0].abs().mean() > 1e-4  # the prior reaches the hole
        assert torch.equal(mixed[1], model(image, mask)[1][1])  # dropped: exactly the no-reference output
        torch.testing.assert_close(mixed[0], used[0])
    with pytest.raises(ValueError, match="needs the reference prior"):
        model(image, mask, reference)


def test_reference_prior_is_a_twoface_option():
    with pytest.raises(InpaintError, match="only the twoface arch"):
        from_dict({"model": {"arch": "deepfillv2", "reference_prior": True}})
    config = from_dict({"model": {"arch": "twoface", "reference_prior": True}})
    assert config.model_args()["prior"] is True
    assert "prior" not in from_dict({"model": {"arch": "twoface"}}).model_args()  # v1 config.json stays as it was


def test_an_inpainter_runs_v2_with_the_warp(astronaut_face):
    inpainter = Inpainter.from_config("twoface", {"width": 8, "reference_width": 8, "prior": True}, 256,
                                      device="cpu", reference=True)  # fmt: skip
    seen, forward = [], inpainter.model.forward

    def spy(*args, **kwargs):
        seen.append(args[4] if len(args) > 4 else None)
        return forward(*args, **kwargs)

    inpainter.model.forward = spy
    hole = face_part_mask(astronaut_face, ["eyes"], dilate=4)
    with_reference = inpainter(astronaut_face, hole, reference=astronaut_face)
    inpainter(astronaut_face, hole)
    assert np.array_equal(with_reference[~hole], astronaut_face[~hole])
    prior, none = seen
    assert none is None and prior.shape == (1, 4, 256, 256)
    # The reference is the photo itself: its warp lands on it (the hole's pixels come from the reference).
    valid = prior[0, 3] > 0.5
    assert valid.float().mean() > 0.9
    assert (prior[0, :3] - _to_tensor(astronaut_face)[0]).abs().mean(0)[valid].mean() < 0.1


@pytest.mark.slow
def test_v2_exports_with_its_prior_and_runs_on_onnxruntime(astronaut_face):
    """The graph takes the warped reference as a uint8 `prior` input (the warp stays outside): the onnx backend
    gives PyTorch's completions with and without a reference, and `prior_input` is the array a deployment feeds."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from faceinpaint.backends.export import PARITY_TOLERANCE, run_torch
    from faceinpaint.faces.reference_prior import prior_input

    torch.manual_seed(0)
    inpainter = Inpainter.from_config("twoface", {"width": 8, "reference_width": 8, "prior": True}, 256,
                                      device="cpu", reference=True)  # fmt: skip
    for layer in inpainter.model.prior_inputs.values():  # a trained model's prior matters: not zero here either
        torch.nn.init.normal_(layer.weight, std=2.0)  # a tiny random net barely moves
    onnx = Inpainter("v2", inpainter.config, inpainter.model, device="cpu", backend="onnx")
    hole = face_part_mask(astronaut_face, ["eyes"], dilate=4)
    mirrored = np.ascontiguousarray(astronaut_face[:, ::-1])
    for reference in (mirrored, None):
        expected = inpainter(astronaut_face, hole, reference=reference)
        got = onnx(astronaut_face, hole, reference=reference)
        assert np.abs(got.astype(int) - expected).max() <= PARITY_TOLERANCE
    assert np.abs(onnx(astronaut_face, hole, reference=mirrored).astype(int) - expected).max() > 8  # prior counts

    session, _ = onnx._onnx.sessions[True]  # the graph with the reference: what export-onnx writes
    assert [i.name for i in session.get_inputs()] == ["image", "mask", "reference", "prior"]
    prior = prior_input(astronaut_face, hole, mirrored)
    assert prior.shape == (256, 256, 4) and prior.dtype == np.uint8 and (prior[..., 3] == 255).mean() > 0.9
    arrays = [astronaut_face[None], hole[None, ..., None].astype(np.uint8) * 255, mirrored[None], prior[None]]
    (output,) = session.run(None, dict(zip(["image", "mask", "reference", "prior"], arrays, strict=True)))
    assert np.abs(output[0].astype(int) - run_torch(inpainter, *arrays)[0]).max() <= PARITY_TOLERANCE
    with_reference = inpainter(astronaut_face, hole, reference=mirrored)
    assert np.abs(output[0].astype(int) - with_reference).max() <= PARITY_TOLERANCE  # the Inpainter's own warp


def test_landmarks_are_found_once_and_kept(tmp_path: Path, astronaut_face, monkeypatch):
    faceless = np.full((256, 256, 3), 90, np.uint8)
    images = torch.from_numpy(np.stack([astronaut_face, faceless])).permute(0, 3, 1, 2)
    cache = tmp_path / "list.flist.train-landmarks256.npz"
    points = landmark_cache.cached_landmarks(images, ["a.png", "b.png"], cache, workers=1)
    assert cache.is_file() and points.shape == (2, 68, 2)
    torch.testing.assert_close(points[1], torch.tensor(aligned_landmarks(256, 68)).float())  # no face: the mean
    assert (points[0] - points[1]).norm(dim=1).mean() > 3.0  # the astronaut's own points

    def refuse(*args, **kwargs):
        raise AssertionError("landmarks found again")

    monkeypatch.setattr(landmark_cache, "find_landmarks", refuse)
    torch.testing.assert_close(landmark_cache.cached_landmarks(images, ["a.png", "b.png"], cache), points)
    with pytest.raises(AssertionError, match="found again"):  # other photos: the cache does not answer
        landmark_cache.cached_landmarks(images, ["a.png", "c.png"], cache)


@pytest.mark.slow
def test_v2_trains_reproducibly_with_its_cached_landmarks(tmp_path: Path):
    config = tiny_config(tmp_path, max_steps=2, val_every=2, identity_weight=0.0, self_reference=0.5)
    config["model"]["reference_prior"] = True
    config["data"]["flip"] = True
    first = train(from_dict(config))
    assert Path(config["data"]["train"] + ".train-landmarks32.npz").is_file()
    assert Path(config["data"]["val"] + ".val-landmarks32.npz").is_file()
    config["train"]["run_root"] = str(tmp_path / "again")
    second = train(from_dict(config))
    for key, value in first.generator.state_dict().items():
        assert torch.equal(value, second.generator.state_dict()[key]), key
    assert any(p.abs().sum() > 0 for p in first.generator.prior_inputs.parameters())  # the prior convs learnt
