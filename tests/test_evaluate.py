"""Evaluate and study tests: a tiny set of generated faces, classical methods, every output file written."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faceinpaint.cli import main
from faceinpaint.data.masks import mask_set
from faceinpaint.evaluation.evaluate import read_masks
from faceinpaint.evaluation.fid import InceptionFeatures
from faceinpaint.evaluation.metrics import fid_from_features
from faceinpaint.evaluation.study import load_study_config, run_study
from faceinpaint.images import uint8_to_tensor


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


@pytest.mark.slow
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
    assert result["count"] == 4 and 0 < result["ssim"] < 1
    # The table's FID is the Frechet distance of the Inception features of the saved outputs and the originals.
    names = ["00000/0", "00000/1", "00001/2", "00001/3"]
    features = {
        kind: InceptionFeatures()(uint8_to_tensor(np.stack([np.asarray(Image.open(folder / f"{name}.png"))
                                                             for name in names]))).numpy()
        for kind, folder in (("real", faces), ("fake", out / "deepfill" / "telea"))
    }  # fmt: skip
    assert result["fid"] == pytest.approx(fid_from_features(features["real"], features["fake"]), rel=1e-3)
    assert result["fid"] > 1.0  # Telea's completions are not the originals
    saved = json.loads((out / "deepfill" / "results.json").read_text())
    assert saved["protocol"]["masks"] == "deepfill (seed 0)"
    used = read_masks(out / "deepfill")
    assert list(used) == ["00000/0", "00000/1", "00001/2", "00001/3"]
    assert np.array_equal(np.stack(list(used.values())), mask_set("deepfill", 4, 64, 0))


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


def test_same_person_references_are_another_photo_of_the_same_folder(tmp_path):
    from faceinpaint.data.datasets import list_images
    from faceinpaint.data.references import same_person_references
    from faceinpaint.errors import InpaintError

    for person, count in (("a", 3), ("b", 2), ("c", 1)):
        (tmp_path / person).mkdir()
        for number in range(count):
            Image.new("RGB", (8, 8)).save(tmp_path / person / f"{number}.png")
    pool = list_images(tmp_path)
    images = {key: path for key, path in pool.items() if not key.startswith("c")}
    chosen = same_person_references(images, tmp_path, seed=0)
    for key, reference in chosen.items():
        assert reference.parent == pool[key].resolve().parent and reference != pool[key].resolve()
    assert same_person_references({"a/2": pool["a/2"]}, tmp_path)["a/2"] == chosen["a/2"]  # stable under subsets
    with pytest.raises(InpaintError, match="no other photo of the person of c/0"):
        same_person_references({"c/0": pool["c/0"]}, tmp_path)


def test_study_with_face_part_masks_runs_reference_models_with_and_without_the_reference(tmp_path, face):
    import torch

    from faceinpaint.inpainter import Inpainter
    from faceinpaint.models import TwoFace

    pixels = np.asarray(face[0].convert("RGB"))
    variants = [pixels, pixels[:, ::-1], np.roll(pixels, 4, axis=1), (pixels * 0.8).astype(np.uint8)]
    for index, variant in enumerate(variants):
        folder = tmp_path / "faces" / f"person{index // 2}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(variant)).save(folder / f"{index}.png")
    torch.manual_seed(0)
    model = TwoFace(width=8, reference_width=8, identity_dim=16)
    for layer in (model.reference_attention.out, model.film):  # zero at init: make the reference matter
        torch.nn.init.normal_(layer.weight, std=0.2)
    config = {"arch": "twoface", "args": {"width": 8, "reference_width": 8, "identity_dim": 16}, "resolution": 32,
              "reference": True}  # fmt: skip
    Inpainter("twoface-tiny", config, model).save_pretrained(tmp_path / "twoface-tiny", dtype=torch.float32)
    (tmp_path / "study.yaml").write_text(
        f"images: {tmp_path / 'faces'}\nout: {tmp_path / 'study'}\nmethods: [telea, {tmp_path / 'twoface-tiny'}]\n"
        f"mask_sets: ['part:eyes']\nmetrics: [psnr]\nreferences: {tmp_path / 'faces'}\nfigure_faces: 2\n"
    )
    reports = run_study(load_study_config(tmp_path / "study.yaml"), device="cpu", progress=False)
    report = reports["part:eyes"]
    assert list(report["methods"]) == ["telea", "twoface-tiny", "twoface-tiny-noref"]
    assert report["protocol"]["masks"] == "part:eyes (dlib 68 landmarks; faces not found, given the mean: 0)"
    assert report["protocol"]["references"] == "4 given (same person)"
    assert 0.01 < report["protocol"]["mean_hole_ratio"] < 0.2
    out = tmp_path / "study" / "part-eyes"
    guided, plain = (np.asarray(Image.open(out / name / "person0" / "0.png")) for name in list(report["methods"])[1:])
    assert not np.array_equal(guided, plain)
    assert (tmp_path / "study" / "comparison-part-eyes.png").is_file()


def test_a_face_that_is_not_found_takes_the_mean_landmarks_of_the_others(face):
    from faceinpaint.faces.part_masks import aligned_part_masks

    pixels = np.asarray(face[0].convert("RGB"))
    grey = np.full_like(pixels, 128)
    masks, missing = aligned_part_masks([pixels, grey], ["mouth"])
    assert missing == 1 and masks[0].any() and np.array_equal(masks[0], masks[1])


def test_part_masks_name_the_photo_without_a_face(tmp_path, capsys):
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(tmp_path / "grey.png")
    code = main(["evaluate", "--images", str(tmp_path), "--masks", "part:nose", "--weights", "telea",
                 "--out", str(tmp_path / "out")])  # fmt: skip
    error = capsys.readouterr().err.strip()
    assert code != 0 and "grey.png" in error and "no face found" in error and len(error.splitlines()) == 1
