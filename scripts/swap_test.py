"""The swap test of a reference-guided model: does its output follow the reference it is given?

The same masked held-out faces are completed three times: (a) with another photo of their own person, (b) with a
photo of somebody else, (c) with no reference. SFace (the independent judge) then scores each output's identity
against the true person (the ground truth, aligned by its own landmarks) and against the swapped-in person (their
photo). A model that uses the reference loses identity to the true person from (a) to (b) and gains identity to
the other person from (c) to (b); one that ignores it shows neither. Paired differences per face, with 95 %
intervals (1.96 standard errors), are printed as a Markdown table and written with the per-face values.

Run: python scripts/face_lists.py && python scripts/swap_test.py twoface-face-256 --masks part:eyes part:mouth
"""

import argparse
import sys
import zlib
from pathlib import Path

import numpy as np
import torch

from faceinpaint.data.datasets import list_images
from faceinpaint.data.references import photos_by_person, same_person_references
from faceinpaint.errors import InpaintError
from faceinpaint.evaluation.evaluate import read_batch
from faceinpaint.evaluation.identity import SFaceJudge, cosine
from faceinpaint.images import tensor_to_uint8
from faceinpaint.inpainter import Inpainter

sys.path.insert(0, str(Path(__file__).parent))
from paired_difference import summary  # noqa: E402
from per_face_table import add_held_out_arguments, per_face_tables  # noqa: E402

CONDITIONS = ("own", "other", "none")


def other_person_photos(images: dict[str, Path], pool: str, seed: int) -> dict[str, Path]:
    """{key: a photo of another person} from the pool: the person drawn uniformly, then one of their photos."""
    by_person = photos_by_person(pool)
    people = sorted(by_person)
    chosen = {}
    for key, path in images.items():
        others = [person for person in people if person != Path(path).resolve().parent]
        if not others:
            raise InpaintError(f"--references {pool}: it holds nobody but the person of {key}")
        generator = np.random.default_rng([seed, 1, zlib.crc32(key.encode())])
        photos = sorted(by_person[others[int(generator.integers(len(others)))]])
        chosen[key] = photos[int(generator.integers(len(photos)))]
    return chosen


def swap_scores(
    inpainter: Inpainter, images: dict[str, Path], holes: np.ndarray, own: dict, other: dict, batch_size: int
) -> list[dict]:
    """Per face: SFace cosine of each condition's output to the true person and to the other person."""
    judge, keys, rows = SFaceJudge(), list(images), []
    for start in range(0, len(keys), batch_size):
        chunk = keys[start : start + batch_size]
        target = read_batch([images[key] for key in chunk])
        hole = torch.from_numpy(holes[start : start + batch_size])[:, None]
        references = {
            "own": read_batch([own[key] for key in chunk]),
            "other": read_batch([other[key] for key in chunk]),
            "none": None,
        }
        outputs = {}
        for condition, reference in references.items():
            completed = torch.where(hole, inpainter.complete(target * ~hole, hole, reference), target)
            outputs[condition] = tensor_to_uint8(completed)
        for number, (key, truth) in enumerate(zip(chunk, tensor_to_uint8(target), strict=True)):
            face = judge.locate(truth)
            stranger = judge.embed(tensor_to_uint8(references["other"][number : number + 1])[0])
            if face is None or stranger is None:
                continue  # the judge sees no face in the truth or in the other person's photo: not scored
            true_embedding = judge.embed(truth, face)
            row = {"image": key, "other_photo": str(other[key])}
            for condition in CONDITIONS:
                embedding = judge.embed(outputs[condition][number], face)
                row[f"true_{condition}"] = cosine(embedding, true_embedding)
                row[f"other_{condition}"] = cosine(embedding, stranger)
            rows.append(row)
    return rows


def table(rows: list[dict], label: str) -> list[str]:
    """Markdown rows: the means, and the two paired differences that show the reference is used."""
    lines = []
    for what, first, second in (("true person", "own", "other"), ("other person", "other", "none")):
        column = "true" if what == "true person" else "other"
        pairs = [(row[f"{column}_{first}"], row[f"{column}_{second}"]) for row in rows]
        count, mean_a, mean_b, difference, half, share = summary(pairs)
        means = " | ".join(f"{np.mean([row[f'{column}_{c}'] for row in rows]):.4f}" for c in CONDITIONS)
        lines.append(
            f"| {label} | {what} | {count} | {means} | {first} − {second}: {difference:+.4f} ± {half:.4f} "
            f"| {share:.0%} |"
        )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_held_out_arguments(parser, "runs/swap-test")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    try:
        inpainter = Inpainter.from_pretrained(args.weights, device=args.device)
        if not inpainter.uses_reference:
            raise InpaintError(f"{args.weights} does not take a reference: there is nothing to swap")
        images = list_images(args.images)
        own = same_person_references(images, args.references, args.seed)
        other = other_person_photos(images, args.references, args.seed)
        header = [
            "| masks | identity to | n | own reference | other person's photo | none | paired difference (95 %) "
            "| A higher |",
            "|---|---|---|---|---|---|---|---|",
        ]
        text = per_face_tables(
            images,
            args.masks,
            args.seed,
            header,
            lambda holes: swap_scores(inpainter, images, holes, own, other, args.batch_size),
            table,
            args.out,
        )
    except InpaintError as error:
        print(f"swap_test: {error}", file=sys.stderr)
        return 1
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
