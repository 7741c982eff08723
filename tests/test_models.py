"""DeepFillv2 generator and SN-PatchGAN: parameter counts, shapes, ranges, masks, autocast."""

import json

import pytest
import torch

from faceinpaint.errors import InpaintError
from faceinpaint.inpainter import Inpainter
from faceinpaint.models import ARCHITECTURES, DeepFillV2, SNPatchGAN


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_parameter_counts_match_the_paper():
    generator = DeepFillV2(width=48)
    assert _count(generator) == pytest.approx(4.05e6, rel=0.02)
    assert _count(generator.coarse) == pytest.approx(1.63e6, rel=0.02)
    assert _count(SNPatchGAN()) == pytest.approx(5.95e6, rel=0.02)


def test_a_model_dir_names_its_generator_through_the_registry(tmp_path):
    """config.json's "arch" picks the class that loads the weights; an unknown name lists the valid ones."""
    torch.manual_seed(0)
    saved = Inpainter.from_config("deepfillv2", {"width": 8}, 32, device="cpu").save_pretrained(tmp_path / "tiny")
    assert json.loads((saved / "config.json").read_text())["arch"] == "deepfillv2"
    assert type(Inpainter.from_pretrained(saved, device="cpu").model) is DeepFillV2
    with pytest.raises(InpaintError, match=f"unknown architecture 'deepfil'; valid: {', '.join(ARCHITECTURES)}"):
        Inpainter.from_config("deepfil", {}, 32, device="cpu")


@pytest.mark.parametrize("size", [(32, 32), (40, 24)])
def test_generator_shapes_and_range(size):
    torch.manual_seed(0)
    model = DeepFillV2(width=8)
    image = torch.rand(2, 3, *size) * 2 - 1
    mask = torch.zeros(2, 1, *size)
    mask[:, :, 8:20, 4:16] = 1
    coarse, refined = model(image, mask)
    for out in (coarse, refined):
        assert out.shape == image.shape and out.dtype == torch.float32
        assert out.abs().max() <= 1.0 and torch.isfinite(out).all()


def test_generator_ignores_pixels_under_the_hole():
    torch.manual_seed(0)
    model = DeepFillV2(width=8).eval()
    image = torch.rand(1, 3, 32, 32) * 2 - 1
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 8:24, 8:24] = 1
    with torch.no_grad():
        first = model(image, mask)[1]
        second = model(image + 5 * mask, mask)[1]
    torch.testing.assert_close(first, second)


def test_generator_training_path_matches_inference_path():
    """With gradients on, the gates are fused autograd nodes; without, plain ops: the same outputs."""
    torch.manual_seed(0)
    model = DeepFillV2(width=8).to(memory_format=torch.channels_last)
    image = (torch.rand(2, 3, 32, 32) * 2 - 1).contiguous(memory_format=torch.channels_last)
    mask = torch.zeros(2, 1, 32, 32)
    mask[0, :, 8:20, 4:16] = 1
    mask[1, :, 16:30, 10:28] = 1
    training = model(image, mask)
    assert training[1].requires_grad
    with torch.no_grad():
        inference = model(image, mask)
    for actual, expected in zip(training, inference, strict=True):
        torch.testing.assert_close(actual.detach(), expected)


def test_generator_runs_under_bf16_autocast_and_backpropagates():
    torch.manual_seed(0)
    model = DeepFillV2(width=8)
    image = torch.rand(1, 3, 32, 32) * 2 - 1
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 4:20, 10:30] = 1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        coarse, refined = model(image, mask)
        loss = (coarse.float() - image).abs().mean() + (refined.float() - image).abs().mean()
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_generator_rejects_a_width_that_cannot_be_halved_twice():
    with pytest.raises(ValueError, match="multiple of 4"):
        DeepFillV2(width=6)


def test_discriminator_score_map_shape():
    scores = SNPatchGAN(width=8)(torch.rand(2, 3, 128, 64), torch.zeros(2, 1, 128, 64))
    assert scores.shape == (2, 32, 2, 1)
