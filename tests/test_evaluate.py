"""Evaluate and study tests: a tiny set of generated faces, classical methods, every output file written."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faceinpaint.cli import main
from faceinpaint.masks import mask_set
from faceinpaint.study import load_study_config, run_study


@pytest.fixture
def faces(tmp_path, face):
    """Four 64x64 crops of the demo face (two identity folders), written as PNG files."""
    pixels = np.asarray(face[0].convert("RGB").resize((64, 64)))
    for index, variant in enumerate([pixels, pixels[:, ::-1], np.roll(pixels, 3, axis=0), pixels // 2 + 60]):
        folder = tmp_path / "faces" / f"0000{index // 2}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(variant)).save(folder / f"{index}.png")
    return tmp_path / "faces"


def test_the_study_mask_set_is_pinned():
    masks = mask_set("deepfill", 4, 64, 0)
    assert hashlib.sha256(np.packbits(masks).tobytes()).hexdigest()[:16] == "bc3729d14950757a"


def test_study_writes_table_figure_and_plot(tmp_path, faces):
    config_path = tmp_path / "study.yaml"
    config_path.write_text(
        f"images: {faces}\nout: {tmp_path / 'study'}\nmethods: [telea, navier-stokes]\n"
        "mask_sets: [deepfill, center]\nmetrics: [psnr, ssim, l1, fid]\nfigure_faces: 2\nbatch_size: 3\n"
    )
    reports = run_study(load_study_config(config_path), device="cpu", progress=False)
    out = tmp_path / "study"
    for name in ("study.md", "study.csv", "study.json", "comparison-deepfill.png", "metrics-vs-hole-ratio.png"):
        assert (out / name).is_file(), name
    table = (out / "study.md").read_text()
    assert "| deepfill | telea | 4 |" in table and "FID ↓" in table
    assert Image.open(out / "comparison-center.png").size[0] > Image.open(out / "comparison-center.png").size[1]
    assert (out / "deepfill" / "telea" / "00001" / "3.png").is_file()
    result = reports["deepfill"]["methods"]["telea"]["all"]
    assert result["count"] == 4 and 0 < result["ssim"] < 1 and result["fid"] >= 0
    saved = json.loads((out / "deepfill" / "results.json").read_text())
    assert saved["protocol"]["masks"] == "deepfill (seed 0)"


def test_unknown_study_key_is_an_error(tmp_path):
    from faceinpaint.errors import InpaintError

    path = tmp_path / "bad.yaml"
    path.write_text("images: x\nout: y\nmask_set: [deepfill]\n")
    with pytest.raises(InpaintError, match="unknown key.*mask_set"):
        load_study_config(path)


def test_evaluate_command_with_a_mask_file(tmp_path, faces, capsys):
    hole = np.zeros((64, 64), np.uint8)
    hole[20:40, 16:48] = 255
    Image.fromarray(hole).save(tmp_path / "hole.png")
    code = main(
        ["evaluate", "--weights", "telea", "--images", str(faces), "--masks", str(tmp_path / "hole.png")]
        + ["--metrics", "psnr,l1", "--out", str(tmp_path / "eval"), "--device", "cpu"]
    )
    assert code == 0
    rows = (tmp_path / "eval" / "results.csv").read_text().splitlines()
    assert rows[0].startswith("method,hole,count,psnr,psnr_hole,l1,l1_hole") and rows[1].startswith("telea,all,4,")


def test_a_file_list_of_absolute_paths_writes_outputs_inside_the_output_folder(tmp_path, faces):
    listed = sorted(faces.rglob("*.png"))
    flist = tmp_path / "lists" / "val.flist"
    flist.parent.mkdir()
    flist.write_text("# validation\n\n" + f"{listed[0]}\n../faces/{listed[1].relative_to(faces)}\n")
    assert main(["evaluate", "--weights", "telea", "--images", str(flist), "--masks", "center", "--metrics", "psnr",
                 "--out", str(tmp_path / "eval"), "--device", "cpu"]) == 0  # fmt: skip
    written = sorted(p.relative_to(tmp_path / "eval" / "telea") for p in (tmp_path / "eval").rglob("*.png"))
    assert written == sorted([listed[0].relative_to("/"), Path("faces", listed[1].relative_to(faces))])
    assert sorted(faces.rglob("*.png")) == listed  # nothing written beside the inputs


def test_evaluate_command_rejects_an_unknown_metric(tmp_path, faces, capsys):
    code = main(
        ["evaluate", "--weights", "telea", "--images", str(faces), "--masks", "center"]
        + ["--metrics", "lpips", "--out", str(tmp_path / "eval")]
    )
    assert code == 1
    assert "unknown metric(s) lpips" in capsys.readouterr().err
