"""Inpainter: the one path from a weights name or model dir to completed images.

The tensor convention, used everywhere in faceinpaint:
    image      float (B, 3, H, W), RGB, in [-1, 1]
    mask       float (B, 1, H, W), 1 = hole (to be filled), 0 = known
    reference  like image: another photo of the same person, for reference-guided models
uint8 arrays, PIL images and files appear only at the edges: here, in images.py, the CLI and the server.
Mask files and uint8 masks: a value above 127 is a hole; float masks: above 0.5.

A model dir holds `config.json` ({"arch", "args", "resolution", ...}), `model.safetensors` (the generator's
weights) and `README.md` (the model card). `from_pretrained` is its only reader; `save_pretrained` its writer.
"""

import json
import math
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from faceinpaint import __version__
from faceinpaint.backends.classical import CLASSICAL_METHODS, REFERENCE_METHODS
from faceinpaint.errors import InpaintError
from faceinpaint.images import mask_to_bool, restore_mode, tensor_to_uint8, uint8_to_tensor
from faceinpaint.models import ARCHITECTURES
from faceinpaint.weights import resolve


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InpaintError(f"device {device!r}: CUDA is not available on this machine; use --device cpu")
    if device != "cpu" and not device.startswith("cuda"):
        raise InpaintError(f"unknown device {device!r}; use cpu, cuda or auto")
    return torch.device(device)


def _mask_tensor(mask, size: tuple[int, int], batch: int) -> torch.Tensor:
    """Any accepted mask form -> bool (B, 1, H, W), True = hole, checked against the image size (H, W)."""
    if isinstance(mask, Image.Image):
        mask = mask_to_bool(mask)
    if isinstance(mask, (list, tuple)):
        return torch.cat([_mask_tensor(m, size, 1) for m in mask])
    if isinstance(mask, np.ndarray):
        hole = mask > 127 if mask.dtype == np.uint8 else (mask > 0.5)
        hole = torch.from_numpy(np.ascontiguousarray(hole))
        if hole.ndim == 3 and hole.shape[-1] == 1:  # (H, W, 1)
            hole = hole[..., 0]
    elif isinstance(mask, torch.Tensor):
        hole = mask > 0.5
    else:
        raise InpaintError(f"mask: expected a PIL image, numpy array or tensor, got {type(mask).__name__}")
    while hole.ndim < 4:  # (H, W) or (B, H, W) -> (B, 1, H, W)
        hole = hole.unsqueeze(0 if hole.ndim < 3 else 1)
    if hole.ndim != 4 or hole.shape[1] != 1:
        raise InpaintError(f"mask: expected shape (H, W), (B, H, W) or (B, 1, H, W), got {tuple(mask.shape)}")
    if tuple(hole.shape[-2:]) != size:
        raise InpaintError(
            f"mask is {hole.shape[-1]}x{hole.shape[-2]} but the image is {size[1]}x{size[0]}; they must match"
        )
    if hole.shape[0] == 1 and batch > 1:
        hole = hole.expand(batch, -1, -1, -1)
    if hole.shape[0] != batch:
        raise InpaintError(f"mask batch of {hole.shape[0]} does not match the image batch of {batch}")
    return hole.cpu()


def _image_tensor(image) -> torch.Tensor:
    """Any accepted image form -> float (B, 3, H, W) in [-1, 1] on the CPU."""
    if isinstance(image, Image.Image):
        return uint8_to_tensor(np.asarray(image if image.mode == "RGB" else image.convert("RGB"))[None])
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.shape[-1] != 3 or image.ndim not in (3, 4):
            raise InpaintError(
                f"image: numpy input must be uint8 (H, W, 3) or (B, H, W, 3), got {image.dtype} {image.shape}"
            )
        return uint8_to_tensor(image if image.ndim == 4 else image[None])
    if isinstance(image, torch.Tensor):
        if not image.is_floating_point() or image.ndim not in (3, 4) or image.shape[-3] != 3:
            raise InpaintError(
                f"image: tensor input must be float (3, H, W) or (B, 3, H, W) in [-1, 1], got "
                f"{image.dtype} {tuple(image.shape)}"
            )
        return (image if image.ndim == 4 else image[None]).detach().float().cpu()
    raise InpaintError(f"image: expected a PIL image, numpy array or tensor, got {type(image).__name__}")


# How much of a photo the network sees at once: a square window, resized to the model's resolution (see
# `_window_side`). Windows at most WINDOW_SIDES resolutions wide may extend past a photo's short side (padded), so a
# photo up to that size goes in whole, padded to a square, and memory never grows with the square of the long side.
WINDOW_SIDES = 4


def _window_side(height: int, width: int, resolution: int) -> int:
    """The network's window side for an image: the image's long side if the image is square or that side is at
    most WINDOW_SIDES resolutions (the whole image, padded to a square), else its short side or that many
    resolutions, whichever is longer (windows are then tiled along the long side where the hole needs it)."""
    return min(max(height, width), max(min(height, width), WINDOW_SIDES * resolution))


def _window_offsets(length: int, side: int, start: int, stop: int) -> list[int]:
    """Where windows of `side` pixels start along an axis of `length` so that they cover the hole's [start, stop).

    One window if the axis fits in one (at 0; the image is padded past its end) or the hole does (centred on the
    hole, inside the image); else windows spaced evenly over the hole and a quarter side of context either side,
    each overlapping the next by at least half a side.
    """
    if length <= side:
        return [0]
    if stop - start <= side:
        return [min(max((start + stop - side) // 2, 0), length - side)]
    first, last = max(start - side // 4, 0), min(stop + side // 4, length) - side
    count = math.ceil((last - first) / (side // 2)) + 1
    return [first + round(i * (last - first) / (count - 1)) for i in range(count)]


def _uint8_by_rows(images: torch.Tensor, pixels_per_part: int = 2**22) -> np.ndarray:
    """tensor_to_uint8 a band of rows at a time, so that its float temporaries stay small for large photos."""
    batch, _, height, width = images.shape
    result = np.empty((batch, height, width, 3), np.uint8)
    rows = max(1, pixels_per_part // (batch * width))
    for top in range(0, height, rows):
        result[:, top : top + rows] = tensor_to_uint8(images[:, :, top : top + rows])
    return result


class Inpainter:
    """Completes the holes of face images with a trained model or a classical method.

    Build it with `Inpainter.from_pretrained(name_or_dir)`; call it with images and masks in any of the forms
    below. Networks run at their training resolution (the image, or windows of a long thin one, padded to a
    square and resized); the result is resized back and composited at full resolution, so pixels outside the
    mask are returned unchanged, byte for byte for uint8 / PIL input.
    """

    def __init__(
        self, name: str, config: dict, model: nn.Module | None = None, device: str = "auto", backend: str = "torch"
    ):
        """Wrap a generator (or, with `model=None`, the classical method `config["method"]`); see from_pretrained."""
        self.name = name
        self.config = config
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval() if model is not None else None
        self.resolution = config.get("resolution")
        self.uses_reference = bool(config.get("reference", False))
        # A classical reference method (reference-paste) has nothing to fall back on without a reference.
        self.needs_reference = self.uses_reference and model is None
        # Faces per network call. On a CPU one: larger 256 px batches are slower per face there, as their
        # activations leave the cache (measured: docs/benchmarks.md, "CPU inference").
        self.batch_size = 1 if self.device.type == "cpu" else 8
        # backend "onnx": the network runs as the exported uint8 graph in onnxruntime (backends/export.py), same
        # results within 2/255; it is exported in memory when the Inpainter is built.
        if backend not in ("torch", "onnx"):
            raise InpaintError(f"unknown backend {backend!r}; use torch or onnx")
        self.backend = backend
        self._onnx = None
        if backend == "onnx":
            from faceinpaint.backends.export import OnnxRunner

            self._onnx = OnnxRunner(self)
        # Whole photos (see faces/photo.py): the default `align` of __call__, and the face models it uses.
        self.align = "auto"
        self.face_detector = "hog"  # or "yunet"
        self.landmarks = 68  # or 5: avoids the 68-point model (non-commercial licence)

    @classmethod
    def from_pretrained(cls, name_or_dir: str | Path, device: str = "auto", backend: str = "torch") -> "Inpainter":
        """Load a model dir, an installed model by name, or a classical method (telea, navier-stokes, biharmonic,
        reference-paste).

        Args:
            name_or_dir: a name listed by `faceinpaint models`, or the path of a model dir.
            device: "cpu", "cuda" or "auto" (CUDA when available).
            backend: "torch", or "onnx" to run the network through onnxruntime (needs faceinpaint[export]).
        Returns:
            An Inpainter in inference mode. A weights file whose keys or shapes differ from the architecture
            in config.json is an error (strict loading).
        """
        found = resolve(name_or_dir)
        if isinstance(found, str):
            config = {"arch": "classical", "method": found, "reference": found in REFERENCE_METHODS}
            return cls(found, config, None, device, backend)
        try:
            config = json.loads((found / "config.json").read_text())
            architecture = ARCHITECTURES[config["arch"]]
            model = architecture(**config.get("args", {}))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            raise InpaintError(f"weights {found}: config.json is invalid ({type(error).__name__}: {error})") from None
        try:
            state = load_file(found / "model.safetensors")
        except (SafetensorError, OSError) as error:
            raise InpaintError(f"weights {found}: cannot read model.safetensors ({error})") from None
        expected = model.state_dict()
        missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        if missing or unexpected:
            raise InpaintError(
                f"weights {found}: do not match {config['arch']}: {len(missing)} missing keys {missing[:3]}, "
                f"{len(unexpected)} unexpected keys {unexpected[:3]}"
            )
        wrong = [key for key in expected if expected[key].shape != state[key].shape]
        if wrong:
            raise InpaintError(f"weights {found}: wrong shapes for {wrong[:3]} (does config.json's args match?)")
        model.load_state_dict(state, strict=True)
        return cls(found.name, config, model.float(), device, backend)

    @classmethod
    def from_config(
        cls, arch: str, args: dict, resolution: int, device: str = "auto", backend: str = "torch", **extra
    ) -> "Inpainter":
        """A freshly initialised network (random weights): for training, tests and speed benchmarks."""
        if arch not in ARCHITECTURES:
            raise InpaintError(f"unknown architecture {arch!r}; valid: {', '.join(ARCHITECTURES)}")
        if resolution % 8:
            raise InpaintError(f"resolution must be a multiple of 8, got {resolution}")
        config = {"arch": arch, "args": args, "resolution": resolution, **extra}
        return cls(arch, config, ARCHITECTURES[arch](**args), device, backend)

    def save_pretrained(
        self, out_dir: str | Path, card: str | None = None, dtype: torch.dtype = torch.float16
    ) -> Path:
        """Write a model dir (config.json, model.safetensors, README.md) atomically; refuse to replace one."""
        if self.model is None:
            raise InpaintError(f"{self.name} is a classical method: there are no weights to save")
        out_dir = Path(out_dir)
        if out_dir.exists():
            raise InpaintError(f"{out_dir} already exists; choose a new folder (model dirs are never overwritten)")
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        config = {**self.config, "mask": "1=hole", "range": [-1, 1], "faceinpaint": __version__}
        staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
        try:
            state = {
                key: value.detach().to("cpu", dtype).contiguous() for key, value in self.model.state_dict().items()
            }
            save_file(state, staging / "model.safetensors", metadata={"arch": config["arch"]})
            (staging / "config.json").write_text(json.dumps(config, indent=2) + "\n")
            (staging / "README.md").write_text(card or f"# {out_dir.name}\n\nArchitecture `{config['arch']}`.\n")
            staging.rename(out_dir)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return out_dir

    @torch.inference_mode()
    def __call__(self, image, mask, reference=None, align: str | None = None):
        """Inpaint the holes of `image` given by `mask`.

        Args:
            image: a PIL image (any mode; RGBA / L / LA come back in their mode), a list of them, a uint8 numpy
                array (H, W, 3) or (B, H, W, 3), or a float tensor (3, H, W) or (B, 3, H, W) in [-1, 1].
            mask: the same size as the image: a PIL image (alpha for RGBA / LA, else grey > 127 = hole), a
                numpy array (bool, uint8 > 127 or float > 0.5 = hole) or tensor (> 0.5 = hole), shaped (H, W),
                (B, H, W) or (B, 1, H, W); a single mask applies to every image of a batch.
            reference: for reference-guided models, a photo of the same person (any image form); others ignore it.
            align: "auto", "always" or "never"; None takes `self.align` (default "auto"). "never": the image goes
                to the model as it is. "always": every face whose box meets the mask is aligned the FFHQ way,
                inpainted at the model's resolution and pasted back; where no face meets the mask a square crop
                around it is inpainted, with a warning. "auto": like "never" for classical methods and for aligned
                crops (square images of the model's resolution, or square ones whose face fills the frame as an
                FFHQ crop does), else like "always". Aligning needs faceinpaint[faces]; without it "auto" warns and
                works like "never", "always" is an error.
        Returns:
            The completed image(s) in the form of `image`; outside the mask identical to the input.
        """
        if isinstance(image, (list, tuple)):
            masks = mask if isinstance(mask, (list, tuple)) else [mask] * len(image)
            references = reference if isinstance(reference, (list, tuple)) else [reference] * len(image)
            return [self(one, m, r, align) for one, m, r in zip(image, masks, references, strict=True)]
        pixels = _image_tensor(image)
        hole = _mask_tensor(mask, tuple(pixels.shape[-2:]), pixels.shape[0])
        if not hole.any():
            warnings.warn("the mask is empty: nothing to inpaint, the input is returned unchanged", stacklevel=2)
            return image.copy() if hasattr(image, "copy") else image.clone()
        if hole.flatten(1).all(dim=1).any():
            raise InpaintError("the mask covers the whole image: no known pixel is left to inpaint from")
        if reference is not None and not self.uses_reference:
            warnings.warn(f"{self.name} does not use a reference image; it is ignored", stacklevel=2)
            reference = None
        reference = None if reference is None else _image_tensor(reference)
        align = self.align if align is None else align
        if align == "never":
            completed = self.complete(pixels, hole, reference)
        else:
            from faceinpaint.faces.photo import complete_photos

            completed = complete_photos(self, pixels, hole, reference, align)

        if isinstance(image, torch.Tensor):
            result = torch.where(hole, completed, pixels).to(image.dtype)
            return result if image.ndim == 4 else result[0]
        del pixels  # uint8 / PIL results take their known pixels from `image`: free the float copy first
        completed = _uint8_by_rows(completed)
        if isinstance(image, Image.Image):
            return restore_mode(completed[0], image, hole[0, 0].numpy())
        original = image if image.ndim == 4 else image[None]
        result = np.where(hole.permute(0, 2, 3, 1).numpy(), completed, original)
        return result if image.ndim == 4 else result[0]

    def complete(self, image: torch.Tensor, hole: torch.Tensor, reference: torch.Tensor | None = None) -> torch.Tensor:
        """The method's output (B, 3, H, W) in [-1, 1] before compositing: a network's covers the windows it saw
        (the whole image unless it is long and thin, see `_window_side`), the input elsewhere; hole is bool."""
        if self.model is None:
            method = CLASSICAL_METHODS[self.config["method"]]
            images, holes = tensor_to_uint8(image), hole[:, 0].numpy()
            if not self.uses_reference:
                return uint8_to_tensor(np.stack([method(one, h) for one, h in zip(images, holes, strict=True)]))
            references = [None] * len(images) if reference is None else list(tensor_to_uint8(reference))
            references = references * len(images) if len(references) == 1 else references
            outputs = [method(*args, self.landmarks) for args in zip(images, holes, references, strict=True)]
            return uint8_to_tensor(np.stack(outputs))
        parts = [
            self._run_network(
                image[i : i + self.batch_size],
                hole[i : i + self.batch_size],
                reference if reference is None or len(reference) == 1 else reference[i : i + self.batch_size],
            )
            for i in range(0, image.shape[0], self.batch_size)
        ]
        return parts[0] if len(parts) == 1 else torch.cat(parts)  # one part: no copy of a large photo

    def _run_network(self, image: torch.Tensor, hole: torch.Tensor, reference: torch.Tensor | None) -> torch.Tensor:
        """Fill the batch's holes from square windows of the image; see `_window_side` for their size.

        Returns the image with each window's output pasted over it, crossfaded where windows overlap.
        """
        size = (self.resolution, self.resolution)
        height, width = image.shape[-2:]
        side = _window_side(height, width, self.resolution)
        if reference is not None:
            reference = F.interpolate(reference.to(self.device), size=size, mode="bilinear", antialias=True)
        covered = hole.any(dim=0)[0]  # (H, W): a hole in any image of the batch
        if not covered.any():
            return image.clone()
        rows, columns = covered.any(dim=1).nonzero()[:, 0], covered.any(dim=0).nonzero()[:, 0]
        tops = _window_offsets(height, side, int(rows[0]), int(rows[-1]) + 1)
        lefts = _window_offsets(width, side, int(columns[0]), int(columns[-1]) + 1)
        if len(tops) == len(lefts) == 1 and side >= max(height, width):  # one window: the whole image
            return self._run_window(image, hole, reference, side)
        # More than one window only ever along the long side: the short one fits in a window.
        axis, offsets, across, cross = (2, tops, 3, lefts[0]) if len(tops) > 1 else (3, lefts, 2, tops[0])
        result = image.clone()
        band = result.narrow(across, cross, min(side, image.shape[across]))  # what the windows cover
        end = 0  # where the previous window ends along the axis
        for offset in offsets:
            top, left = (offset, cross) if axis == 2 else (cross, offset)
            window = (..., slice(top, top + side), slice(left, left + side))
            out = self._run_window(image[window], hole[window], reference, side)
            length, overlap = out.shape[axis], max(end - offset, 0)
            if overlap:  # fade from the previous window's output to this one's across their overlap
                ramp = torch.linspace(0.0, 1.0, overlap + 2)[1:-1].view([-1, 1] if axis == 2 else [-1])
                band.narrow(axis, offset, overlap).lerp_(out.narrow(axis, 0, overlap), ramp)
            band.narrow(axis, offset + overlap, length - overlap).copy_(out.narrow(axis, overlap, length - overlap))
            end = offset + length
        return result

    def _run_window(
        self, image: torch.Tensor, hole: torch.Tensor, reference: torch.Tensor | None, side: int
    ) -> torch.Tensor:
        """Pad a window (B, 3, h, w) to side x side, resize to the network's resolution, run, resize back."""
        height, width = image.shape[-2:]
        size, padding = (self.resolution, self.resolution), (0, side - width, 0, side - height)
        x, m = image.to(self.device), hole.to(self.device).float()
        if side > min(height, width):  # past the image's edge: replicate its border pixels
            x, m = F.pad(x, padding, mode="replicate"), F.pad(m, padding)
        if side != self.resolution:
            x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
            m = (F.interpolate(m, size=size, mode="area") > 0).float()  # any covered pixel stays a hole
        inputs = [x * (1.0 - m), m] + ([] if reference is None else [reference])
        if reference is not None and getattr(self.model, "prior_inputs", None) is not None:  # Two-Face v2
            from faceinpaint.faces.reference_prior import image_prior

            inputs += [None, image_prior(inputs[0], m, reference, self.landmarks)]  # has_reference, prior
        out = (self._onnx or self.model)(*inputs)[-1].float()
        if side != self.resolution:
            out = F.interpolate(out, size=(side, side), mode="bicubic", align_corners=False).clamp_(-1.0, 1.0)
        return out[:, :, :height, :width].cpu()
