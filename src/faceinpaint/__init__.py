"""faceinpaint: complete masked face photos with DeepFillv2-style and reference-guided models."""

__version__ = "0.1.0"

from faceinpaint.errors import InpaintError  # noqa: E402
from faceinpaint.inpainter import Inpainter  # noqa: E402

__all__ = ["InpaintError", "Inpainter", "__version__"]
