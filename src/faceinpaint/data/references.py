"""Same-person reference photos for evaluating reference-guided models (Two-Face) on held-out faces.

The identity-labelled face sets are laid out <set>/<person>/<photo>, so a photo's person is its folder: an image's
reference is another photo of its own folder, drawn from a pool (typically the whole held-out list, so that people
with few photos in a study subset still get one) with a seed and the image's key, never the image itself.
"""

import zlib
from pathlib import Path

import numpy as np

from faceinpaint.errors import InpaintError


def photos_by_person(pool: str | Path) -> dict[Path, list[Path]]:
    """{person folder: its photos} of the folder or file list `pool` (resolved paths)."""
    from faceinpaint.data.datasets import list_images

    if not Path(pool).exists():
        raise InpaintError(f"references: pool {pool}: no such folder or file list")
    by_person: dict[Path, list[Path]] = {}
    for path in list_images(pool).values():
        resolved = Path(path).resolve()
        by_person.setdefault(resolved.parent, []).append(resolved)
    return by_person


def same_person_references(images: dict[str, Path], pool: str | Path, seed: int = 0) -> dict[str, Path]:
    """{key: reference path} for every image of `images`, drawn from the folder or file list `pool`."""
    by_person = photos_by_person(pool)
    chosen = {}
    for key, path in images.items():
        own = Path(path).resolve()
        others = sorted(other for other in by_person.get(own.parent, []) if other != own)
        if not others:
            raise InpaintError(
                f"references: {pool} holds no other photo of the person of {key} (folder {own.parent.name})"
            )
        generator = np.random.default_rng([seed, zlib.crc32(key.encode())])  # stable under subsetting
        chosen[key] = others[int(generator.integers(len(others)))]
    return chosen
