"""The `faceinpaint` command: help texts, single files, folders, and every bad input as a one-line error."""

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faceinpaint.cli import build_parser, main


def _commands(parser) -> list[list[str]]:
    """Every command path of the parser, e.g. ["inpaint"], ["data", "masks"]."""
    paths = []
    for action in parser._subparsers._group_actions if parser._subparsers else []:
        for name, sub in action.choices.items():
            paths.append([name])
            paths += [[name, *rest] for rest in _commands(sub)]
    return paths


@pytest.mark.parametrize("command", _commands(build_parser()), ids=" ".join)
def test_every_command_has_help_with_an_example(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    assert "example" in capsys.readouterr().out


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture
def files(tmp_path, face):
    """An input folder with the face (PNG), its mask, and an output folder path."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    face[0].save(inputs / "face.png")
    Image.fromarray(face[1].astype(np.uint8) * 255).save(inputs / "mask.png")
    return inputs, tmp_path / "out"


def _inpaint(inputs: Path, out: Path, *extra: str, image="face.png", mask="mask.png") -> int:
    return main(["inpaint", "--weights", "telea", "--image", str(inputs / image), "--mask", str(inputs / mask),
                 "--out", str(out), *extra])  # fmt: skip


def _one_line_error(capsys, *fragments: str) -> None:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("faceinpaint: error:")]
    assert len(errors) == 1, err
    assert "Traceback" not in "\n".join(err)
    for fragment in fragments:
        assert fragment in errors[0]


def test_inpaint_one_file(files):
    inputs, out = files
    assert _inpaint(inputs, out / "done.png") == 0
    before, after = np.asarray(Image.open(inputs / "face.png")), np.asarray(Image.open(out / "done.png"))
    hole = np.asarray(Image.open(inputs / "mask.png")) > 127
    assert np.array_equal(after[~hole], before[~hole]) and not np.array_equal(after[hole], before[hole])
    assert [p.name for p in out.iterdir()] == ["done.png"]  # no temporary file left behind


def test_inpaint_a_folder_reports_and_skips_failures(tmp_path, face, capsys):
    images, masks, out = tmp_path / "images", tmp_path / "masks", tmp_path / "out"
    images.mkdir(), masks.mkdir()
    for name in ("a", "b", "c"):
        face[0].save(images / f"{name}.jpg")
    (images / "c.jpg").write_bytes(b"not a jpeg")
    for name in ("a", "c"):
        Image.fromarray(face[1].astype(np.uint8) * 255).save(masks / f"{name}.png")
    assert main(["inpaint", "--weights", "telea", "--image", str(images), "--mask", str(masks),
                 "--out", str(out)]) == 1  # fmt: skip
    err = capsys.readouterr().err
    assert "skipped b.jpg: no mask named b.*" in err and "skipped c.jpg" in err and "Traceback" not in err
    assert [p.name for p in out.iterdir()] == ["a.jpg"]


def test_inputs_are_never_touched(files):
    inputs, _ = files
    before = _digest(inputs)
    assert _inpaint(inputs, inputs / "face.png") == 1  # refuses to overwrite its input
    assert _inpaint(inputs, inputs / "result.png") == 0
    (inputs / "result.png").unlink()
    assert _digest(inputs) == before


def test_missing_file(files, capsys):
    inputs, out = files
    assert _inpaint(inputs, out / "x.png", image="nope.png") == 1
    _one_line_error(capsys, "nope.png", "no such file")


def test_truncated_image(files, capsys):
    inputs, out = files
    data = (inputs / "face.png").read_bytes()
    (inputs / "cut.png").write_bytes(data[: len(data) // 2])
    assert _inpaint(inputs, out / "x.png", image="cut.png") == 1
    _one_line_error(capsys, "cut.png", "truncated or corrupt")


def test_text_file_named_png(files, capsys):
    inputs, out = files
    (inputs / "notes.png").write_text("hello, I am text\n")
    assert _inpaint(inputs, out / "x.png", image="notes.png") == 1
    _one_line_error(capsys, "notes.png", "not an image")


def test_mask_of_another_size(files, capsys):
    inputs, out = files
    Image.new("L", (100, 80), 255).save(inputs / "small.png")
    assert _inpaint(inputs, out / "x.png", mask="small.png") == 1
    _one_line_error(capsys, "100x80", "256x256")


def test_empty_mask_copies_the_input_with_a_warning(files, capsys):
    inputs, out = files
    Image.new("L", (256, 256), 0).save(inputs / "empty.png")
    assert _inpaint(inputs, out / "x.png", mask="empty.png") == 0
    assert "warning: the mask is empty" in capsys.readouterr().err
    assert np.array_equal(np.asarray(Image.open(out / "x.png")), np.asarray(Image.open(inputs / "face.png")))


def test_full_mask(files, capsys):
    inputs, out = files
    Image.new("L", (256, 256), 255).save(inputs / "full.png")
    assert _inpaint(inputs, out / "x.png", mask="full.png") == 1
    _one_line_error(capsys, "covers the whole image")


def test_sixteen_bit_png_is_read_as_eight_bits(files, capsys):
    inputs, out = files
    grey = np.asarray(Image.open(inputs / "face.png").convert("L")).astype(np.uint16) * 257
    Image.fromarray(grey).save(inputs / "deep.png")  # mode I;16
    assert _inpaint(inputs, out / "x.png", image="deep.png") == 0
    assert "reduced to 8 bits" in capsys.readouterr().err
    result = np.asarray(Image.open(out / "x.png"))
    hole = np.asarray(Image.open(inputs / "mask.png")) > 127
    assert result.dtype == np.uint8 and np.array_equal(result[~hole], (grey // 257).astype(np.uint8)[~hole])


def test_cmyk_jpeg_rgba_and_grayscale(files):
    inputs, out = files
    face = Image.open(inputs / "face.png")
    face.convert("CMYK").save(inputs / "cmyk.jpg")
    rgba = face.convert("RGBA")
    rgba.putalpha(128)
    rgba.save(inputs / "rgba.png")
    face.convert("L").save(inputs / "grey.png")
    hole = np.asarray(Image.open(inputs / "mask.png")) > 127
    for name, mode in (("cmyk.jpg", "RGB"), ("rgba.png", "RGBA"), ("grey.png", "L")):
        assert _inpaint(inputs, out / name.replace(".jpg", ".png"), image=name) == 0
        result = Image.open(out / name.replace(".jpg", ".png"))
        assert result.mode == mode
        if mode != "RGB":
            original = np.asarray(Image.open(inputs / name))
            assert np.array_equal(np.asarray(result)[~hole], original[~hole])


def test_image_over_the_pixel_limit(files, capsys):
    inputs, out = files
    assert _inpaint(inputs, out / "x.png", "--max-pixels", "1000") == 1
    _one_line_error(capsys, "65536 pixels is over the limit of 1000")


def test_unknown_model_lists_valid_names(files, capsys):
    inputs, out = files
    assert main(["inpaint", "--weights", "deepfill-typo", "--image", str(inputs / "face.png"),
                 "--mask", str(inputs / "mask.png"), "--out", str(out / "x.png")]) == 1  # fmt: skip
    _one_line_error(capsys, "deepfill-typo", "valid names: telea, navier-stokes, biharmonic")


def test_unwritable_output(files, capsys):
    inputs, _ = files
    blocker = inputs.parent / "a-file"
    blocker.write_text("not a folder")
    assert _inpaint(inputs, blocker / "x.png") == 1
    _one_line_error(capsys, "cannot write")


def test_unknown_output_extension(files, capsys):
    inputs, out = files
    assert _inpaint(inputs, out / "x.txt") == 1
    _one_line_error(capsys, "unknown image extension")


def test_models_lists_classical_methods(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("telea", "navier-stokes", "biharmonic"))


def test_a_reference_photo_without_weights_picks_the_default_reference_model(monkeypatch, capsys):
    import faceinpaint.weights as weights

    monkeypatch.setattr(weights, "installed_models", lambda: {"telea": None, "reference-paste": None})
    monkeypatch.setattr(weights, "faces_available", lambda: True)
    assert weights.best_model() == "telea" and weights.best_model(reference=True) == "reference-paste"
    assert main(["models"]) == 0
    assert "+ default model when a --reference photo is given" in capsys.readouterr().out
    monkeypatch.setattr(weights, "faces_available", lambda: False)  # reference-paste needs dlib: plain default
    assert weights.best_model(reference=True) == "telea"


def test_demo_writes_result_and_comparison(tmp_path, capsys):
    assert main(["demo", "--weights", "telea", "--out-dir", str(tmp_path)]) == 0
    assert "model: telea" in capsys.readouterr().out
    assert Image.open(tmp_path / "compare.png").size == (3 * 256 + 2 * 4, 256)
    assert Image.open(tmp_path / "out.png").size == (256, 256)


def _console_script() -> list[str]:
    script = Path(sys.executable).parent / "faceinpaint"
    return [str(script)] if script.exists() else [sys.executable, "-m", "faceinpaint.cli"]


@pytest.mark.slow
def test_console_script_prints_no_traceback(tmp_path):
    """The real entry point, in a subprocess: bad input exits non-zero with one line on stderr."""
    done = subprocess.run(
        [*_console_script(), "inpaint", "--image", str(tmp_path / "missing.png"),
         "--mask", str(tmp_path / "m.png"), "--out", str(tmp_path / "o.png"), "--weights", "telea"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"faceinpaint: error: image {tmp_path / 'missing.png'}: no such file or folder"
    ]
