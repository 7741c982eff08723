"""Milliseconds per pair for aligning references (faces/reference_warp.py) and `reference-paste`, median of runs:
the bundled 256 sample with its eyes + mouth mask and the sample mirrored as the reference, and the 512 x 512
astronaut photo with a turned, shrunk copy of itself. Prints a markdown table.

Run: .venv/bin/python benchmarks/reference_warp.py [--repeats 9]
"""

import argparse
from functools import partial

import cv2
import numpy as np
from skimage import data
from speed import median_ms  # benchmarks/speed.py, beside this script

from faceinpaint.faces.part_masks import face_part_mask
from faceinpaint.faces.reference_paste import reference_paste
from faceinpaint.faces.reference_warp import face_landmarks, masked_face_landmarks, warp_reference
from faceinpaint.inference.demo import load_sample


def _cases() -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    image, hole = load_sample()
    sample = np.asarray(image.convert("RGB"))
    photo = data.astronaut()
    turn = cv2.getRotationMatrix2D((260.0, 200.0), 12.0, 0.85)
    return {
        "sample 256, eyes + mouth": (sample, hole, np.ascontiguousarray(sample[:, ::-1])),
        "astronaut 512, eyes": (photo, face_part_mask(photo, ["eyes"], 4), cv2.warpAffine(photo, turn, (512, 512))),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    print(f"{args.repeats} runs each, median; OpenCV on 1 thread\n")
    print("| case | reference landmarks | masked-face landmarks | warp in all | reference-paste in all |")
    print("|---|---|---|---|---|")
    for name, (image, hole, reference) in _cases().items():
        times = [
            median_ms(partial(face_landmarks, reference, 68), args.repeats),
            median_ms(partial(masked_face_landmarks, image, hole), args.repeats),
            median_ms(partial(warp_reference, image, hole, reference), args.repeats),
            median_ms(partial(reference_paste, image, hole, reference), args.repeats),
        ]
        print(f"| {name} | " + " | ".join(f"{ms:.1f} ms" for ms in times) + " |", flush=True)


if __name__ == "__main__":
    main()
