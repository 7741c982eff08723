"""The edges of the tensor world: reading images and masks, converting to and from tensors, atomic writes.

Inside faceinpaint an image is float (B, 3, H, W) RGB in [-1, 1] and a mask is float (B, 1, H, W) with 1 = hole.
Only this module (and the Inpainter's argument handling) sees uint8, PIL or files.
"""

import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from faceinpaint.atomic import atomic_write
from faceinpaint.errors import InpaintError

DEFAULT_MAX_PIXELS = 40_000_000  # about 6300 x 6300; larger inputs are refused before they are decoded
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
# Modes an output can be written back in, pixel for pixel; everything else is converted to RGB on reading.
_KEPT_MODES = ("RGB", "RGBA", "L", "LA")


def _open(path: str | os.PathLike, max_pixels: int, what: str) -> Image.Image:
    """Open and decode one file, turning every way it can fail into one InpaintError sentence."""
    path = Path(path)
    if not path.is_file():
        raise InpaintError(f"{what} {path}: no such file")
    try:
        with Image.open(path) as opened:
            width, height = opened.size
            if width * height > max_pixels:
                raise InpaintError(
                    f"{what} {path}: {width}x{height} = {width * height} pixels is over the limit of {max_pixels} "
                    "(raise it with --max-pixels)"
                )
            opened.load()
            return opened.copy()
    except UnidentifiedImageError:
        raise InpaintError(f"{what} {path}: not an image file (or a format Pillow cannot read)") from None
    except Image.DecompressionBombError as error:
        raise InpaintError(f"{what} {path}: {error}") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise InpaintError(f"{what} {path}: cannot decode ({error}); the file may be truncated or corrupt") from None


def _to_eight_bits(image: Image.Image, name: str) -> Image.Image:
    """Reduce 16/32-bit single-channel modes to 8-bit L (Pillow's own convert clips them instead)."""
    if image.mode not in ("I", "I;16", "I;16B", "I;16L", "F"):
        return image
    warnings.warn(f"{name}: {image.mode} image reduced to 8 bits per channel", stacklevel=3)
    values = np.asarray(image, dtype=np.float64)
    scale = 255.0 if image.mode == "F" and values.max() <= 1.0 else 255.0 / 65535.0
    return Image.fromarray(np.clip(np.round(values * scale), 0, 255).astype(np.uint8), "L")


def read_image(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Read an image as RGB, RGBA, L or LA (the modes `restore_mode` can write back exactly).

    CMYK, palette, YCbCr and 1-bit images become RGB (or RGBA where a palette has transparency); 16-bit images
    are reduced to 8 bits with a warning.
    """
    image = _to_eight_bits(_open(path, max_pixels, "image"), str(path))
    if image.mode == "P" and "transparency" in image.info:
        return image.convert("RGBA")
    return image if image.mode in _KEPT_MODES else image.convert("RGB")


def read_mask(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read a mask file as a bool (H, W) array, True = hole.

    A pixel is a hole where its value is above 127: the alpha channel for RGBA / LA / transparent palettes, the
    grey level for L and RGB (after conversion to grey), the bit for 1-bit images; 16-bit masks are scaled first.
    """
    return mask_to_bool(_open(path, max_pixels, "mask"), str(path))


def mask_to_bool(mask: Image.Image, name: str = "mask") -> np.ndarray:
    """A PIL mask in any mode -> bool (H, W), True = hole, by the rules of `read_mask`."""
    if mask.mode in ("RGBA", "LA", "PA") or (mask.mode == "P" and "transparency" in mask.info):
        return np.asarray(mask.convert("RGBA"))[..., 3] > 127
    return np.asarray(_to_eight_bits(mask, name).convert("L")) > 127


def restore_mode(result: np.ndarray, original: Image.Image, hole: np.ndarray) -> Image.Image:
    """Put an RGB uint8 result (H, W, 3) back into the original's mode, taking every non-hole pixel from it.

    Pixels outside `hole` (bool (H, W)) are byte-identical to `original`; alpha channels are kept as they were.
    """
    if original.mode in ("RGB", "RGBA"):
        channels = np.asarray(original).copy()
        channels[hole, :3] = result[hole]
    else:  # L or LA: the result's luminance goes into the grey channel
        channels = np.asarray(original).copy()
        grey = np.asarray(Image.fromarray(result, "RGB").convert("L"))
        if original.mode == "L":
            channels[hole] = grey[hole]
        else:
            channels[hole, 0] = grey[hole]
    return Image.fromarray(channels, original.mode)


def write_image(image: Image.Image, path: str | os.PathLike) -> None:
    """Write an image atomically (temporary file in the same folder, then rename), format from the extension."""
    path = Path(path)
    image_format = Image.registered_extensions().get(path.suffix.lower())
    if image_format is None or path.suffix.lower() not in IMAGE_EXTENSIONS:
        raise InpaintError(f"output {path}: unknown image extension {path.suffix!r}; use one of {IMAGE_EXTENSIONS}")
    if image_format == "JPEG" and image.mode in ("RGBA", "LA"):
        image = image.convert(image.mode[:-1])  # JPEG has no alpha channel
    try:
        with atomic_write(path) as stream:
            image.save(stream, format=image_format, **({"quality": 95} if image_format == "JPEG" else {}))
    except OSError as error:
        raise InpaintError(f"output {path}: cannot write it ({error.strerror or error})") from None


def uint8_to_tensor(images: np.ndarray) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float32 in [-1, 1]."""
    return torch.from_numpy(np.require(images, requirements=["C", "W"])).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def tensor_to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) float in [-1, 1] -> (B, H, W, 3) uint8, rounded to nearest."""
    values = ((images.detach().float().clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)
    return values.permute(0, 2, 3, 1).cpu().numpy()
