"""The Inpainter: input forms, exact compositing, bounded windows, the model dir round trip, strict loading."""

import json
import re
import resource
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file

from faceinpaint import Inpainter, InpaintError
from faceinpaint.backends.classical import CLASSICAL_METHODS, REFERENCE_METHODS


@pytest.mark.parametrize("name", sorted(set(CLASSICAL_METHODS) - REFERENCE_METHODS))  # those: test_reference_paste
def test_classical_methods_fill_the_hole_and_keep_the_rest(name, face, square_hole):
    image, _ = face
    result = Inpainter.from_pretrained(name)(image, square_hole)
    before, after = np.asarray(image), np.asarray(result)
    assert result.size == image.size and result.mode == "RGB"
    assert np.array_equal(after[~square_hole], before[~square_hole])
    assert not np.array_equal(after[square_hole], before[square_hole])


def test_network_output_is_byte_identical_outside_the_mask_at_any_size(tiny_inpainter):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (2, 50, 70, 3), dtype=np.uint8)  # not square, not the model's 32x32
    hole = np.zeros((2, 50, 70), bool)
    hole[:, 10:30, 20:50] = True
    result = tiny_inpainter(image, hole, align="never")  # the plain pad-and-resize path; faces: test_faces.py
    assert result.shape == image.shape and result.dtype == np.uint8
    assert np.array_equal(result[~hole], image[~hole])
    assert not np.array_equal(result[hole], image[hole])


def test_tensor_input_comes_back_as_a_tensor_with_known_pixels_exact(tiny_inpainter):
    image = torch.rand(3, 32, 32) * 2 - 1
    mask = torch.zeros(1, 32, 32)
    mask[:, 8:16, 8:24] = 1.0
    result = tiny_inpainter(image, mask)
    assert result.shape == image.shape and result.dtype == image.dtype
    assert torch.equal(result[:, mask[0] == 0], image[:, mask[0] == 0])
    assert result.min() >= -1.0 and result.max() <= 1.0


@pytest.mark.parametrize("mode", ["L", "RGBA", "LA"])
def test_pil_modes_come_back_in_their_mode(tiny_inpainter, face, square_hole, mode):
    image = face[0].convert(mode)
    result = tiny_inpainter(image, square_hole)
    assert result.mode == mode
    before, after = np.asarray(image), np.asarray(result)
    assert np.array_equal(after[~square_hole], before[~square_hole])
    if mode in ("RGBA", "LA"):
        assert np.array_equal(after[..., -1], before[..., -1])


def test_a_list_of_images_gives_a_list(tiny_inpainter, face, square_hole):
    results = tiny_inpainter([face[0], face[0]], square_hole)
    assert isinstance(results, list) and len(results) == 2
    assert np.array_equal(np.asarray(results[0]), np.asarray(results[1]))


def test_same_seed_same_output():
    image = torch.rand(1, 3, 32, 32) * 2 - 1
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 4:12, 4:28] = 1
    outputs = []
    for _ in range(2):
        torch.manual_seed(7)
        outputs.append(Inpainter.from_config("deepfillv2", {"width": 8}, 32, device="cpu")(image, mask))
    assert torch.equal(*outputs)


def test_save_then_from_pretrained_gives_identical_outputs(tiny_inpainter, tmp_path, face, square_hole):
    model_dir = tiny_inpainter.save_pretrained(tmp_path / "tiny-face-32", dtype=torch.float32)
    assert sorted(p.name for p in model_dir.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((model_dir / "config.json").read_text())
    assert config["arch"] == "deepfillv2" and config["mask"] == "1=hole" and config["resolution"] == 32
    loaded = Inpainter.from_pretrained(model_dir, device="cpu")
    expected = np.asarray(tiny_inpainter(face[0], square_hole))
    assert np.array_equal(np.asarray(loaded(face[0], square_hole)), expected)


def test_fp16_weights_load_into_a_float32_model(tiny_inpainter, tmp_path):
    model_dir = tiny_inpainter.save_pretrained(tmp_path / "half")
    assert all(t.dtype == torch.float16 for t in load_file(model_dir / "model.safetensors").values())
    loaded = Inpainter.from_pretrained(model_dir, device="cpu")
    assert all(p.dtype == torch.float32 for p in loaded.model.parameters())


def test_save_pretrained_never_overwrites(tiny_inpainter, tmp_path):
    (tmp_path / "taken").mkdir()
    with pytest.raises(InpaintError, match="already exists"):
        tiny_inpainter.save_pretrained(tmp_path / "taken")


def test_strict_loading_rejects_a_missing_key(tiny_inpainter, tmp_path):
    model_dir = tiny_inpainter.save_pretrained(tmp_path / "broken")
    state = load_file(model_dir / "model.safetensors")
    state.pop(next(iter(state)))
    save_file(state, model_dir / "model.safetensors")
    with pytest.raises(InpaintError, match="1 missing keys"):
        Inpainter.from_pretrained(model_dir)


def test_strict_loading_rejects_an_extra_key_and_wrong_shapes(tiny_inpainter, tmp_path):
    model_dir = tiny_inpainter.save_pretrained(tmp_path / "extra")
    state = load_file(model_dir / "model.safetensors")
    save_file({**state, "surplus.weight": torch.zeros(1)}, model_dir / "model.safetensors")
    with pytest.raises(InpaintError, match="1 unexpected keys"):
        Inpainter.from_pretrained(model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps({**config, "args": {"width": 12}}))
    save_file(state, model_dir / "model.safetensors")
    with pytest.raises(InpaintError, match="wrong shapes"):
        Inpainter.from_pretrained(model_dir)


def test_unknown_model_name_lists_the_valid_ones():
    with pytest.raises(InpaintError, match="valid names: telea, navier-stokes, biharmonic"):
        Inpainter.from_pretrained("no-such-model")


def test_model_names_resolve_in_faceinpaint_weights(tiny_inpainter, tmp_path, monkeypatch):
    tiny_inpainter.save_pretrained(tmp_path / "my-model")
    monkeypatch.setenv("FACEINPAINT_WEIGHTS", str(tmp_path))
    assert Inpainter.from_pretrained("my-model").name == "my-model"


def test_empty_mask_returns_the_input_with_a_warning(tiny_inpainter, face):
    with pytest.warns(UserWarning, match="mask is empty"):
        result = tiny_inpainter(face[0], np.zeros((256, 256), bool))
    assert np.array_equal(np.asarray(result), np.asarray(face[0]))


def test_full_mask_is_an_error(tiny_inpainter, face):
    with pytest.raises(InpaintError, match="covers the whole image"):
        tiny_inpainter(face[0], np.ones((256, 256), bool))


def test_mask_of_another_size_is_an_error(tiny_inpainter, face):
    with pytest.raises(InpaintError, match="mask is 100x80 but the image is 256x256"):
        tiny_inpainter(face[0], np.ones((80, 100), bool))


def test_reference_is_ignored_with_a_warning_by_models_without_one(tiny_inpainter, face, square_hole):
    with pytest.warns(UserWarning, match="does not use a reference"):
        tiny_inpainter(face[0], square_hole, reference=face[0])


def test_wrong_input_types_are_clear_errors(tiny_inpainter):
    with pytest.raises(InpaintError, match="numpy input must be uint8"):
        tiny_inpainter(np.zeros((8, 8, 3), np.float32), np.zeros((8, 8), bool))
    with pytest.raises(InpaintError, match="expected a PIL image"):
        tiny_inpainter("face.png", np.zeros((8, 8), bool))


def test_pil_masks_in_every_mode(tiny_inpainter, face, square_hole):
    expected = np.asarray(tiny_inpainter(face[0], square_hole))
    grey = Image.fromarray(square_hole.astype(np.uint8) * 255)
    alpha = Image.new("RGBA", grey.size)
    alpha.putalpha(grey)
    for mask in (grey, grey.convert("1"), grey.convert("RGB"), alpha):
        assert np.array_equal(np.asarray(tiny_inpainter(face[0], mask)), expected)


def test_cuda_request_without_cuda_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(InpaintError, match="CUDA is not available"):
        Inpainter.from_pretrained("telea", device="cuda")


class WhiteNetwork(torch.nn.Module):
    """Stands in for a generator: records the shapes it is given and paints everything white (+1)."""

    def __init__(self):
        super().__init__()
        self.shapes = []

    def forward(self, image, mask):
        self.shapes.append((tuple(image.shape), tuple(mask.shape)))
        return (torch.ones_like(image),)


def _old_pad_to_square(inpainter, image, hole):
    """The Inpainter's network path before windows: the whole image padded to a square and resized."""
    height, width = image.shape[-2:]
    side, size = max(height, width), (inpainter.resolution,) * 2
    x = F.pad(image, (0, side - width, 0, side - height), mode="replicate")
    m = F.pad(hole.float(), (0, side - width, 0, side - height))
    if side != inpainter.resolution:
        x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
        m = (F.interpolate(m, size=size, mode="area") > 0).float()
    out = inpainter.model(x * (1.0 - m), m)[-1]
    if side != inpainter.resolution:
        out = F.interpolate(out, size=(side, side), mode="bicubic", align_corners=False).clamp(-1.0, 1.0)
    return out[:, :, :height, :width]


@pytest.mark.parametrize("size", [(32, 32), (256, 256), (50, 70), (128, 40), (600, 600)])
def test_photos_up_to_four_resolutions_or_square_go_in_whole_as_before(tiny_inpainter, size, monkeypatch):
    monkeypatch.setattr(tiny_inpainter, "batch_size", 2)  # one network call, as the old path made: equal bits
    image = torch.rand(2, 3, *size) * 2 - 1
    hole = torch.zeros(2, 1, *size, dtype=torch.bool)
    hole[0, :, size[0] // 4 : size[0] // 2, size[1] // 3 : size[1] // 2] = True
    hole[1, :, -5:, -7:] = True
    with torch.inference_mode():
        assert torch.equal(tiny_inpainter.complete(image, hole), _old_pad_to_square(tiny_inpainter, image, hole))


@pytest.mark.parametrize("size", [(3, 5000), (5000, 3), (40, 3000)])
def test_a_long_hole_in_a_long_thin_photo_is_filled_by_windows_of_bounded_size(size):
    network = WhiteNetwork()
    inpainter = Inpainter("white", {"arch": "white", "resolution": 32}, network, device="cpu")
    image = np.zeros((*size, 3), np.uint8)
    hole = np.zeros(size, bool)
    if size[0] < size[1]:
        hole[size[0] // 2, 1000:4000] = True
    else:
        hole[1000:4000, size[1] // 2] = True
    result = inpainter(image, hole, align="never")
    assert (result[hole] == 255).all() and (result[~hole] == 0).all()  # every hole pixel got the network's output
    assert len(network.shapes) > 1 and set(network.shapes) == {((1, 3, 32, 32), (1, 1, 32, 32))}


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_DATA bounds mmap'ed memory on Linux only")
def test_memory_is_bounded_by_the_model_not_the_square_of_the_long_side(tiny_inpainter):
    """A 3x20000 photo with a 1x4000 hole: padding it to a square took 4.8 GB per copy; now the network sees
    bounded windows. The data segment may grow by 256 MiB at most while it is inpainted."""
    image = np.full((3, 20000, 3), 128, np.uint8)
    hole = np.zeros((3, 20000), bool)
    hole[1, 8000:12000] = True
    data = int(re.search(r"VmData:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1)) * 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    resource.setrlimit(resource.RLIMIT_DATA, (data + 256 * 2**20, hard))
    try:
        result = tiny_inpainter(image, hole, align="never")
    finally:
        resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))
    assert result.shape == image.shape and np.array_equal(result[~hole], image[~hole])
