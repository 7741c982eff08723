"""The image edge under odd input: EXIF orientation, 16-bit and float files, pixel limits, long paths, bad options."""

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faceinpaint.cli import main
from faceinpaint.errors import InpaintError, NotAnImageError, OverLimitError
from faceinpaint.images import decode_image, decode_mask, read_image, read_mask

ORIENTATION = 0x0112  # the EXIF tag


def sideways(upright: np.ndarray) -> np.ndarray:
    """What a phone stores for an upright picture when it writes Orientation=6 (rotate 90 degrees clockwise)."""
    return np.rot90(upright, 1).copy()


def save_with_orientation(array: np.ndarray, path, orientation: int = 6) -> None:
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    Image.fromarray(array).save(path, exif=exif)


def declared_png(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height (8-bit grey) but holds no pixels: enough for the size check."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


@pytest.fixture
def upright() -> np.ndarray:
    """A 40x56 RGB picture (taller than wide) with a red top-left corner, as the user sees it."""
    picture = np.random.default_rng(3).integers(0, 256, (56, 40, 3), dtype=np.uint8)
    picture[:4, :4] = (255, 0, 0)
    return picture


def test_exif_orientation_is_applied_to_images_and_masks(tmp_path, upright):
    save_with_orientation(sideways(upright), tmp_path / "photo.png")
    image = read_image(tmp_path / "photo.png")
    assert image.size == (40, 56) and np.array_equal(np.asarray(image), upright)
    assert ORIENTATION not in image.getexif()  # applied, so not applied twice by whoever reads the output
    assert np.array_equal(np.asarray(decode_image((tmp_path / "photo.png").read_bytes(), "image")), upright)
    hole = np.zeros((56, 40), bool)
    hole[:10, 30:] = True  # top right, as displayed
    save_with_orientation(sideways(hole.astype(np.uint8) * 255), tmp_path / "mask.png")
    assert np.array_equal(read_mask(tmp_path / "mask.png"), hole)
    assert np.array_equal(decode_mask((tmp_path / "mask.png").read_bytes(), "mask"), hole)


def test_cli_inpaints_a_sideways_phone_photo_with_a_mask_drawn_upright(tmp_path, upright):
    save_with_orientation(sideways(upright), tmp_path / "photo.jpg")
    hole = np.zeros((56, 40), bool)
    hole[20:30, 10:30] = True
    Image.fromarray(hole.astype(np.uint8) * 255).save(tmp_path / "mask.png")
    out = tmp_path / "out.png"
    assert main(["inpaint", "--weights", "telea", "--image", str(tmp_path / "photo.jpg"),
                 "--mask", str(tmp_path / "mask.png"), "--out", str(out)]) == 0  # fmt: skip
    result = Image.open(out)
    assert result.size == (40, 56) and ORIENTATION not in result.getexif()
    # JPEG is lossy: compare with the decoded input, turned upright.
    decoded = np.asarray(read_image(tmp_path / "photo.jpg"))
    assert np.array_equal(np.asarray(result)[~hole], decoded[~hole])
    assert np.array_equal(decoded, np.rot90(np.asarray(Image.open(tmp_path / "photo.jpg")), -1))


def _sixteen_bit_png(grey: np.ndarray) -> bytes:
    stream = io.BytesIO()
    Image.fromarray(grey.astype(np.uint16) * 257).save(stream, format="PNG")  # mode I;16
    return stream.getvalue()


def _float_tiff(grey: np.ndarray) -> bytes:
    stream = io.BytesIO()
    Image.fromarray((grey / 255.0).astype(np.float32), "F").save(stream, format="TIFF")
    return stream.getvalue()


@pytest.mark.parametrize("encode", [_sixteen_bit_png, _float_tiff], ids=["I;16 PNG", "float TIFF"])
def test_deep_images_decode_alike_from_files_and_uploads(tmp_path, encode):
    grey = np.random.default_rng(4).integers(0, 256, (24, 32)).astype(np.uint8)
    data = encode(grey)
    (tmp_path / "deep").write_bytes(data)
    with pytest.warns(UserWarning, match="reduced to 8 bits"):
        from_file = read_image(tmp_path / "deep")
    with pytest.warns(UserWarning, match="reduced to 8 bits"):
        from_upload = decode_image(data, "image")
    assert from_file.mode == from_upload.mode == "L"
    assert np.array_equal(np.asarray(from_file), grey) and np.array_equal(np.asarray(from_upload), grey)


def test_float_image_with_nan_decodes_without_garbage():
    values = np.full((8, 8), 0.5, np.float32)
    values[0, 0] = np.nan
    stream = io.BytesIO()
    Image.fromarray(values, "F").save(stream, format="TIFF")
    with pytest.warns(UserWarning, match="reduced to 8 bits"):
        image = np.asarray(decode_image(stream.getvalue(), "image"))
    assert image[0, 0] == 0 and (image[1:] == 128).all()


def test_error_kinds_of_the_decoder():
    with pytest.raises(NotAnImageError, match="not an image"):
        decode_image(b"hello", "image")
    with pytest.raises(OverLimitError, match="over the limit of 100 pixels"):
        decode_image(declared_png(20, 20), "image", max_pixels=100)
    with pytest.raises(InpaintError, match="truncated or corrupt"):
        decode_image(declared_png(20, 20), "image")  # no pixel data


@pytest.mark.parametrize("side", [300, 20_000, 70_000])
def test_cli_reports_the_pixel_limit_for_every_size(tmp_path, capsys, side):
    """Pillow's own decompression-bomb limit (about 179 M pixels) must read as our pixel limit too."""
    (tmp_path / "big.png").write_bytes(declared_png(side, side))
    Image.new("L", (8, 8), 255).save(tmp_path / "mask.png")
    arguments = [
        "--image",
        str(tmp_path / "big.png"),
        "--mask",
        str(tmp_path / "mask.png"),
        "--out",
        str(tmp_path / "o.png"),
    ]
    assert main(["inpaint", "--weights", "telea", *arguments, "--max-pixels", "1000"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("faceinpaint: error: image"), err
    assert f"{side * side} pixels is over the limit of" in err[0]
    assert "truncated" not in err[0] and "corrupt" not in err[0] and "bomb" not in err[0]


@pytest.mark.parametrize("which", ["image", "mask", "out folder", "out file"])
def test_cli_long_path_component_is_a_clear_error(tmp_path, capsys, which):
    Image.new("RGB", (16, 16)).save(tmp_path / "face.png")
    Image.new("L", (16, 16), 255).save(tmp_path / "mask.png")
    long = "a" * 300
    paths = {"image": tmp_path / "face.png", "mask": tmp_path / "mask.png", "out": tmp_path / "o.png"}
    if which == "out folder":
        paths["out"] = tmp_path / long / "o.png"
    else:
        paths[which.split()[0]] = tmp_path / f"{long}.png"
    code = main(["inpaint", "--weights", "telea", "--image", str(paths["image"]), "--mask", str(paths["mask"]),
                 "--out", str(paths["out"])])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1, err
    assert err[0].startswith("faceinpaint: error:") and "internal error" not in err[0]
    longest = max(len(part) for part in Path(paths["out" if which.startswith("out") else which]).parts)
    assert "too long" in err[0] and f"{longest} bytes" in err[0] and longest >= 300


@pytest.mark.parametrize("command", [["inpaint", "--image", "i.png", "--mask", "m.png", "--out", "o.png"],
                                     ["mask", "i.png", "--parts", "eyes", "--out", "o.png"],
                                     ["serve", "--weights", "telea"]])  # fmt: skip
@pytest.mark.parametrize("value", ["0", "-5"])
def test_max_pixels_must_be_positive(capsys, monkeypatch, command, value):
    import faceinpaint.server

    def accepted(*args, **kwargs):
        raise AssertionError(f"--max-pixels {value} was accepted")

    monkeypatch.setattr(faceinpaint.server, "serve", accepted)
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--max-pixels", value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --max-pixels: must be at least 1" in err
