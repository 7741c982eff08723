"""Draw the README's sample grid: the bundled sample face (the astronaut of scikit-image, public domain) with holes
over its eyes and mouth, completed by each given model.

Rows: the eyes + mouth hole (dlib's 68 landmarks; the web page's Eyes + Mouth presets), then each part alone.
Columns: ground truth | input | one per `--weights` (a name or a model dir, titled by its name or by `--titles`).
The held-out photos are research-only and never enter the repo, so this is the one face the README can show.

Run: python scripts/sample_grid.py docs/deepfillv2-face-256-sample.jpg --weights OLD_MODEL_DIR deepfillv2-face-256 \
    --titles "before (step 4,606)" "after"
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

HOLES = (("eyes", "mouth"), ("eyes",), ("mouth",))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="the figure to write (.jpg or .png)")
    parser.add_argument("--weights", nargs="+", default=["deepfillv2-face-256"], help="models, one column each")
    parser.add_argument("--titles", nargs="+", help="column titles, one per --weights (default: the model names)")
    args = parser.parse_args()
    if args.titles is not None and len(args.titles) != len(args.weights):
        print(f"sample_grid: {len(args.titles)} --titles for {len(args.weights)} --weights", file=sys.stderr)
        return 1
    try:
        face = np.asarray(load_sample()[0])
        models = [Inpainter.from_pretrained(weights) for weights in args.weights]
        titles = args.titles or [model.name for model in models]
        columns = [(title, []) for title in ("ground truth", "input", *titles)]
        for parts in HOLES:
            hole = face_part_mask(face, list(parts))
            shown = face.copy()
            shown[hole] = 255
            outputs = [model(face, hole, align="never") for model in models]
            for (_, tiles), tile in zip(columns, [face, shown, *outputs], strict=True):
                tiles.append(tile)
        write_image(labelled_grid(columns), args.out)
    except (InpaintError, OSError) as error:
        print(f"sample_grid: {error}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
