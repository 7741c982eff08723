"""Make the bundled demo sample: scikit-image's astronaut (a public-domain NASA photo) cropped to the face at
256x256, and a mask over the eyes and the mouth. Run: python scripts/make_demo_sample.py [OUT_DIR]."""

import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from skimage import data

FACE_BOX = (128, 20, 320, 212)  # left, top, right, bottom in the 512x512 photo: the face with hair and chin
EYES = (72, 90, 188, 124)  # in the 256x256 crop: a band over both eyes
MOUTH = (96, 148, 160, 184)  # an ellipse over the mouth


def make_sample() -> tuple[Image.Image, Image.Image]:
    face = Image.fromarray(data.astronaut()).crop(FACE_BOX).resize((256, 256), Image.Resampling.LANCZOS)
    mask = Image.new("L", (256, 256), 0)
    draw = ImageDraw.Draw(mask)
    draw.rounded_rectangle(EYES, radius=12, fill=255)
    draw.ellipse(MOUTH, fill=255)
    return face, mask


def main(out_dir: Path) -> None:
    face, mask = make_sample()
    out_dir.mkdir(parents=True, exist_ok=True)
    face.save(out_dir / "astronaut-face-256.png")
    mask.save(out_dir / "astronaut-mask-256.png")
    print(f"wrote {out_dir}: hole ratio {np.mean(np.asarray(mask) > 127):.3f}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parents[1] / "src/faceinpaint/assets")
