"""The golden-output probe shared by tests/test_golden.py and scripts/golden_outputs.py."""

from pathlib import Path

import numpy as np
import torch

from faceinpaint.inference.demo import load_sample
from faceinpaint.inpainter import Inpainter

# (row, column) inside the bundled sample's hole (both eyes and the mouth) where the outputs are compared.
POSITIONS = np.array([[112, 96], [112, 104], [116, 150], [120, 160], [170, 128], [174, 116], [178, 140]])


def golden_output(model_dir: Path) -> np.ndarray:
    """The model's completion (3, 256, 256) in [-1, 1] of the bundled face (eyes + mouth hole), align "never";
    a reference-guided model gets the face mirrored as its reference."""
    inpainter = Inpainter.from_pretrained(model_dir, device="cpu")
    image, hole = load_sample()
    pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 127.5 - 1.0
    reference = pixels.flip(-1) if inpainter.uses_reference else None
    with torch.inference_mode():
        return inpainter(pixels, torch.from_numpy(hole), reference, align="never").numpy()
