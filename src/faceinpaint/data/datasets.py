"""Training datasets: face photos from a file list, a folder, a zip or a folder of zip parts, and the Two-Face layout.

Every item is float (3, R, R) RGB in [-1, 1]: the shorter side resized to R, then centre-cropped, then (when
`flip`) mirrored left-right with probability 1/2. Masks are not made here (see `data/masks.py`). Zips are read into
memory once so that workers never reopen them; a file that fails to decode raises an InpaintError naming it.
"""

import io
import os
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from faceinpaint.errors import InpaintError
from faceinpaint.images import IMAGE_EXTENSIONS

SPLITS = ("train", "validation")
KINDS = ("masked", "real", "reference")  # the seed's three folders per split
LIST_FILES = {"masked": "masked-files.txt", "real": "real-files.txt", "reference": "reference-files.txt"}


def is_image_name(name: str) -> bool:
    """True for a visible file with an image extension (hidden files are temporaries or OS clutter)."""
    base = name.rsplit("/", 1)[-1]
    return not base.startswith(".") and os.path.splitext(base)[1].lower() in IMAGE_EXTENSIONS


def find_images(folder: str | os.PathLike) -> list[Path]:
    """All image files under `folder`, recursively, sorted by path."""
    found = []
    for directory, subdirectories, files in os.walk(folder):
        subdirectories[:] = [name for name in subdirectories if not name.startswith(".")]
        found += [Path(directory, name) for name in files if is_image_name(name)]
    return sorted(found)


def find_zips(folder: str | os.PathLike) -> list[Path]:
    """All visible .zip files under `folder`, recursively, sorted by path (e.g. scripts/pack_faces.py's parts)."""
    found = []
    for directory, subdirectories, files in os.walk(folder):
        subdirectories[:] = [name for name in subdirectories if not name.startswith(".")]
        found += [Path(directory, name) for name in files if name.lower().endswith(".zip") and name[0] != "."]
    return sorted(found)


def read_zip(path: str | os.PathLike) -> dict[str, bytes]:
    """Every file of a zip as {member name: bytes}, read once (folders and hidden files left out)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return {
                info.filename: archive.read(info)
                for info in archive.infolist()
                if not info.is_dir() and not info.filename.rsplit("/", 1)[-1].startswith(".")
            }
    except (OSError, zipfile.BadZipFile) as error:
        raise InpaintError(f"zip {path}: cannot read it ({error})") from None


def decode_image(data: bytes, name: str, resolution: int) -> np.ndarray:
    """Encoded image bytes -> (R, R, 3) uint8 RGB: shorter side resized to R (bicubic), then centre-cropped."""
    try:
        with Image.open(io.BytesIO(data)) as opened:
            image = opened.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise InpaintError(f"image {name}: cannot decode it ({error})") from None
    width, height = image.size
    scale = resolution / min(width, height)
    size = (max(resolution, round(width * scale)), max(resolution, round(height * scale)))
    if size != image.size:
        image = image.resize(size, Image.Resampling.BICUBIC)
    left, top = (size[0] - resolution) // 2, (size[1] - resolution) // 2
    return np.array(image.crop((left, top, left + resolution, top + resolution)))  # writable, for torch


def to_tensor(pixels: np.ndarray, flip: bool) -> torch.Tensor:
    """(R, R, 3) uint8 -> (3, R, R) float in [-1, 1], mirrored left-right with probability 1/2 when `flip`."""
    image = torch.from_numpy(pixels).permute(2, 0, 1).float() / 127.5 - 1.0
    # torch's global generator: DataLoader seeds it differently in every worker.
    if flip and torch.rand(()) < 0.5:
        image = image.flip(-1)
    return image


def _check_resolution(resolution: int) -> int:
    if not isinstance(resolution, int) or resolution < 1:
        raise InpaintError(f"resolution {resolution!r}: must be a positive integer")
    return resolution


def open_image_source(source: str | os.PathLike) -> tuple[list[str], Callable[[str], bytes]]:
    """A .flist file, a folder (of images, or of .zip parts) or a .zip -> (image names, function reading bytes).

    Flist lines are paths, absolute or relative to the flist's folder (blank lines and `#` comments skipped). A
    folder gives its images (recursively); a folder holding no images but .zip files (parts, as written by
    scripts/pack_faces.py) gives the images of every zip, named `<zip path>/<member>`, so that the parent folder
    (the identity) is the member's folder, as for a single zip or for files.
    """
    source = Path(source)
    if source.is_dir():
        images = find_images(source)
        parts = [] if images else find_zips(source)
        if not parts:
            return [str(path) for path in images], _read_file
        members = {str(part / name): data for part in parts for name, data in read_zip(part).items()}
        return sorted(name for name in members if is_image_name(name)), members.__getitem__
    if not source.is_file():
        raise InpaintError(f"data source {source}: no such file or folder")
    if source.suffix.lower() == ".zip":
        members = read_zip(source)
        names = sorted(name for name in members if is_image_name(name))
        return names, lambda name: members[name]
    return [str(source.parent / entry) for entry in read_file_list(source)], _read_file


def read_file_list(path: str | os.PathLike) -> list[str]:
    """The entries of a file list (.flist): one path per line, absolute or relative to the list's folder, as
    written; blank lines and lines starting with # are skipped. The one parser of lists (training, evaluation)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise InpaintError(f"file list {path}: cannot read it ({error})") from None
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def match_by_key(keys: list[str], found: dict[str, Path]) -> list[Path | None]:
    """For each key ("07450/003"), the path of `found` under the same key, else under the same last part ("003"),
    else None: how masks and references are matched to images."""
    by_name = {Path(key).name: path for key, path in found.items()}
    return [found.get(key) or by_name.get(Path(key).name) for key in keys]


def _read_file(name: str) -> bytes:
    try:
        return Path(name).read_bytes()
    except OSError as error:
        raise InpaintError(f"image {name}: cannot read it ({error.strerror or error})") from None


class FileListDataset(Dataset):
    """Face photos for DeepFillv2-style training: float (3, R, R) in [-1, 1] per item.

    Args:
        source: a `.flist` file (one path per line, absolute or relative to its folder), a folder (searched
            recursively) or a `.zip` (read into memory once).
        resolution: output side R; the shorter side is resized to R and the centre cropped.
        flip: mirror left-right with probability 1/2 (torch's global generator).
    """

    def __init__(self, source: str | os.PathLike, resolution: int, flip: bool = True) -> None:
        self.resolution = _check_resolution(resolution)
        self.flip = flip
        self.files, self.read = open_image_source(source)
        if not self.files:
            raise InpaintError(f"data source {source}: no images found")

    def __len__(self) -> int:
        return len(self.files)

    def load_uint8(self, index: int) -> np.ndarray:
        """Item `index` as (R, R, 3) uint8, before flipping."""
        name = self.files[index]
        return decode_image(self.read(name), name, self.resolution)

    def __getitem__(self, index: int) -> torch.Tensor:
        return to_tensor(self.load_uint8(index), self.flip)


class _TwoFaceStore:
    """Read access to a Two-Face dataset dir or its zip, with names relative to the dataset root."""

    def __init__(self, root: Path) -> None:
        self.where = str(root)
        if root.is_dir():
            self.root, self.members = root, None
        elif root.is_file() and root.suffix.lower() == ".zip":
            members = read_zip(root)
            # A zip made from the dataset's parent folder holds `<name>/train/...`: strip that prefix.
            prefix = min((name.split("train/masked/")[0] for name in members if "train/masked/" in name), default="")
            prefix = prefix if prefix.endswith("/") or not prefix else ""
            self.root, self.members = None, {name[len(prefix) :]: data for name, data in members.items()}
        else:
            raise InpaintError(f"Two-Face data {root}: no such folder or .zip file")

    def exists(self, name: str) -> bool:
        return (self.root / name).is_file() if self.members is None else name in self.members

    def read(self, name: str) -> bytes:
        if self.members is not None:
            return self.members[name]
        return _read_file(str(self.root / name))

    def text(self, name: str) -> list[str] | None:
        """The non-blank lines of a text file, or None when it is not there."""
        if not self.exists(name):
            return None
        return [line.strip() for line in self.read(name).decode("utf-8").splitlines() if line.strip()]

    def scan(self, folder: str) -> list[str]:
        """`identity/file` for every image under `folder/<identity>/`, sorted."""
        if self.members is None:
            base = self.root / folder
            return [path.relative_to(base).as_posix() for path in find_images(base) if path.parent != base]
        start = folder + "/"
        return sorted(
            name[len(start) :] for name in self.members if name.startswith(start) and "/" in name[len(start) :]
        )


def _list_lines(store: _TwoFaceStore, split: str, kind: str) -> tuple[list[str], str] | None:
    """The lines of a kind's list and where they came from, from the first place the seed's tools put it."""
    for name in (f"{split}/{LIST_FILES[kind]}", f"{split}/{kind}/{LIST_FILES[kind]}", LIST_FILES[kind]):
        lines = store.text(name)
        if lines is None:
            continue
        if name == LIST_FILES[kind]:
            # The seed keeps one set of lists at the root; use it only for the split whose files it names.
            entries = lines
            if kind == "reference":
                entries = [
                    f"{line.partition(':')[0]}/{file}" for line in lines for file in line.partition(":")[2].split(",")
                ]
            if not all(store.exists(f"{split}/{kind}/{entry.strip()}") for entry in entries):
                continue
        return lines, name
    return None


def read_twoface_lists(store: _TwoFaceStore, split: str) -> tuple[list[str], list[str], dict[str, list[str]]]:
    """(masked `identity/file` list, real list, {identity: reference file names}) of one split.

    Lists are taken from `split/`, then `split/<kind>/`, then the dataset root (the seed's places); without a
    list the split's folders are scanned, so a layout made by hand or by the seed's scripts loads as it is.
    """
    files = {}
    for kind in ("masked", "real"):
        found = _list_lines(store, split, kind)
        lines, where = found if found else (store.scan(f"{split}/{kind}"), f"{split}/{kind}/")
        for number, line in enumerate(lines, 1):
            if "/" not in line:
                raise InpaintError(f"{store.where}: {where} line {number}: {line!r} is not `identity/file`")
        files[kind] = lines
    references: dict[str, list[str]] = {}
    found = _list_lines(store, split, "reference")
    if found:
        lines, where = found
        for number, line in enumerate(lines, 1):
            identity, colon, names = line.partition(":")
            if not colon or not identity:
                raise InpaintError(f"{store.where}: {where} line {number}: {line!r} is not `identity:a.jpg,b.jpg`")
            references[identity] = [name.strip() for name in names.split(",") if name.strip()]
    else:
        for entry in store.scan(f"{split}/reference"):
            identity, _, name = entry.partition("/")
            references.setdefault(identity, []).append(name)
    return files["masked"], files["real"], references


class TwoFaceDataset(Dataset):
    """Reference-guided training data in the Two-Face seed layout (`<split>/{masked,real,reference}/<identity>/`).

    Item i is {"image": masked-folder photo i (to be masked), "reference": a random reference-folder photo of the
    same person (a different file by construction), "real": a random real-folder photo (for the discriminator)},
    each float (3, R, R) in [-1, 1].

    Args:
        root: the dataset dir (holding `train/`, `validation/` and the lists) or its `data.zip` (read into memory).
        split: "train" or "validation".
        resolution: output side R (shorter side resized, centre cropped).
        flip: mirror each of the three images left-right with probability 1/2, independently.
    """

    def __init__(self, root: str | os.PathLike, split: str = "train", resolution: int = 128, flip: bool = True):
        if split not in SPLITS:
            raise InpaintError(f"split {split!r}: use one of {SPLITS}")
        self.resolution = _check_resolution(resolution)
        self.split, self.flip = split, flip
        self.store = _TwoFaceStore(Path(root))
        masked, real, references = read_twoface_lists(self.store, split)
        if not masked or not real:
            raise InpaintError(f"Two-Face data {root}: no {split} images (masked {len(masked)}, real {len(real)})")
        self.masked = [f"{split}/masked/{line}" for line in masked]
        self.real = [f"{split}/real/{line}" for line in real]
        self.references = {
            identity: [f"{split}/reference/{identity}/{name}" for name in names]
            for identity, names in references.items()
            if names
        }
        self.identities = [line.split("/", 1)[0] for line in masked]
        missing = sorted({identity for identity in self.identities if identity not in self.references})
        if missing:
            raise InpaintError(f"Two-Face data {root}: {split} identity {missing[0]} has no reference images")

    def __len__(self) -> int:
        return len(self.masked)

    def files(self) -> tuple[list[str], list[str]]:
        """(every file of the split, the identity of each): masked, real and reference, for the resident mode."""
        names = self.masked + self.real + [name for group in self.references.values() for name in group]
        return names, [name.split("/")[2] for name in names]

    def _load(self, name: str) -> torch.Tensor:
        return to_tensor(decode_image(self.store.read(name), f"{self.store.where}:{name}", self.resolution), self.flip)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        choices = self.references[self.identities[index]]
        reference = choices[int(torch.randint(len(choices), ()))]
        real = self.real[int(torch.randint(len(self.real), ()))]
        return {"image": self._load(self.masked[index]), "reference": self._load(reference), "real": self._load(real)}


def list_key(line: str) -> str:
    """A file list entry's key: "/data/celeba/07450/1.jpg" -> "data/celeba/07450/1", "../x/2.png" -> "x/2"."""
    path = Path(line).with_suffix("")
    return "/".join(part for part in path.parts[1 if path.is_absolute() else 0 :] if part not in (".", ".."))


def list_images(source: str | Path) -> dict[str, Path]:
    """Images keyed by their path relative to the folder, without extension ("07450/003"), sorted.

    `source` is a folder (searched recursively) or a file list: one image path per line, relative to the list's
    folder or absolute; blank lines and lines starting with # are skipped. A listed path's key is the path itself
    without its root and any "." or ".." part, so outputs named by key always land inside the output folder.
    """
    source = Path(source)
    if source.is_dir():
        found = {str(p.relative_to(source).with_suffix("")): p for p in find_images(source)}
    elif source.is_file():
        found = {list_key(line): source.parent / line for line in read_file_list(source)}
    else:
        raise InpaintError(f"--images {source}: no such folder or file list")
    if not found:
        raise InpaintError(f"--images {source}: no image files found")
    return dict(sorted(found.items()))
