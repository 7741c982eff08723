"""Data preparation: train/validation file lists and the Two-Face seed layout, made from a folder of face photos.

ROOT is either a set of identity folders (`ROOT/<identity>/<image>`, images found recursively inside each) or a
flat folder of images. Splits of identity sets are by person, so no one is in both training and validation;
identities that share a byte-identical photo (label noise, as in CelebA) are kept on the same side. ROOT is only
read; the output folder must be new or empty, and every file is written atomically.
"""

import hashlib
import os
import random
import shutil
import zipfile
from pathlib import Path

from faceinpaint.atomic import atomic_write, write_text
from faceinpaint.data.datasets import LIST_FILES, find_images, is_image_name
from faceinpaint.errors import InpaintError

DEFAULT_VAL_FRACTION = 0.1


def scan_root(root: str | os.PathLike) -> tuple[dict[str, list[Path]] | None, list[Path]]:
    """(identity -> sorted images, or None for a flat folder; every image) of ROOT.

    Raises:
        InpaintError: ROOT missing, holding no images, or mixing images with identity folders.
    """
    root = Path(root)
    if not root.is_dir():
        raise InpaintError(f"ROOT {root}: no such folder")
    images = find_images(root)
    if not images:
        raise InpaintError(f"ROOT {root}: no images found (extensions .png, .jpg, ...)")
    loose = [path for path in images if path.parent == root]
    if len(loose) == len(images):
        return None, images
    if loose:
        raise InpaintError(
            f"ROOT {root}: holds both images ({loose[0].name}, ...) and identity folders; use one layout"
        )
    identities: dict[str, list[Path]] = {}
    for path in images:
        identities.setdefault(path.relative_to(root).parts[0], []).append(path)
    return identities, images


def check_out(out: str | os.PathLike, root: str | os.PathLike) -> Path:
    """Make sure --out is new or empty and outside ROOT (ROOT is never modified); create it."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InpaintError(f"--out {out}: is a file, not a folder")
    if out.is_dir() and any(out.iterdir()):
        raise InpaintError(f"--out {out}: folder is not empty; give a new or empty folder")
    if out.resolve().is_relative_to(Path(root).resolve()):
        raise InpaintError(f"--out {out}: is inside ROOT {root}, which is never modified; write elsewhere")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InpaintError(f"--out {out}: cannot create it ({error.strerror or error})") from None
    return out


def write_lines(path: Path, lines: list[str]) -> None:
    """Write lines (newline-terminated) atomically (atomic.write_text)."""
    write_text(path, "".join(line + "\n" for line in lines))


def identity_groups(identities: dict[str, list[Path]]) -> list[list[str]]:
    """Identities that must stay together (sharing a byte-identical photo), as sorted groups; most are alone."""
    parent = {identity: identity for identity in identities}

    def find(identity: str) -> str:
        while parent[identity] != identity:
            parent[identity] = parent[parent[identity]]
            identity = parent[identity]
        return identity

    owner: dict[bytes, str] = {}
    for identity in sorted(identities):
        for path in identities[identity]:
            digest = hashlib.blake2b(path.read_bytes(), digest_size=16).digest()
            first = owner.setdefault(digest, identity)
            parent[find(identity)] = find(first)
    groups: dict[str, list[str]] = {}
    for identity in sorted(identities):
        groups.setdefault(find(identity), []).append(identity)
    return list(groups.values())


def pick_validation(
    groups: list[list[str]], sizes: dict[str, int], rng: random.Random, count: int | None, fraction: float | None
) -> set[str]:
    """Validation identities: `count` identities, or whole groups whose images come closest to `fraction`."""
    order = list(groups)
    rng.shuffle(order)
    chosen: set[str] = set()
    if count is not None:
        for group in order:
            if len(chosen) + len(group) <= count:
                chosen.update(group)
        return chosen
    target, taken = fraction * sum(sizes.values()), 0
    for group in order:
        size = sum(sizes[identity] for identity in group)
        if abs(taken + size - target) < abs(taken - target):
            chosen.update(group)
            taken += size
    return chosen


def _check_split_options(val_fraction: float | None, val_identities: int | None) -> None:
    if val_fraction is not None and val_identities is not None:
        raise InpaintError("give either --val-fraction or --val-identities, not both")
    if val_fraction is not None and not 0.0 <= val_fraction < 1.0:
        raise InpaintError(f"--val-fraction {val_fraction}: must be in [0, 1)")
    if val_identities is not None and val_identities < 0:
        raise InpaintError(f"--val-identities {val_identities}: must be 0 or more")


def make_file_lists(
    root: str | os.PathLike,
    out: str | os.PathLike,
    val_fraction: float | None = None,
    val_identities: int | None = None,
    seed: int = 0,
    relative: bool = False,
) -> dict[str, int]:
    """Write OUT/train.flist and OUT/val.flist: every image under ROOT exactly once, shuffled with `seed`.

    Identity folders are split by person (`val_identities` people, or whole people making up about
    `val_fraction` of the images; default fraction 0.1); a flat folder is split by image.

    Args:
        root: identity folders or a flat folder of images (read only).
        out: new or empty folder.
        val_fraction: share of images for validation, in [0, 1).
        val_identities: number of identities for validation (identity folders only).
        seed: shuffling seed; the same seed gives the same lists.
        relative: write paths relative to OUT instead of absolute ones.

    Returns:
        {"train": images, "val": images, "train_identities": n, "val_identities": n, "tied": identities kept
        together because they share a photo} (identity counts 0 for a flat folder).
    """
    _check_split_options(val_fraction, val_identities)
    identities, images = scan_root(root)
    out = check_out(out, root)
    rng = random.Random(seed)
    counts = {"train_identities": 0, "val_identities": 0, "tied": 0}
    if identities is None:
        if val_identities is not None:
            raise InpaintError(f"ROOT {root}: --val-identities needs identity folders; this folder is flat")
        shuffled = list(images)
        rng.shuffle(shuffled)
        cut = round(len(shuffled) * (DEFAULT_VAL_FRACTION if val_fraction is None else val_fraction))
        val, train = shuffled[:cut], shuffled[cut:]
    else:
        if val_identities is not None and val_identities >= len(identities):
            raise InpaintError(
                f"--val-identities {val_identities}: ROOT has only {len(identities)} identities; leave some to train"
            )
        groups = identity_groups(identities)
        fraction = DEFAULT_VAL_FRACTION if val_fraction is None and val_identities is None else val_fraction
        sizes = {identity: len(paths) for identity, paths in identities.items()}
        chosen = pick_validation(groups, sizes, rng, val_identities, fraction)
        val = [path for identity in sorted(chosen) for path in identities[identity]]
        train = [path for identity in sorted(identities) if identity not in chosen for path in identities[identity]]
        rng.shuffle(train)
        rng.shuffle(val)
        counts.update(
            train_identities=len(identities) - len(chosen),
            val_identities=len(chosen),
            tied=sum(len(group) for group in groups if len(group) > 1),
        )

    def line(path: Path) -> str:
        return os.path.relpath(path.resolve(), out.resolve()) if relative else str(path.resolve())

    write_lines(out / "train.flist", [line(path) for path in train])
    write_lines(out / "val.flist", [line(path) for path in val])
    return {"train": len(train), "val": len(val), **counts}


def split_identity(count: int, real: float, masked: float) -> tuple[int, int]:
    """(real, masked) image counts of an identity with `count` photos; the rest (at least one) are references.

    The seed's script takes floor(count * 0.4) for each; each part gets at least one photo here.
    """
    real_count = max(1, int(count * real + 1e-9))
    masked_count = max(1, int(count * masked + 1e-9))
    while real_count + masked_count > count - 1:  # keep a reference
        if masked_count >= real_count and masked_count > 1:
            masked_count -= 1
        elif real_count > 1:
            real_count -= 1
        else:
            break
    return real_count, masked_count


class _Placer:
    """Puts a copy of a file in the output: a hard link where the filesystem allows, else an atomic copy."""

    def __init__(self) -> None:
        self.linked = self.copied = 0
        self.can_link = True

    def place(self, source: Path, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        if self.can_link:
            try:
                os.link(source, target)
                self.linked += 1
                return
            except OSError:
                self.can_link = False  # another filesystem, or links not allowed: copy from now on
        try:
            with atomic_write(target) as stream, open(source, "rb") as original:
                shutil.copyfileobj(original, stream)
        except OSError as error:
            raise InpaintError(f"output {target}: cannot write it ({error.strerror or error})") from None
        self.copied += 1


def _write_zip(out: Path) -> None:
    """OUT/data.zip holding OUT's tree (images stored as they are: JPEG/PNG do not compress further)."""
    try:
        with atomic_write(out / "data.zip") as stream, zipfile.ZipFile(stream, "w") as archive:
            for path in sorted(out.rglob("*")):
                name = path.relative_to(out).as_posix()
                if path.is_file() and not path.name.startswith("."):
                    compression = zipfile.ZIP_STORED if is_image_name(name) else zipfile.ZIP_DEFLATED
                    archive.write(path, name, compress_type=compression)
    except OSError as error:
        raise InpaintError(f"output {out / 'data.zip'}: cannot write it ({error.strerror or error})") from None


def _place_identity(root, identity: str, paths: list[Path], fractions, split_dir: Path, placer, lists) -> None:
    """One identity's sorted photos into SPLIT/real, masked and reference (`fractions` = (real, masked), the rest
    to reference), their lines appended to `lists` ("identity/file" for real and masked, "identity:a,b" for
    references)."""
    base = Path(root) / identity
    real_count, masked_count = split_identity(len(paths), *fractions)
    parts = {
        "real": paths[:real_count],
        "masked": paths[real_count : real_count + masked_count],
        "reference": paths[real_count + masked_count :],
    }
    for kind, kind_paths in parts.items():
        names = [path.relative_to(base).as_posix() for path in kind_paths]
        for path, name in zip(kind_paths, names, strict=True):
            placer.place(path, split_dir / kind / identity / name)
        if kind == "reference":
            lists[kind].append(f"{identity}:{','.join(names)}")
        else:
            lists[kind] += [f"{identity}/{name}" for name in names]


def make_twoface(
    root: str | os.PathLike,
    out: str | os.PathLike,
    real: float = 0.4,
    masked: float = 0.4,
    val_identities: int | None = None,
    seed: int = 0,
    make_zip: bool = False,
) -> dict[str, int]:
    """Write the Two-Face seed's layout from identity folders.

    Per identity, its sorted photos go first to `real/` (a `real` fraction), then `masked/` (a `masked`
    fraction), the rest to `reference/`, under OUT/train/ and OUT/validation/ (hard links where possible, else
    copies). Each split gets `masked-files.txt` and `real-files.txt` (`identity/file` per line, shuffled) and
    `reference-files.txt` (`identity:a.jpg,b.jpg` per identity). Identities with fewer than 3 photos are skipped.

    Args:
        root: identity folders `ROOT/<identity>/<image>` (read only).
        out: new or empty folder.
        real, masked: fractions of each identity's photos for `real/` and `masked/`.
        val_identities: identities for validation; default 10% of the usable ones (at least 1).
        seed: seed for the validation choice and the list order.
        make_zip: also write OUT/data.zip holding the same tree, for in-memory loading.

    Returns:
        Counts: {"<split>_identities", "<split>_real", "<split>_masked", "<split>_reference", "skipped",
        "tied", "linked", "copied"}.
    """
    if not (0 < real < 1 and 0 < masked < 1 and real + masked < 1):
        raise InpaintError(f"--real {real} --masked {masked}: each must be in (0, 1) with a sum below 1")
    _check_split_options(None, val_identities)
    identities, _ = scan_root(root)
    if identities is None:
        raise InpaintError(f"ROOT {root}: Two-Face data needs identity folders (ROOT/<identity>/<image>)")
    usable = {identity: paths for identity, paths in identities.items() if len(paths) >= 3}
    if not usable:
        raise InpaintError(f"ROOT {root}: no identity has the 3 photos needed (real, masked, reference)")
    if val_identities is None:
        val_identities = max(1, round(DEFAULT_VAL_FRACTION * len(usable))) if len(usable) > 1 else 0
    if val_identities >= len(usable):
        raise InpaintError(
            f"--val-identities {val_identities}: only {len(usable)} identities have 3 or more photos; "
            "leave some to train"
        )
    out = check_out(out, root)
    rng = random.Random(seed)
    groups = identity_groups(usable)
    chosen = pick_validation(
        groups, {identity: len(paths) for identity, paths in usable.items()}, rng, val_identities, None
    )
    counts = {"skipped": len(identities) - len(usable), "tied": sum(len(group) for group in groups if len(group) > 1)}
    placer = _Placer()
    for split in ("train", "validation"):
        members = sorted(identity for identity in usable if (identity in chosen) == (split == "validation"))
        lists: dict[str, list[str]] = {"real": [], "masked": [], "reference": []}
        for identity in members:
            _place_identity(root, identity, usable[identity], (real, masked), out / split, placer, lists)
        for kind in ("real", "masked"):
            rng.shuffle(lists[kind])  # the seed shuffles these lists (`shuf`); references stay by identity
        for kind, lines in lists.items():
            write_lines(out / split / LIST_FILES[kind], lines)
        counts[f"{split}_identities"] = len(members)
        for kind in ("real", "masked"):
            counts[f"{split}_{kind}"] = len(lists[kind])
        counts[f"{split}_reference"] = sum(len(usable[identity]) for identity in members) - sum(
            counts[f"{split}_{kind}"] for kind in ("real", "masked")
        )
    if make_zip:
        _write_zip(out)
    return {**counts, "linked": placer.linked, "copied": placer.copied}
