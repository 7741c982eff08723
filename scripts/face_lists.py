"""Write the train / validation file lists of the shipped face models from ../shared/data/faces.

Validation is a fixed set of held-out identities, so every round of training and every model card reports on the
same people: celeba-id-256 identities 07450-07499 (the study's faces, docs/results.md) and the last nine
identities of celeba-align-id-256 (10010-10135): 1,010 photos of 57 people. Everything else trains, aaf-256
included (one photo per person, none of them in CelebA). `train-id.flist` is the training list without aaf-256: the
photos whose person has another photo, which Two-Face needs as references. Lists hold absolute paths; they go to an
ignored folder, never to git.

Run: python scripts/face_lists.py [--faces ../shared/data/faces] [--out data/lists]
"""

import argparse
import sys
from pathlib import Path

from faceinpaint.data.datasets import find_images
from faceinpaint.data.lists import write_lines
from faceinpaint.errors import InpaintError

SETS = ("celeba-id-256", "celeba-align-id-256", "aaf-256")
VALIDATION = {  # set -> (first, last) identity folder, inclusive
    "celeba-id-256": ("07450", "07499"),
    "celeba-align-id-256": ("10010", "10135"),
}


def split(faces: Path) -> tuple[list[Path], list[Path]]:
    """(train, val) images of every set under `faces`, each sorted."""
    train, val = [], []
    for name in SETS:
        root = faces / name
        if not root.is_dir():
            raise InpaintError(f"{root}: no such folder (see ../shared/data/faces/README.md)")
        first, last = VALIDATION.get(name, ("", ""))
        for path in find_images(root):
            identity = path.relative_to(root).parts[0] if path.parent != root else ""
            (val if identity and first <= identity <= last else train).append(path.resolve())
    return sorted(train), sorted(val)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=Path, default=Path("../shared/data/faces"))
    parser.add_argument("--out", type=Path, default=Path("data/lists"))
    args = parser.parse_args()
    try:
        train, val = split(args.faces)
        args.out.mkdir(parents=True, exist_ok=True)
        write_lines(args.out / "train.flist", [str(path) for path in train])
        write_lines(args.out / "val.flist", [str(path) for path in val])
        identified = [path for path in train if path.parent.name not in SETS]
        write_lines(args.out / "train-id.flist", [str(path) for path in identified])
        # Every third validation photo (337, 55 of the 57 people): the model-card study, sized for a 2-core CPU.
        write_lines(args.out / "val-study.flist", [str(path) for path in val[::3]])
        # Every twelfth (85): the Two-Face study, which runs each reference-guided model twice on four mask sets.
        write_lines(args.out / "val-twoface.flist", [str(path) for path in val[::12]])
        # Every sixth (169): the recipe ablation (docs/training-recipes.md), which compares seven models.
        write_lines(args.out / "val-ablation.flist", [str(path) for path in val[::6]])
        # Every fourth training photo (3,984): the ablation arms' training set, quick to decode.
        write_lines(args.out / "train-ablation.flist", [str(path) for path in train[::4]])
    except (InpaintError, OSError) as error:
        print(f"face_lists: {error}", file=sys.stderr)
        return 1
    print(
        f"wrote {args.out}: {len(train)} training ({len(identified)} with identities), {len(val)} validation, "
        f"{len(val[::3])} + {len(val[::12])} + {len(val[::6])} study images"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
