"""torch.hub entry points: each returns a ready `faceinpaint.Inpainter` with one of the repo's released models.

    inpainter = torch.hub.load("path/to/faceinpaint", "deepfillv2_face", source="local")
    result = inpainter(Image.open("face.png"), Image.open("mask.png"))   # PIL in -> PIL out; mask: white = hole

The code comes from this repo's src/ and the weights from its weights/ (the model dirs a wheel ships); nothing is
downloaded. faceinpaint is imported only inside an entry point: torch.hub imports this file before it checks
`dependencies`, and a missing one should get hub's message, not an ImportError. Where faceinpaint is already
imported in the process (an installed copy), that copy is used with the repo's weights.
"""

import sys
from pathlib import Path

# Import names of the runtime dependencies in pyproject.toml; torch.hub checks them before calling an entry point.
dependencies = ["torch", "numpy", "PIL", "safetensors", "cv2", "skimage", "tqdm", "yaml"]

REPO = Path(__file__).resolve().parent


def _load(model_dir: str, device: str, backend: str):
    """Import faceinpaint from the repo's src/ (sys.path only for the import) and load weights/<model_dir>."""
    source = str(REPO / "src")
    sys.path.insert(0, source)
    try:
        from faceinpaint import Inpainter
    finally:
        sys.path.remove(source)  # later imports of faceinpaint's modules go through the package, not sys.path
    return Inpainter.from_pretrained(REPO / "weights" / model_dir, device=device, backend=backend)


def deepfillv2_face(device: str = "auto", backend: str = "torch"):
    """DeepFillv2 for aligned 256x256 faces (weights/deepfillv2-face-256): `inpainter(image, mask)`.

    Args:
        device: "cpu", "cuda" or "auto" (CUDA when available).
        backend: "torch", or "onnx" to run the network through onnxruntime (needs faceinpaint[export]).
    Returns:
        A faceinpaint.Inpainter: call it with a PIL image / uint8 array / float tensor in [-1, 1] and a mask of
        the same size (1 = hole); pixels outside the hole come back unchanged.
    """
    return _load("deepfillv2-face-256", device, backend)


def twoface_face(device: str = "auto", backend: str = "torch"):
    """Two-Face, reference-guided, for aligned 256x256 faces (weights/twoface-face-256):
    `inpainter(image, mask, reference=another_photo_of_the_same_person)`.

    Args:
        device: "cpu", "cuda" or "auto" (CUDA when available).
        backend: "torch", or "onnx" to run the network through onnxruntime (needs faceinpaint[export]).
    Returns:
        A faceinpaint.Inpainter, as for deepfillv2_face, whose call also takes `reference`.
    """
    return _load("twoface-face-256", device, backend)
