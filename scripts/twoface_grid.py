"""Draw the README's Two-Face grid on the bundled sample face (the astronaut of scikit-image, public domain).

The held-out faces of the study are research-only photos that may not enter the repo, and no installed package
ships two photos of one person; so the reference here is the sample itself, mirrored. Rows: holes over the eyes,
the nose and the mouth (dlib's 68 landmarks). Columns: ground truth | input | reference | DeepFillv2 | Two-Face |
Two-Face without the reference.

Run: python scripts/twoface_grid.py docs/twoface-face-256-sample.jpg
"""

import argparse
import sys

import numpy as np
from PIL import Image, ImageDraw

from faceinpaint.demo import load_sample
from faceinpaint.errors import InpaintError
from faceinpaint.images import write_image
from faceinpaint.inpainter import Inpainter
from faceinpaint.part_masks import face_part_mask

TITLES = ("ground truth", "input", "reference", "deepfillv2-face-256", "twoface-face-256", "twoface, no reference")


def grid(rows: list[list[np.ndarray]], titles=TITLES, gap: int = 4, header: int = 18) -> Image.Image:
    """Panels (uint8 H x W x 3, all one size) in rows, titled columns, on white."""
    height, width = rows[0][0].shape[:2]
    canvas = Image.new("RGB", (len(titles) * (width + gap) - gap, header + len(rows) * (height + gap) - gap), "white")
    draw = ImageDraw.Draw(canvas)
    for column, title in enumerate(titles):
        draw.text((column * (width + gap) + 4, 3), title, fill="black")
    for row, panels in enumerate(rows):
        for column, panel in enumerate(panels):
            canvas.paste(Image.fromarray(panel), (column * (width + gap), header + row * (height + gap)))
    return canvas


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="the figure to write (.jpg or .png)")
    args = parser.parse_args()
    try:
        face = np.asarray(load_sample()[0])
        reference = np.ascontiguousarray(face[:, ::-1])
        deepfill, twoface = (
            Inpainter.from_pretrained("deepfillv2-face-256"),
            Inpainter.from_pretrained("twoface-face-256"),
        )
        rows = []
        for part in ("eyes", "nose", "mouth"):
            hole = face_part_mask(face, [part])
            shown = face.copy()
            shown[hole] = 255
            outputs = [
                deepfill(face, hole, align="never"),
                twoface(face, hole, reference=reference, align="never"),
                twoface(face, hole, align="never"),
            ]
            rows.append([face, shown, reference, *outputs])
        write_image(grid(rows), args.out)
    except (InpaintError, OSError) as error:
        print(f"twoface_grid: {error}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
