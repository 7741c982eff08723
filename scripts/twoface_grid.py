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

from faceinpaint.errors import InpaintError
from faceinpaint.faces.part_masks import face_part_mask
from faceinpaint.images import write_image
from faceinpaint.inference.demo import load_sample
from faceinpaint.inpainter import Inpainter
from faceinpaint.training.figures import labelled_grid

TITLES = ("ground truth", "input", "reference", "deepfillv2-face-256", "twoface-face-256", "twoface, no reference")


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
        columns = [(title, []) for title in TITLES]
        for part in ("eyes", "nose", "mouth"):
            hole = face_part_mask(face, [part])
            shown = face.copy()
            shown[hole] = 255
            outputs = [
                deepfill(face, hole, align="never"),
                twoface(face, hole, reference=reference, align="never"),
                twoface(face, hole, align="never"),
            ]
            for (_, tiles), tile in zip(columns, [face, shown, reference, *outputs], strict=True):
                tiles.append(tile)
        write_image(labelled_grid(columns), args.out)
    except (InpaintError, OSError) as error:
        print(f"twoface_grid: {error}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
