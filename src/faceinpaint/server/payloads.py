"""Request and answer bodies: JSON and base64 decoding, image encoding, model descriptions, face presets."""

import base64
import binascii
import io
import json

import numpy as np
from PIL import Image

from faceinpaint.server.pool import HTTPError

PRESET_PARTS = ("eyes", "mouth")
MAX_FACES = 5
FORMATS = {"png": ("PNG", "image/png"), "jpeg": ("JPEG", "image/jpeg")}


def parse_json(raw: bytes):
    """A request body -> its JSON value; whatever Python's parser refuses is a 400."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError as error:
        raise HTTPError(400, f"malformed JSON: {error}") from None
    except RecursionError:
        raise HTTPError(400, "malformed JSON: nested too deeply") from None
    except ValueError as error:  # not UTF-8, or an integer of over 4300 digits
        raise HTTPError(400, f"malformed JSON: {str(error).partition(';')[0]}") from None


def decode_base64(text: str, what: str) -> bytes:
    """Plain base64 or a data URL (`data:image/png;base64,...`) -> bytes."""
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise HTTPError(400, f"{what}: not valid base64") from None


def encode(image: Image.Image, image_format: str) -> bytes:
    pil_format = FORMATS[image_format][0]
    if pil_format == "JPEG" and image.mode in ("RGBA", "LA"):
        image = image.convert(image.mode[:-1])
    stream = io.BytesIO()
    image.save(stream, format=pil_format, **({"quality": 95} if pil_format == "JPEG" else {}))
    return stream.getvalue()


def data_url(data: bytes, image_format: str = "png") -> str:
    return f"data:{FORMATS[image_format][1]};base64,{base64.b64encode(data).decode()}"


def describe(name: str, inpainter) -> dict:
    """One entry of GET /v1/models."""
    network = inpainter.model is not None
    return {
        "name": name,
        "kind": "network" if network else "classical",
        "arch": inpainter.config.get("arch") if network else inpainter.config.get("method"),
        "resolution": inpainter.resolution,
        "reference": inpainter.uses_reference,
        "backend": getattr(inpainter, "backend", "torch") if network else None,
    }


def find_faces(image: np.ndarray) -> dict:
    """Faces of a uint8 RGB photo for the web app: box, five points, and eyes / mouth masks as PNG data URLs."""
    from faceinpaint.faces.detect import detect_faces, faces_available

    if not faces_available():
        return {"available": False, "faces": []}
    from faceinpaint.faces.part_masks import part_mask

    faces = []
    for face in detect_faces(image, "hog", 68)[:MAX_FACES]:
        entry = {"box": [float(v) for v in face.box], "score": face.score, "points": face.points.tolist()}
        if face.landmarks is not None:
            masks = {part: part_mask([face.landmarks], image.shape[:2], [part]) for part in PRESET_PARTS}
            entry["parts"] = {
                part: data_url(encode(Image.fromarray(hole.astype(np.uint8) * 255, "L"), "png"))
                for part, hole in masks.items()
            }
        faces.append(entry)
    return {"available": True, "faces": faces}
