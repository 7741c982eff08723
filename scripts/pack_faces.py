"""Pack training faces into small zip parts for a lent GPU: decoded at 128 or 256 px, re-encoded, N MiB a part.

A call to the GPU machine carries at most 64 MiB with the repo, so the faces travel as parts: uncompressed (stored)
zips of JPEG or WebP bytes that `faceinpaint train` reads as they are (`data.train: <folder of parts>`, see
faceinpaint.data.datasets.open_image_source). Each image is decoded by faceinpaint's decoder at --size (shorter side
resized, centre crop: what training would do) and re-encoded once. Every K-th listed image is taken (--every), then
they are shuffled with --seed and cut to --limit and into parts, so --limit and the first k parts are uniform
samples of the set. A member keeps the image's path from the set's root (`celeba-id-256/07201/000123.webp`): its
folder is the identity, as for files (a reference-guided model finds the same person's other photos by it).

Measured on 600 of the training faces (PSNR against the decoded pixels; decoding one image, one thread):
  128 px  JPEG q90 4.9 KiB, 209 faces/MiB, 39.3 dB, 0.26 ms | WebP q90 3.8 KiB, 267 faces/MiB, 40.0 dB, 0.52 ms
  256 px  JPEG q90 13.6 KiB, 75 faces/MiB, 59.5 dB, 0.60 ms | WebP q90 9.7 KiB, 106 faces/MiB, 42.2 dB, 1.27 ms
At 128 WebP carries 28% more faces at the same fidelity; at 256 the sources are JPEG q90 at 256 already, so a JPEG
re-encode is near-lossless (59 dB) and WebP would add loss. Zip headers add about 0.1 KiB per face.

Run: python scripts/pack_faces.py [--list data/lists/train.flist] [--size 128] [--out data/packed/128/train]
       [--format jpeg|webp] [--quality 90] [--part-mib 20] [--every K] [--limit N] [--max-parts P] [--force]
"""

import argparse
import hashlib
import io
import json
import os
import random
import re
import subprocess
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePath, PurePosixPath

from PIL import Image, features

from faceinpaint.atomic import atomic_write
from faceinpaint.data.datasets import decode_image, open_image_source
from faceinpaint.errors import InpaintError

FORMATS = {"jpeg": ("JPEG", ".jpg", {"optimize": True}), "webp": ("WEBP", ".webp", {"method": 4})}
PART_NAME = re.compile(r"part-(\d{3,})\.zip$")
MANIFEST = "manifest.json"
FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # the same images give the same bytes
ZIP_END = 22  # end-of-central-directory record


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str):
        print(f"pack_faces: {message}", file=sys.stderr)
        sys.exit(2)


def entry_bytes(member: str, data: bytes) -> int:
    """A stored member's share of the zip: local header, name, data, central directory record, name."""
    return 30 + 46 + 2 * len(member.encode()) + len(data)


def member_names(names: list[str], suffix: str) -> list[str]:
    """Paths relative to the images' common root, kept at least `identity/file` deep, with the new suffix."""
    paths = [PurePath(name) for name in names]
    try:
        root = PurePath(os.path.commonpath([str(path.parent.parent) for path in paths]))
        members = [path.relative_to(root).with_suffix(suffix).as_posix() for path in paths]
    except ValueError:  # relative and absolute names mixed: keep the folder and the file
        members = [PurePosixPath(path.parent.name, path.name).with_suffix(suffix).as_posix() for path in paths]
    if len(set(members)) != len(members):
        duplicate = next(member for member in members if members.count(member) > 1)
        raise InpaintError(f"two images would both be stored as {duplicate} (same folder and stem)")
    return members


def check_out(out: Path) -> None:
    """Refuse a folder holding anything but parts (the loader reads every zip under it) or one git would commit."""
    if out.is_dir():
        foreign = [p.name for p in out.iterdir() if not (PART_NAME.fullmatch(p.name) or p.name == MANIFEST)]
        if foreign:
            raise InpaintError(f"--out {out} holds other files ({foreign[0]}); give an empty or a parts folder")
    elif out.exists():
        raise InpaintError(f"--out {out} is a file; give a folder")
    anchor = next(parent for parent in [out, *out.parents] if parent.is_dir())
    try:
        status = subprocess.run(["git", "-C", str(anchor), "check-ignore", "-q", str(out.resolve())],
                                capture_output=True).returncode  # fmt: skip
    except OSError:
        return
    if status == 1:  # inside a work tree and not ignored (128: not a git work tree)
        raise InpaintError(f"--out {out} is not ignored by git: face photos must never be committed (use data/)")


def up_to_date(out: Path, settings: dict) -> dict | None:
    """The manifest of an earlier pack with the same settings whose parts are all there, else None."""
    try:
        manifest = json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if manifest.get("settings") != settings:
        return None
    for part in manifest["parts"]:
        path = out / part["file"]
        if not path.is_file() or path.stat().st_size != part["bytes"]:
            return None
    return manifest


def write_part(path: Path, entries: list[tuple[str, bytes]]) -> dict:
    with atomic_write(path) as stream, zipfile.ZipFile(stream, "w", zipfile.ZIP_STORED) as archive:
        for member, data in entries:
            archive.writestr(zipfile.ZipInfo(member, date_time=FIXED_TIME), data)
    identities = {PurePosixPath(member).parent.as_posix() for member, _ in entries}
    return {"file": path.name, "images": len(entries), "identities": len(identities), "bytes": path.stat().st_size}


def pack(args: argparse.Namespace, settings: dict) -> dict:
    """Encode the chosen images and write them into parts of at most --part-mib MiB; returns the manifest."""
    image_format, suffix, options = FORMATS[args.format]
    names, read = open_image_source(args.list)
    chosen = names[:: args.every]
    random.Random(args.seed).shuffle(chosen)  # so --limit, like any first parts, takes a uniform sample
    chosen = chosen[: args.limit or None]
    if not chosen:
        raise InpaintError(f"--list {args.list}: no images to pack")
    members = member_names(chosen, suffix)
    limit = int(args.part_mib * 2**20)

    def encode(name: str) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(decode_image(read(name), name, args.size)).save(
            buffer, format=image_format, quality=args.quality, **options
        )
        return buffer.getvalue()

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / MANIFEST).unlink(missing_ok=True)  # an interrupted repack must not look finished
    parts, entries, size = [], [], ZIP_END
    with ThreadPoolExecutor(max(1, args.workers)) as pool:
        for member, data in zip(members, pool.map(encode, chosen), strict=True):
            cost = entry_bytes(member, data)
            if ZIP_END + cost > limit:
                raise InpaintError(f"{member}: {cost} bytes alone exceed --part-mib {args.part_mib}")
            if size + cost > limit:
                parts.append(write_part(args.out / f"part-{len(parts):03d}.zip", entries))
                entries, size = [], ZIP_END
                if len(parts) == args.max_parts:
                    pool.shutdown(cancel_futures=True)
                    break
            entries.append((member, data))
            size += cost
        else:
            parts.append(write_part(args.out / f"part-{len(parts):03d}.zip", entries))
    for path in args.out.iterdir():  # parts of an earlier, larger pack
        match = PART_NAME.fullmatch(path.name)
        if match and int(match.group(1)) >= len(parts):
            path.unlink()
    manifest = {"settings": settings, "listed": len(names), "chosen": len(chosen),
                "images": sum(part["images"] for part in parts), "parts": parts}  # fmt: skip
    with atomic_write(args.out / MANIFEST) as stream:
        stream.write(json.dumps(manifest, indent=1).encode())
    return manifest


def main() -> int:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--list", type=Path, default=Path("data/lists/train.flist"), help="flist, folder or zip")
    parser.add_argument("--size", type=int, default=128, help="side in pixels (128 or 256; any multiple of 8)")
    parser.add_argument("--out", type=Path, help="parts folder (default data/packed/<size>/<list stem>)")
    parser.add_argument("--format", choices=sorted(FORMATS), default="jpeg")
    parser.add_argument("--quality", type=int, default=90)
    parser.add_argument("--part-mib", type=float, default=20.0, help="largest part in MiB (default 20)")
    parser.add_argument("--every", type=int, default=1, help="take every K-th listed image (default 1)")
    parser.add_argument("--limit", type=int, default=0, help="then N of them, drawn by --seed (default 0: all)")
    parser.add_argument("--max-parts", type=int, default=0, help="stop after P full parts (default 0: no limit)")
    parser.add_argument("--seed", type=int, default=0, help="shuffle before cutting into parts (default 0)")
    parser.add_argument("--workers", type=int, default=2, help="encoding threads (default 2)")
    parser.add_argument("--force", action="store_true", help="pack again even when the parts are up to date")
    args = parser.parse_args()
    args.out = args.out or Path("data/packed") / str(args.size) / args.list.stem
    try:
        if args.size < 8 or args.size % 8:
            raise InpaintError(f"--size {args.size}: must be a multiple of 8 (128 or 256)")
        if not 1 <= args.quality <= 100 or args.every < 1 or min(args.limit, args.max_parts, args.workers) < 0:
            raise InpaintError("--quality must be 1-100, --every at least 1, --limit / --max-parts / --workers >= 0")
        if args.part_mib <= 0:
            raise InpaintError(f"--part-mib {args.part_mib}: must be above 0")
        if args.format == "webp" and not features.check("webp"):
            raise InpaintError("this Pillow cannot write WebP; use --format jpeg")
        check_out(args.out)
        settings = {key: getattr(args, key) for key in ("size", "format", "quality", "part_mib", "every", "limit",
                                                        "max_parts", "seed")}  # fmt: skip
        settings["list"] = str(args.list.resolve())
        if args.list.is_file():  # a changed list (face_lists.py run again) makes a new pack
            settings["list_sha256"] = hashlib.sha256(args.list.read_bytes()).hexdigest()
        manifest = None if args.force else up_to_date(args.out, settings)
        fresh = manifest is None
        manifest = manifest or pack(args, settings)
    except (InpaintError, OSError) as error:
        print(f"pack_faces: {error}", file=sys.stderr)
        return 1
    total = sum(part["bytes"] for part in manifest["parts"]) / 2**20
    for part in manifest["parts"]:
        print(f"{args.out / part['file']}: {part['images']} images, {part['identities']} identities, "
              f"{part['bytes'] / 2**20:.2f} MiB")  # fmt: skip
    left_out = manifest["chosen"] - manifest["images"]
    print(
        f"{'packed' if fresh else 'up to date:'} {manifest['images']} of {manifest['listed']} listed images "
        f"({args.size} px {args.format} q{args.quality}) in {len(manifest['parts'])} part(s), {total:.1f} MiB, "
        f"{manifest['images'] / total:.0f} faces per MiB"
        + (f"; {left_out} chosen images left out by --max-parts" if left_out else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
