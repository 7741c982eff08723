"""The edges of the tensor world: reading images and masks, converting to and from tensors, atomic writes.

Inside faceinpaint an image is float (B, 3, H, W) RGB in [-1, 1] and a mask is float (B, 1, H, W) with 1 = hole.
Only this module (and the Inpainter's argument handling) sees uint8, PIL or files.
"""

import errno
import io
import os
import re
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from faceinpaint.atomic import atomic_write
from faceinpaint.errors import InpaintError, NotAnImageError, OverLimitError

DEFAULT_MAX_PIXELS = 40_000_000  # about 6300 x 6300; larger inputs are refused before they are decoded
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
# Modes an output can be written back in, pixel for pixel; everything else is converted to RGB on reading.
_KEPT_MODES = ("RGB", "RGBA", "L", "LA")
_DEEP_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")
NAME_MAX = 255  # bytes in one path component on the usual file systems
# Every reader below checks its own `max_pixels` from the header before decoding; Pillow's warning for large
# images (above about 89 M pixels) would only repeat that check as a second, less precise message.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def path_exists(path: Path, what: str) -> bool:
    """Whether `path` exists; a path the system cannot even look up (a name too long, no permission) is an error."""
    try:
        path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as error:
        if error.errno != errno.ENAMETOOLONG:
            raise InpaintError(f"{what} {path}: {error.strerror or error}") from None
        longest = max(len(os.fsencode(part)) for part in path.parts)
        why = (
            f"one part of the path is {longest} bytes (file systems allow {NAME_MAX})"
            if longest > NAME_MAX
            else f"the path is {len(os.fsencode(path))} bytes long"
        )
        raise InpaintError(f"{what} {path}: the name is too long: {why}") from None
    return True


def _check_size(width: int, height: int, label: str, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise OverLimitError(
            f"{label}: {width}x{height} = {width * height} pixels is over the limit of {max_pixels} pixels "
            "(--max-pixels)"
        )


def _decode(stream: BinaryIO, label: str, max_pixels: int) -> Image.Image:
    """Decode a file or an upload, upright (EXIF orientation applied), every failure one InpaintError sentence.

    The size is checked from the header, before any pixel is decoded. Files come as open streams too, never as
    paths: given a path, Pillow maps an uncompressed TIFF into memory and then drops its orientation unapplied.
    """
    try:
        with Image.open(stream) as opened:
            _check_size(*opened.size, label, max_pixels)
            opened.load()
            # Phones store photos sideways with an Orientation tag; this returns the picture as shown, tag removed.
            return ImageOps.exif_transpose(opened)
    except InpaintError:
        raise
    except UnidentifiedImageError:
        raise NotAnImageError(f"{label}: not an image file (or a format Pillow cannot read)") from None
    except Image.DecompressionBombError as error:  # Pillow's own limit (about 179 M pixels) fired first
        declared = re.search(r"\((\d+) pixels\)", str(error))
        size = f"{declared[1]} pixels is" if declared else "it is"
        limit = min(max_pixels, 2 * (Image.MAX_IMAGE_PIXELS or max_pixels))
        raise OverLimitError(f"{label}: {size} over the limit of {limit} pixels (--max-pixels)") from None
    except Exception as error:  # Pillow's format plugins raise many types (OSError, SyntaxError, struct.error, ...)
        reason = " ".join(str(error).split()) or type(error).__name__
        raise InpaintError(f"{label}: cannot decode it ({reason}); the file may be truncated or corrupt") from None


def _to_eight_bits(image: Image.Image, name: str) -> Image.Image:
    """Reduce 16/32-bit single-channel modes to 8-bit L (Pillow's own convert clips them instead).

    Integers are scaled from 0..65535; floats from 0..1 when none is above 1, else like integers. NaN is 0.
    """
    if image.mode not in _DEEP_MODES:
        return image
    warnings.warn(f"{name}: {image.mode} image reduced to 8 bits per channel", stacklevel=3)
    values = np.asarray(image, dtype=np.float64)
    finite = values[np.isfinite(values)]
    unit = image.mode == "F" and (finite.size == 0 or finite.max() <= 1.0)
    scaled = np.nan_to_num(values * (255.0 if unit else 255.0 / 65535.0), nan=0.0, posinf=255.0, neginf=0.0)
    return Image.fromarray(np.clip(np.round(scaled), 0, 255).astype(np.uint8), "L")


def _kept_mode(image: Image.Image, name: str) -> Image.Image:
    """RGB, RGBA, L or LA: see `read_image`."""
    image = _to_eight_bits(image, name)
    if image.mode == "P" and "transparency" in image.info:
        return image.convert("RGBA")
    return image if image.mode in _KEPT_MODES else image.convert("RGB")


def _file(path: str | os.PathLike, what: str) -> BinaryIO:
    """The file at `path`, open for reading, or an InpaintError that says why it cannot be."""
    path = Path(path)
    if not path_exists(path, what) or not path.is_file():
        raise InpaintError(f"{what} {path}: no such file")
    try:
        return open(path, "rb")  # the caller's `with` closes it
    except OSError as error:
        raise InpaintError(f"{what} {path}: cannot read it ({error.strerror or error})") from None


def read_image(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Read an image as RGB, RGBA, L or LA (the modes `restore_mode` can write back exactly), upright.

    The EXIF orientation is applied (the pixels come back as the photo is shown, without the tag). CMYK, palette,
    YCbCr and 1-bit images become RGB (or RGBA where a palette has transparency); 16-bit and float images are
    reduced to 8 bits with a warning. Every problem (missing, not an image, corrupt, over `max_pixels`) is an
    InpaintError (OverLimitError, NotAnImageError) naming the file.
    """
    with _file(path, "image") as stream:
        return _kept_mode(_decode(stream, f"image {path}", max_pixels), str(path))


def decode_image(data: bytes, name: str = "image", max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """`read_image` for bytes (an upload): the same decoder, modes, orientation, scaling and errors."""
    return _kept_mode(_decode(io.BytesIO(data), name, max_pixels), name)


def read_mask(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read a mask file as a bool (H, W) array, True = hole, upright (EXIF orientation applied).

    A pixel is a hole where its value is above 127: the alpha channel for RGBA / LA / transparent palettes, the
    grey level for L and RGB (after conversion to grey), the bit for 1-bit images; 16-bit masks are scaled first.
    """
    with _file(path, "mask") as stream:
        return mask_to_bool(_decode(stream, f"mask {path}", max_pixels), str(path))


def decode_mask(data: bytes, name: str = "mask", max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """`read_mask` for bytes (an upload)."""
    return mask_to_bool(_decode(io.BytesIO(data), name, max_pixels), name)


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
