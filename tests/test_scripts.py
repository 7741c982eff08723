"""Tests of the repo's scripts that need no ../shared data: the paired comparison of a study's methods."""

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faceinpaint.training.figures import LABEL_HEIGHT

SCRIPT = Path(__file__).parent.parent / "scripts" / "paired_difference.py"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True)


def write_per_image(folder: Path, rows: list[tuple[str, str, str]]) -> None:
    folder.mkdir(parents=True)
    with open(folder / "per_image.csv", "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["method", "image", "identity_cosine_sface"])
        writer.writerows(rows)


def test_paired_difference(tmp_path):
    # A beats B by 0.1 on a, 0.3 on b; c has no B value and d no A value (an undetected face), so both drop out.
    rows = [("A", "a", "0.9"), ("B", "a", "0.8"), ("A", "b", "0.7"), ("B", "b", "0.4"), ("A", "c", "0.5"),
            ("B", "c", "nan"), ("A", "d", ""), ("B", "d", "0.2")]  # fmt: skip
    write_per_image(tmp_path / "part-eyes", rows)
    result = run(tmp_path, "identity_cosine_sface", "A", "B")
    assert result.returncode == 0, result.stderr
    line = result.stdout.splitlines()[-1]
    # differences 0.1 and 0.3: mean 0.2, sd 0.1414, 95 % half-width 1.96 * 0.1414 / sqrt(2) = 0.196
    assert line == "| part-eyes | 2 | 0.8000 | 0.6000 | +0.2000 ± 0.1960 | 100% |"


def test_paired_difference_across_two_studies(tmp_path):
    """--second-folder: B from another study of the same images and masks (a new model against the shipped one)."""
    write_per_image(tmp_path / "new" / "part-eyes", [("M", "a", "0.9"), ("M", "b", "0.7"), ("M", "c", "0.6")])
    write_per_image(tmp_path / "old" / "part-eyes", [("M", "a", "0.8"), ("M", "b", "0.4")])
    result = run(tmp_path / "new", "identity_cosine_sface", "M", "M", "--second-folder", tmp_path / "old")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "| part-eyes | 2 | 0.8000 | 0.6000 | +0.2000 ± 0.1960 | 100% |"


@pytest.mark.parametrize(
    ("metric", "second", "message"),
    [("psnr", "B", "no column 'psnr'"), ("identity_cosine_sface", "C", "no values of identity_cosine_sface")],
)
def test_paired_difference_errors(tmp_path, metric, second, message):
    write_per_image(tmp_path / "lama-thick", [("A", "a", "0.9"), ("B", "a", "0.8")])
    result = run(tmp_path, metric, "A", second)
    assert result.returncode == 1 and message in result.stderr and len(result.stderr.splitlines()) == 1
    assert result.stdout == ""
    assert run(tmp_path / "missing", metric, "A", "B").returncode == 1


@pytest.mark.slow
def test_twoface_grid_draws_the_shipped_models_on_the_sample(tmp_path):
    pytest.importorskip("dlib", reason="the part masks need faceinpaint[faces]")
    script = Path(__file__).parent.parent / "scripts" / "twoface_grid.py"
    out = tmp_path / "grid.png"
    result = subprocess.run([sys.executable, str(script), str(out)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    with Image.open(out) as image:  # 6 columns, 3 rows of 256 px panels, 4 px gaps, a title row
        assert image.size == (6 * 260 - 4, LABEL_HEIGHT + 3 * 260 - 4)
    bad = subprocess.run([sys.executable, str(script), str(tmp_path / "grid.xyz")], capture_output=True,
                         text=True)  # fmt: skip
    assert bad.returncode == 1 and len(bad.stderr.splitlines()) == 1


@pytest.mark.slow
def test_sample_grid_draws_each_model_on_the_sample(tmp_path):
    pytest.importorskip("dlib", reason="the part masks need faceinpaint[faces]")
    script = Path(__file__).parent.parent / "scripts" / "sample_grid.py"
    out = tmp_path / "grid.png"
    result = subprocess.run([sys.executable, str(script), str(out), "--weights", "telea", "deepfillv2-face-256",
                             "--titles", "Telea", "shipped"], capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr
    with Image.open(out) as image:  # 4 columns, 3 rows of 256 px panels, 4 px gaps, a title row
        assert image.size == (4 * 260 - 4, LABEL_HEIGHT + 3 * 260 - 4)
        pixels = np.asarray(image.convert("RGB"))
    top = LABEL_HEIGHT
    truth, telea = pixels[top : top + 256, :256], pixels[top : top + 256, 2 * 260 : 2 * 260 + 256]
    assert np.abs(truth.astype(int) - telea).max() > 0  # the hole was filled by the model, not copied
    for arguments in (["--weights", "telea", "--titles", "a", "b"], ["--weights", "no-such-model"]):
        bad = subprocess.run([sys.executable, str(script), str(tmp_path / "bad.png"), *arguments],
                             capture_output=True, text=True)  # fmt: skip
        assert bad.returncode == 1 and len(bad.stderr.splitlines()) == 1, bad.stderr


def test_reference_ceiling_blends_replace_the_completion_by_as_much_as_their_weight():
    sys.path.insert(0, str(SCRIPT.parent))
    import torch
    from reference_ceiling import WEIGHTS, blends, gaussian_blur

    generator = torch.Generator().manual_seed(0)
    completed = torch.rand(2, 3, 32, 32, generator=generator) * 2 - 1
    pasted = torch.rand(2, 3, 32, 32, generator=generator) * 2 - 1
    valid = torch.zeros(2, 1, 32, 32)
    valid[..., :16] = 1.0  # the warp has pixels on the left half only
    prior = torch.cat([pasted, valid], dim=1)
    # a blur keeps a constant image and smooths noise
    assert torch.allclose(gaussian_blur(torch.full((1, 3, 20, 20), 0.3)), torch.full((1, 3, 20, 20), 0.3))
    assert gaussian_blur(completed).std() < completed.std() / 2
    found = blends(completed, pasted, prior)
    assert set(found) == {f"{source}@{weight}" for source in ("paste", "prior", "details") for weight in WEIGHTS}
    assert torch.allclose(found["paste@1.0"], pasted) and torch.allclose(found["paste@0.5"], (completed + pasted) / 2)
    # the raw warp replaces the completion only where it has pixels
    assert torch.allclose(found["prior@1.0"][..., :16], pasted[..., :16])
    assert torch.equal(found["prior@1.0"][..., 16:], completed[..., 16:])
    # details: the completion's blur plus the warp's high frequencies, and nothing where the warp has no pixels
    assert torch.allclose(
        found["details@1.0"][..., 4:-4, 4:12],
        (gaussian_blur(completed) + pasted - gaussian_blur(pasted)).clamp(-1, 1)[..., 4:-4, 4:12],
        atol=1e-6,
    )
    assert torch.equal(found["details@0.5"][..., 16:], completed[..., 16:])
