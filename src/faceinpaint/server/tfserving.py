"""TensorFlow Serving's REST predict API for the Two-Face seed's clients: parse its bodies, run, answer in kind.

Seed 001 served `POST /v1/models/two_face_model:predict` with `{"inputs": {"masked_image": [N,128,128,3],
"reference_image": [...]}}` (floats in [0, 1], NHWC) and got `{"outputs": [N,128,128,3]}`. The row format
`{"instances": [{"masked_image": ..., "reference_image": ...}, ...]}` answers `{"predictions": [...]}`. An optional
`mask` input ([N,H,W] or [N,H,W,1], 1 = hole) chooses the hole; without it the hole is the seed's centre square
(rows and columns 3H/8 .. 5H/8 - 1: 48..79 at 128).
"""

import numpy as np
import torch

from faceinpaint.errors import InpaintError, OverLimitError

IMAGE_INPUTS = ("masked_image", "reference_image")


def centre_hole(height: int, width: int) -> np.ndarray:
    """The seed's fixed hole: the centre square a quarter of the side wide, bool (H, W)."""
    hole = np.zeros((height, width), bool)
    hole[3 * height // 8 : 5 * height // 8, 3 * width // 8 : 5 * width // 8] = True
    return hole


def _array(value, name: str, max_batch: int, max_pixels: int) -> np.ndarray:
    """A nested list of numbers -> float32 array, or a one-line InpaintError (OverLimitError over a limit).

    Anything JSON can hold is refused cleanly: ragged or empty arrays, strings, nulls, nesting too deep, integers
    too large for a float.
    """
    try:
        array = np.asarray(value)
    except (ValueError, TypeError, OverflowError, RecursionError):
        array = None  # ragged, or deeper than numpy's 64 dimensions
    if array is None or array.dtype.kind not in "biuf":  # huge integers and mixed types come as objects
        raise InpaintError(f"input {name!r}: not a rectangular array of numbers in [0, 1]")
    if array.ndim not in (3, 4) or 0 in array.shape:
        raise InpaintError(f"input {name!r}: expected [N, H, W, 3], got shape {list(array.shape)}")
    if array.shape[0] > max_batch:
        raise OverLimitError(f"input {name!r}: batch of {array.shape[0]} is over the limit of {max_batch}")
    if array.shape[1] * array.shape[2] > max_pixels:
        height, width = array.shape[1:3]
        raise OverLimitError(f"input {name!r}: {width}x{height} is over the limit of {max_pixels} pixels")
    with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf, refused just below
        array = array.astype(np.float32)
    if not np.isfinite(array).all() or array.min() < 0.0 or array.max() > 1.0:
        raise InpaintError(f"input {name!r}: values must be finite floats in [0, 1]")
    return array


def _columns(body: dict) -> tuple[dict, bool]:
    """The named inputs as columns, and whether the request used the row ("instances") format."""
    if "inputs" in body and "instances" in body:
        raise InpaintError('give either "inputs" (columnar) or "instances" (row format), not both')
    if "inputs" in body:
        inputs = body["inputs"]
        return (inputs if isinstance(inputs, dict) else {"masked_image": inputs}), False
    if "instances" in body:
        rows = body["instances"]
        if not isinstance(rows, list) or not rows:
            raise InpaintError('"instances" must be a non-empty list')
        if all(isinstance(row, dict) for row in rows):
            names = set(rows[0])
            if any(set(row) != names for row in rows):
                raise InpaintError("every instance must name the same inputs")
            return {name: [row[name] for row in rows] for name in names}, True
        return {"masked_image": rows}, True
    raise InpaintError('the body needs "inputs" (columnar) or "instances" (row format)')


def parse_predict(
    body, max_batch: int, max_pixels: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, bool]:
    """A TF-Serving predict body -> (image (B, 3, H, W) in [-1, 1], bool hole (B, 1, H, W), reference or None, rows).

    Every problem (unknown input, wrong shape, values outside [0, 1], sizes that differ) is an InpaintError; a
    batch or an image over the limits is an OverLimitError.
    """
    if not isinstance(body, dict):
        raise InpaintError("the body must be a JSON object")
    columns, rows = _columns(body)
    unknown = sorted(set(columns) - {*IMAGE_INPUTS, "mask"})
    if unknown or "masked_image" not in columns:
        raise InpaintError(f"inputs must be masked_image, optional reference_image and mask; got {sorted(columns)}")
    image = _array(columns["masked_image"], "masked_image", max_batch, max_pixels)
    if image.ndim != 4 or image.shape[-1] != 3:
        raise InpaintError(f"input 'masked_image': expected [N, H, W, 3], got shape {list(image.shape)}")
    batch, height, width = image.shape[:3]
    if "mask" in columns:
        mask = _array(columns["mask"], "mask", max_batch, max_pixels)
        if mask.ndim == 4 and mask.shape[-1] == 1:
            mask = mask[..., 0]
        if mask.shape != (batch, height, width):
            raise InpaintError(f"input 'mask': expected [{batch}, {height}, {width}], got {list(mask.shape)}")
        hole = mask > 0.5
    else:
        hole = np.broadcast_to(centre_hole(height, width), (batch, height, width))
    reference = None
    if columns.get("reference_image") is not None:
        reference = _array(columns["reference_image"], "reference_image", max_batch, max_pixels)
        if reference.ndim != 4 or reference.shape[0] != batch or reference.shape[-1] != 3:
            raise InpaintError(
                f"input 'reference_image': expected [{batch}, H, W, 3], got shape {list(reference.shape)}"
            )
        reference = torch.from_numpy(reference).permute(0, 3, 1, 2) * 2.0 - 1.0
    pixels = torch.from_numpy(image).permute(0, 3, 1, 2) * 2.0 - 1.0
    return pixels, torch.from_numpy(np.array(hole))[:, None], reference, rows  # broadcast views are read-only


def predict(inpainter, pixels: torch.Tensor, hole: torch.Tensor, reference: torch.Tensor | None) -> np.ndarray:
    """Run one parsed request: the patched full images as float32 [N, H, W, 3] in [0, 1]."""
    if not hole.any():
        raise InpaintError("the mask has no pixel above 0.5: there is nothing to inpaint")
    if not inpainter.uses_reference:
        reference = None  # the seed's clients always send one (black when the user gave none)
    completed = inpainter(pixels, hole, reference, align="never")
    return ((completed.clamp(-1.0, 1.0) + 1.0) / 2.0).permute(0, 2, 3, 1).numpy()


def answer(outputs: np.ndarray, rows: bool) -> dict:
    """TF-Serving's response: one named output (`output_image`) is returned as the bare value."""
    values = np.round(outputs.astype(np.float64), 5).tolist()
    return {"predictions": values} if rows else {"outputs": values}
