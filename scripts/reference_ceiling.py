"""How much identity can a reference photo's own pixels add? Blends of a model's completion with the reference.

Two-Face's bar asks the reference to add +0.05 SFace on eye holes over the same model without it. This measures
what pixel transfer from the reference can give on the held-out protocol: the model's completion (with its
reference) blended inside the hole, at fixed weights, with (a) `reference-paste`'s completion (the reference warped
by the landmarks, colour matched, Poisson-blended), (b) the raw warped reference of Two-Face v2's prior, where it has
pixels, and (c) only the prior's details (its difference from a Gaussian blur, sigma 2 px, in place of the
completion's own). Each row's SFace (the independent judge) is paired face by face with the model's no-reference
completion. The last rows take, per face, the best of all blends, and the best of the model and reference-paste:
upper bounds for any method that picks one of these per face (the judge picks, which no method can). A model that
re-renders the reference's parts under this photo's light and gaze is not bounded by them.

Run: python scripts/face_lists.py && python scripts/reference_ceiling.py twoface-face-256 --masks part:eyes
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from faceinpaint.data.datasets import list_images
from faceinpaint.data.references import same_person_references
from faceinpaint.errors import InpaintError
from faceinpaint.evaluation.evaluate import read_batch
from faceinpaint.evaluation.identity import SFaceJudge, cosine
from faceinpaint.faces.reference_prior import image_prior
from faceinpaint.images import tensor_to_uint8
from faceinpaint.inpainter import Inpainter

sys.path.insert(0, str(Path(__file__).parent))
from paired_difference import summary  # noqa: E402
from per_face_table import add_held_out_arguments, per_face_tables  # noqa: E402

WEIGHTS = (0.25, 0.5, 0.75, 1.0)  # how much of the reference replaces the completion inside the hole
SOURCES = ("paste", "prior", "details")


def gaussian_blur(images: torch.Tensor, sigma: float = 2.0) -> torch.Tensor:
    """Separable Gaussian blur of (B, C, H, W), edges replicated: what `details` subtracts."""
    radius = int(3 * sigma)
    taps = torch.exp(-(torch.arange(-radius, radius + 1.0) ** 2) / (2 * sigma**2))
    taps = (taps / taps.sum()).to(images)
    channels = images.shape[1]
    rows = taps.view(1, 1, 1, -1).repeat(channels, 1, 1, 1)
    blurred = F.conv2d(F.pad(images, (radius, radius, 0, 0), mode="replicate"), rows, groups=channels)
    return F.conv2d(F.pad(blurred, (0, 0, radius, radius), mode="replicate"), rows.transpose(2, 3), groups=channels)


def blends(completed: torch.Tensor, pasted: torch.Tensor, prior: torch.Tensor) -> dict[str, torch.Tensor]:
    """{"SOURCE@WEIGHT": the completion with that much of the source in its place}, before compositing."""
    rgb, valid = prior[:, :3], prior[:, 3:4]
    details = (rgb - gaussian_blur(rgb)) - (completed - gaussian_blur(completed))
    found = {}
    for weight in WEIGHTS:
        found[f"paste@{weight}"] = completed + weight * (pasted - completed)
        found[f"prior@{weight}"] = completed + weight * valid * (rgb - completed)
        found[f"details@{weight}"] = (completed + weight * valid * details).clamp(-1.0, 1.0)
    return found


def ceiling_scores(model: Inpainter, paste: Inpainter, images: dict, holes: np.ndarray, references: dict) -> list:
    """Per face: SFace cosine to the truth of the no-reference completion, the model's, and every blend."""
    judge, keys, rows = SFaceJudge(), list(images), []
    for start in range(0, len(keys), 8):
        chunk = keys[start : start + 8]
        target = read_batch([images[key] for key in chunk])
        hole = torch.from_numpy(holes[start : start + 8])[:, None]
        reference = read_batch([references[key] for key in chunk])
        masked = target * ~hole
        completed = model.complete(masked, hole, reference)
        outputs = {"none": model.complete(masked, hole, None), "model": completed}
        outputs |= blends(completed, paste.complete(masked, hole, reference), image_prior(masked, hole, reference))
        outputs = {name: tensor_to_uint8(torch.where(hole, output, target)) for name, output in outputs.items()}
        for number, (key, truth) in enumerate(zip(chunk, tensor_to_uint8(target), strict=True)):
            face = judge.locate(truth)
            if face is None:
                continue  # the judge sees no face in the truth: not scored
            true_embedding = judge.embed(truth, face)
            rows.append(
                {"image": key} | {n: cosine(judge.embed(o[number], face), true_embedding) for n, o in outputs.items()}
            )
    return rows


def table(rows: list[dict], label: str) -> list[str]:
    """Markdown rows: every variant's mean SFace and its paired difference from the no-reference completion."""
    names = ["model"] + [f"{source}@{weight}" for source in SOURCES for weight in WEIGHTS]
    best_blend = [max(row[name] for name in names) for row in rows]
    best_pair = [max(row["model"], row["paste@1.0"]) for row in rows]
    columns = {name: [row[name] for row in rows] for name in names}
    columns |= {"per-face best of all rows above": best_blend, "per-face best of model and paste@1.0": best_pair}
    none = [row["none"] for row in rows]
    lines = []
    for name, values in columns.items():
        count, mean, _, difference, half, share = summary(list(zip(values, none, strict=True)))
        lines.append(f"| {label} | {name} | {count} | {mean:.4f} | {difference:+.4f} ± {half:.4f} | {share:.0%} |")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_held_out_arguments(parser, "runs/reference-ceiling")
    args = parser.parse_args()
    try:
        model = Inpainter.from_pretrained(args.weights)
        if not model.uses_reference:
            raise InpaintError(f"{args.weights} does not take a reference")
        paste = Inpainter.from_pretrained("reference-paste")
        images = list_images(args.images)
        references = same_person_references(images, args.references, args.seed)
        header = ["| masks | completion | n | SFace ↑ | − no reference (95 %) | higher |", "|---|---|---|---|---|---|"]
        text = per_face_tables(
            images,
            args.masks,
            args.seed,
            header,
            lambda holes: ceiling_scores(model, paste, images, holes, references),
            table,
            args.out,
        )
    except InpaintError as error:
        print(f"reference_ceiling: {error}", file=sys.stderr)
        return 1
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
