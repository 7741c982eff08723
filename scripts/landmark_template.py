"""The mean of dlib's 68 landmarks over FFHQ-aligned faces, as the Python constant `ALIGNED_LANDMARKS_68`.

Reference alignment (`faceinpaint.faces.reference_warp`) falls back to it where no face is found in the masked photo,
the photo is an aligned crop, and uses it for the landmarks that the hole hides. The points are given for a
256 x 256 crop, (x, y) in pixel index coordinates; the spread across faces is printed too.

Run: python scripts/face_lists.py && python scripts/landmark_template.py data/lists/train.flist --count 400
"""

import argparse

import numpy as np
from PIL import Image

from faceinpaint.faces.detect import detect_faces


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("flist", help="a list of aligned 256 x 256 face crops, one path a line")
    parser.add_argument("--count", type=int, default=400, help="use every k-th image so that this many are read")
    args = parser.parse_args()
    paths = [line.strip() for line in open(args.flist) if line.strip()]
    paths = paths[:: max(len(paths) // args.count, 1)][: args.count]
    found = []
    for path in paths:
        image = np.asarray(Image.open(path).convert("RGB").resize((256, 256), Image.LANCZOS))
        faces = detect_faces(image, "hog", 68)
        if faces:
            found.append(faces[0].landmarks)
    points = np.stack(found)
    mean, spread = points.mean(0), np.linalg.norm(points - points.mean(0), axis=2).mean()
    print(f"# {len(found)} of {len(paths)} faces of {args.flist}; mean distance to the mean point {spread:.2f} px")
    print("ALIGNED_LANDMARKS_68 = (")
    for row in range(0, 68, 6):
        print("    " + " ".join(f"({x:.1f}, {y:.1f})," for x, y in mean[row : row + 6]))
    print(")")


if __name__ == "__main__":
    main()
