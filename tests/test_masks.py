"""Tests of the mask generators: hole-ratio statistics, reproducibility, pinned bits, files, torch and the CLI."""

import csv
import hashlib

import numpy as np
import pytest
import torch
from PIL import Image

from faceinpaint.cli import main
from faceinpaint.data.mask_batches import torch_masks
from faceinpaint.data.masks import MASK_KINDS, mask_set, random_mask, write_mask_set
from faceinpaint.errors import InpaintError

LAMA_KINDS = ("lama-thin", "lama-medium", "lama-thick")
# Mean hole ratio of 200 masks at 256 (measured about 0.32, 0.29, 0.22, 0.26, 1/16, 0.054; DeepFillv2 publishes ~0.31).
EXPECTED_MEAN = {
    "deepfill": (0.27, 0.36),
    "lama-thin": (0.24, 0.34),
    "lama-medium": (0.17, 0.27),
    "lama-thick": (0.21, 0.31),
    "center": (1 / 16, 1 / 16),
    "face-parts": (0.04, 0.07),
}
# sha256 of np.packbits(mask_set(kind, 8, 256, 0)): any change of a generator changes these (update on purpose only).
PINNED = {
    "deepfill": "49a67303eb38f2a00400b48863d978f4fda9cd18307742df3d8916eb2f869ed1",
    "lama-thick": "a0a0ff551d8bca885cfffbd3789205065d2af3f6cc7a468b08b52722d6e18898",
}


def test_kinds_are_the_published_names():
    assert list(MASK_KINDS) == ["deepfill", "lama-thin", "lama-medium", "lama-thick", "center", "face-parts"]


@pytest.mark.parametrize("kind", list(MASK_KINDS))
def test_hole_ratio_statistics(kind):
    masks = mask_set(kind, 200, 256, 1)
    assert masks.dtype == bool and masks.shape == (200, 256, 256)
    ratios = masks.mean((1, 2))
    assert ratios.min() > 0
    if kind in LAMA_KINDS:
        assert ratios.max() <= 0.5
    low, high = EXPECTED_MEAN[kind]
    assert low <= ratios.mean() <= high


def test_center_is_the_two_face_hole():
    mask = random_mask("center", 128, np.random.default_rng(0))
    rows, cols = np.nonzero(mask)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (48, 79, 48, 79) and mask.sum() == 32 * 32


@pytest.mark.parametrize("kind", ["deepfill", *LAMA_KINDS, "face-parts"])
def test_seeded_and_prefix_stable(kind):
    masks = mask_set(kind, 6, 64, 7)
    assert np.array_equal(masks, mask_set(kind, 6, 64, 7))
    assert np.array_equal(masks[:3], mask_set(kind, 3, 64, 7))
    assert np.array_equal(masks[2], random_mask(kind, 64, np.random.default_rng([7, 2])))
    assert not np.array_equal(masks, mask_set(kind, 6, 64, 8))
    assert len({mask.tobytes() for mask in masks}) == 6


@pytest.mark.parametrize("kind", sorted(PINNED))
def test_pinned_bits(kind):
    digest = hashlib.sha256(np.packbits(mask_set(kind, 8, 256, 0)).tobytes()).hexdigest()
    assert digest == PINNED[kind]


@pytest.mark.parametrize(
    "call",
    [
        lambda: mask_set("holes", 2, 64, 0),
        lambda: mask_set("deepfill", 0, 64, 0),
        lambda: mask_set("deepfill", 2, 100, 0),
        lambda: mask_set("deepfill", 2, 0, 0),
        lambda: mask_set("deepfill", 2, 64, -1),
        lambda: random_mask("lama-thin", 60, np.random.default_rng(0)),
        lambda: torch_masks("deepfill", 0, 64, torch.Generator(), "cpu"),
    ],
)
def test_bad_arguments_are_inpaint_errors(call):
    with pytest.raises(InpaintError):
        call()


def test_write_mask_set(tmp_path):
    out = write_mask_set("lama-medium", 4, 64, 3, tmp_path / "set")
    expected = mask_set("lama-medium", 4, 64, 3)
    with open(out / "masks.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert [row["file"] for row in rows] == ["00000.png", "00001.png", "00002.png", "00003.png"]
    assert sorted(path.name for path in out.iterdir()) == [*(row["file"] for row in rows), "masks.csv"]
    for row, mask in zip(rows, expected, strict=True):
        with Image.open(out / row["file"]) as image:
            assert image.mode == "L"
            pixels = np.asarray(image)
        assert set(np.unique(pixels)) <= {0, 255} and np.array_equal(pixels == 255, mask)
        assert float(row["hole_ratio"]) == pytest.approx(mask.mean(), abs=1e-6)
    with pytest.raises(InpaintError, match="not an empty folder"):
        write_mask_set("lama-medium", 4, 64, 3, out)


@pytest.mark.parametrize(
    ("kind", "batch"),
    [("deepfill", 64), ("lama-thin", 24), ("lama-medium", 64), ("lama-thick", 64), ("face-parts", 64)],
)
def test_torch_masks_match_numpy(kind, batch):
    masks = torch_masks(kind, batch, 128, torch.Generator().manual_seed(0), "cpu")
    assert masks.shape == (batch, 1, 128, 128) and masks.dtype == torch.float32 and masks.device.type == "cpu"
    assert set(masks.unique().tolist()) <= {0.0, 1.0}
    ratios = masks.mean((1, 2, 3))
    assert ratios.min() > 0
    if kind in LAMA_KINDS:
        assert ratios.max() <= 0.5
    assert abs(ratios.mean().item() - mask_set(kind, 200, 128, 0).mean()) < 0.05


def test_face_parts_cover_one_or_two_parts_of_an_aligned_face():
    """Every hole lies over the eyes (two ellipses), nose or mouth of the FFHQ framing, never at the border."""
    masks = mask_set("face-parts", 100, 256, 4)
    rows, cols = np.nonzero(masks.any(0))
    assert rows.min() > 60 and rows.max() < 240 and cols.min() > 40 and cols.max() < 216
    eyes, mouth = masks[:, 121, 96] & masks[:, 121, 159], masks[:, 190, 127]
    assert 0.2 < eyes.mean() < 0.6 and 0.2 < mouth.mean() < 0.6  # each of 3 parts is chosen first 1/3 of the time
    assert not masks[:, 121, 127].all()  # between the eyes is not always covered: eye holes are two ellipses


def test_torch_masks_seeded():
    first = torch_masks("deepfill", 4, 64, torch.Generator().manual_seed(5), "cpu")
    assert torch.equal(first, torch_masks("deepfill", 4, 64, torch.Generator().manual_seed(5), "cpu"))
    assert not torch.equal(first, torch_masks("deepfill", 4, 64, torch.Generator().manual_seed(6), "cpu"))
    center = torch_masks("center", 2, 128, torch.Generator(), "cpu")
    assert torch.equal(center[0, 0].bool(), torch.from_numpy(random_mask("center", 128, np.random.default_rng())))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_torch_masks_on_gpu():
    masks = torch_masks("lama-thick", 16, 256, torch.Generator("cuda").manual_seed(0), "cuda")
    assert masks.device.type == "cuda" and masks.shape == (16, 1, 256, 256)
    assert 0 < masks.mean((1, 2, 3)).max().item() <= 0.5


def test_cli_writes_a_set(tmp_path, capsys):
    out = tmp_path / "masks"
    argv = ["data", "masks", "--kind", "deepfill", "--count", "3", "--size", "64", "--seed", "2", "--out", str(out)]
    assert main(argv) == 0
    assert "wrote 3 deepfill masks" in capsys.readouterr().out
    written = np.stack([np.asarray(Image.open(out / f"0000{index}.png")) == 255 for index in range(3)])
    assert np.array_equal(written, mask_set("deepfill", 3, 64, 2))


def test_cli_bad_kind_is_one_line(tmp_path, capsys):
    assert main(["data", "masks", "--kind", "holes", "--count", "3", "--out", str(tmp_path / "masks")]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "unknown mask kind 'holes'" in error and "lama-thick" in error
    assert not (tmp_path / "masks").exists()
