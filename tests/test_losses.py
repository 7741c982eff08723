"""The structure losses: hole-part L1, the adversarial ramp, feature matching, dlib and ST-LPIPS features."""

import numpy as np
import pytest
import torch

from faceinpaint.data.mask_batches import face_parts_region
from faceinpaint.data.masks import FACE_PARTS
from faceinpaint.images import uint8_to_tensor
from faceinpaint.inference.demo import load_sample
from faceinpaint.models.discriminator import SNPatchGAN
from faceinpaint.training.losses import adversarial_weight, dlib_feature_loss, feature_matching, hole_l1


def _face() -> torch.Tensor:
    """The bundled aligned sample face, (1, 3, 256, 256) in [-1, 1]."""
    image, _ = load_sample()
    return uint8_to_tensor(np.asarray(image)[None])


def test_hole_l1_counts_only_the_weighted_pixels():
    output, target = torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 4)
    output[..., 0, 0], output[..., 3, 3] = 1.0, 0.5
    weight = torch.zeros(1, 1, 4, 4)
    weight[..., 0, 0] = 1.0
    assert hole_l1(output, target, weight).item() == pytest.approx(1.0)
    weight[..., 3, 3] = 1.0
    assert hole_l1(output, target, weight).item() == pytest.approx(0.75)
    assert hole_l1(output, target, torch.zeros_like(weight)).item() == 0.0  # no such pixel: no loss


def test_adversarial_weight_starts_late_and_ramps_up():
    assert [adversarial_weight(step, 0.5, 10, 4) for step in (0, 9, 10, 11, 13, 100)] == [
        0.0, 0.0, 0.125, 0.25, 0.5, 0.5,
    ]  # fmt: skip
    assert adversarial_weight(0, 0.5, 0, 0) == 0.5 and adversarial_weight(50, 0.0, 0, 0) == 0.0


def test_discriminator_features_end_with_its_scores_and_match_to_zero():
    torch.manual_seed(0)
    network = SNPatchGAN(width=4).eval()
    image, mask = torch.rand(2, 3, 64, 64) * 2 - 1, torch.zeros(2, 1, 64, 64)
    layers = network(image, mask, features=True)
    assert len(layers) == 6 and torch.equal(layers[-1], network(image, mask))
    fake = image.clone().requires_grad_(True)
    assert feature_matching(layers[:-1], network(fake, mask, features=True)[:-1]).item() == pytest.approx(0.0)
    moved = feature_matching(layers[:-1], network(fake + 0.3, mask, features=True)[:-1])
    moved.backward()
    assert moved.item() > 0 and fake.grad.abs().sum() > 0


def test_face_parts_region_covers_eyes_nose_and_mouth_only():
    region = face_parts_region(256)
    assert region.shape == (1, 1, 256, 256)
    for ellipses in FACE_PARTS.values():
        for x, y, _, _ in ellipses:
            assert region[0, 0, y, x] == 1.0
    assert region[0, 0, 5, 5] == 0.0 and region[0, 0, 250, 128] == 0.0
    assert 0.05 < region.mean().item() < 0.25
    assert torch.equal(face_parts_region(128)[0, 0, 60, 48], region[0, 0, 121, 96])  # eye centre, scaled


def test_dlib_features_are_zero_for_the_same_face_and_grow_with_damage():
    pytest.importorskip("face_recognition_models", reason="needs faceinpaint[faces]")
    from faceinpaint.models.dlib_resnet import DlibResNet

    network, face = DlibResNet.from_package(), _face()
    assert dlib_feature_loss(network, face, face).item() == pytest.approx(0.0, abs=1e-6)
    hole = face_parts_region(256) > 0
    small = torch.where(hole, face * 0.8, face).requires_grad_(True)
    large = torch.where(hole, torch.zeros_like(face), face)
    loss = dlib_feature_loss(network, small, face)
    assert 0 < loss.item() < dlib_feature_loss(network, large, face).item()
    loss.backward()
    assert small.grad[hole.expand_as(small)].abs().sum() > 0  # gradients reach the damaged pixels


def test_dlib_features_in_the_hole_weigh_a_small_hole_like_a_large_one():
    pytest.importorskip("face_recognition_models", reason="needs faceinpaint[faces]")
    from faceinpaint.models.dlib_resnet import DlibResNet

    network, face = DlibResNet.from_package(), _face()
    eye_x, eye_y, half_x, half_y = FACE_PARTS["eyes"][0]
    mask = torch.zeros(1, 1, 256, 256)
    mask[..., eye_y - half_y : eye_y + half_y, eye_x - half_x : eye_x + half_x] = 1.0
    damaged = torch.where(mask > 0, torch.zeros_like(face), face)
    whole, in_hole = dlib_feature_loss(network, damaged, face), dlib_feature_loss(network, damaged, face, mask)
    assert in_hole.item() > 2 * whole.item() > 0  # the whole-face mean dilutes a hole of 1.5 % of the image
    assert dlib_feature_loss(network, face, face, mask).item() == pytest.approx(0.0, abs=1e-6)
    # A face whose hole misses the chip adds nothing; the batch mean counts it as 0.
    corner = torch.zeros_like(mask)
    corner[..., :8, :8] = 1.0
    two = torch.cat([damaged, damaged]), torch.cat([face, face]), torch.cat([mask, corner])
    pair = dlib_feature_loss(network, *two)
    assert pair.item() == pytest.approx(in_hole.item() / 2, rel=1e-4)


def test_stlpips_distance_has_gradients_and_equals_the_judge():
    pytest.importorskip("stlpips_pytorch", reason="needs faceinpaint[eval]")
    from faceinpaint.models.perceptual import STLPIPS

    model, face = STLPIPS.from_package().requires_grad_(False), _face()[..., ::4, ::4]  # 64x64 keeps it quick
    noisy = (face + 0.2 * torch.randn(face.shape, generator=torch.Generator().manual_seed(0))).requires_grad_(True)
    distance = model.distance(noisy, face)
    assert torch.allclose(distance.detach(), model(noisy.detach(), face), atol=1e-6)
    distance.sum().backward()
    assert distance.item() > 0 and noisy.grad.abs().sum() > 0
