"""`make demo`: inpaint the bundled astronaut face with the best installed model and draw a comparison strip."""

from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image

from faceinpaint.images import mask_to_bool, write_image
from faceinpaint.inpainter import Inpainter

SAMPLE_IMAGE = "astronaut-face-256.png"  # scikit-image's astronaut (public-domain NASA photo), face crop
SAMPLE_MASK = "astronaut-mask-256.png"  # a hole over the eyes and the mouth


def load_sample() -> tuple[Image.Image, np.ndarray]:
    """The bundled sample: an RGB face (256x256) and its bool hole mask."""
    assets = resources.files("faceinpaint") / "assets"
    with (assets / SAMPLE_IMAGE).open("rb") as image_file, (assets / SAMPLE_MASK).open("rb") as mask_file:
        image = Image.open(image_file).convert("RGB")
        hole = mask_to_bool(Image.open(mask_file))
    return image, hole


def comparison_strip(panels: list[Image.Image], gap: int = 4) -> Image.Image:
    """Panels side by side on white, separated by `gap` pixels."""
    width = sum(p.width for p in panels) + gap * (len(panels) - 1)
    strip = Image.new("RGB", (width, max(p.height for p in panels)), "white")
    x = 0
    for panel in panels:
        strip.paste(panel.convert("RGB"), (x, 0))
        x += panel.width + gap
    return strip


def run_demo(inpainter: Inpainter, out_dir: Path) -> tuple[Path, Path]:
    """Write out_dir/out.png (the result) and out_dir/compare.png (input | masked | result)."""
    image, hole = load_sample()
    result = inpainter(image, hole)
    masked = np.asarray(image).copy()
    masked[hole] = 255
    out, compare = out_dir / "out.png", out_dir / "compare.png"
    write_image(result, out)
    write_image(comparison_strip([image, Image.fromarray(masked), result]), compare)
    return out, compare
