"""The `faceinpaint data ...` commands: file lists, Two-Face splits, fixed mask sets, face alignment."""

import argparse
from pathlib import Path

from faceinpaint.cli.options import add_face_model_options
from faceinpaint.errors import InpaintError


def cmd_data_flist(args: argparse.Namespace) -> int:
    from faceinpaint.data.lists import make_file_lists

    counts = make_file_lists(args.root, args.out, args.val_fraction, args.val_identities, args.seed, args.relative)
    for split in ("train", "val"):
        people = f", {counts[f'{split}_identities']} identities" if counts["train_identities"] else ""
        print(f"wrote {args.out / f'{split}.flist'}: {counts[split]} images{people}")
    if counts["tied"]:
        print(f"kept {counts['tied']} identities that share identical photos on the same side")
    return 0


def cmd_data_twoface(args: argparse.Namespace) -> int:
    from faceinpaint.data.lists import make_twoface

    counts = make_twoface(args.root, args.out, args.real, args.masked, args.val_identities, args.seed, args.zip)
    for split in ("train", "validation"):
        print(
            f"{split}: {counts[f'{split}_identities']} identities, {counts[f'{split}_real']} real, "
            f"{counts[f'{split}_masked']} masked, {counts[f'{split}_reference']} reference"
        )
    print(f"skipped {counts['skipped']} identities with fewer than 3 photos")
    print(f"wrote {args.out} ({counts['linked']} files hard-linked, {counts['copied']} copied)")
    return 0


def cmd_data_masks(args: argparse.Namespace) -> int:
    import csv

    from faceinpaint.data.masks import write_mask_set

    out = write_mask_set(args.kind, args.count, args.size, args.seed, args.out)
    with open(out / "masks.csv", newline="") as stream:
        ratios = [float(row["hole_ratio"]) for row in csv.DictReader(stream)]
    print(
        f"wrote {len(ratios)} {args.kind} masks of {args.size}x{args.size} to {out} "
        f"(mean hole ratio {sum(ratios) / len(ratios):.3f}; per mask in {out / 'masks.csv'})"
    )
    return 0


def cmd_data_align(args: argparse.Namespace) -> int:
    from faceinpaint.faces.align import FAILURES_FILE, align_folder

    report = align_folder(args.src, args.dst, args.size, args.workers, args.detector, args.landmarks)
    kept = f", {report.already_there} already there" if report.already_there else ""
    print(f"aligned {report.aligned} of {report.total} images into {args.dst}{kept}")
    if report.failures:
        print(f"{len(report.failures)} not aligned (no face found, or unreadable): see {args.dst / FAILURES_FILE}")
    if report.failures and not report.aligned and not report.already_there:
        raise InpaintError(f"no image under {args.src} could be aligned")
    return 0


def add_data_commands(commands, formatter) -> None:
    """Add the `data` command group and its sub-commands to the top-level sub-parsers."""
    data = commands.add_parser(
        "data",
        help="prepare training and evaluation data (file lists, splits, mask sets)",
        description="Prepare training and evaluation data.",
        epilog="example:\n  faceinpaint data masks --kind deepfill --count 100 --size 256 --seed 0 --out masks/",
        formatter_class=formatter,
    )
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")
    flist = data_commands.add_parser(
        "flist",
        help="write train.flist / val.flist from a folder of face photos",
        description="Write OUT/train.flist and OUT/val.flist: every image under ROOT exactly once, shuffled with "
        "the seed. Identity folders (ROOT/<identity>/<image>) are split by person, keeping identities that share "
        "a byte-identical photo together; a flat folder is split by image. ROOT is never modified; OUT must be "
        "new or empty.",
        epilog="example:\n  faceinpaint data flist data/faces/celeba-id-256 --out lists/ --val-identities 27",
        formatter_class=formatter,
    )
    flist.add_argument("root", type=Path, metavar="ROOT", help="identity folders or a flat folder of images")
    flist.add_argument("--out", type=Path, required=True, help="new or empty output folder")
    flist_split = flist.add_mutually_exclusive_group()
    flist_split.add_argument("--val-fraction", type=float, help="share of images for validation (default 0.1)")
    flist_split.add_argument("--val-identities", type=int, metavar="N", help="number of validation identities")
    flist.add_argument("--seed", type=int, default=0, help="shuffling seed (default 0)")
    flist.add_argument("--relative", action="store_true", help="write paths relative to OUT (default: absolute)")
    flist.set_defaults(func=cmd_data_flist)

    twoface = data_commands.add_parser(
        "twoface",
        help="write the Two-Face seed's real/masked/reference layout and lists",
        description="Split each identity's sorted photos into real (first 40%), masked (next 40%) and "
        "reference (the rest) under OUT/train/ and OUT/validation/ (hard links where possible, else copies), "
        "with masked-files.txt, real-files.txt and reference-files.txt per split. Identities with fewer than 3 "
        "photos are skipped. ROOT is never modified; OUT must be new or empty.",
        epilog="example:\n  faceinpaint data twoface faces/celeba-id-256 --out twoface/ --val-identities 27 --zip",
        formatter_class=formatter,
    )
    twoface.add_argument("root", type=Path, metavar="ROOT", help="identity folders ROOT/<identity>/<image>")
    twoface.add_argument("--out", type=Path, required=True, help="new or empty output folder")
    twoface.add_argument("--real", type=float, default=0.4, help="share of each identity's photos for real/")
    twoface.add_argument("--masked", type=float, default=0.4, help="share of each identity's photos for masked/")
    twoface.add_argument("--val-identities", type=int, metavar="N", help="validation identities (default 10%%)")
    twoface.add_argument("--seed", type=int, default=0, help="seed for the validation choice and list order")
    twoface.add_argument("--zip", action="store_true", help="also write OUT/data.zip holding the same tree")
    twoface.set_defaults(func=cmd_data_twoface)
    align = data_commands.add_parser(
        "align",
        help="align the faces of a folder of photos into training data",
        description="Align the largest face of every photo under SRC the FFHQ way (quad from the eyes and mouth, "
        "reflect padding, Lanczos to SIZE) into DST, keeping sub-folders (identities) and file names. Photos "
        "already in DST are kept, so an interrupted run resumes; photos without a face are listed in "
        "DST/failures.txt. Needs faceinpaint[faces].",
        epilog="example:\n  faceinpaint data align photos/ faces-256/ --size 256 --workers 2",
        formatter_class=formatter,
    )
    align.add_argument("src", type=Path, metavar="SRC", help="folder of photos, any depth (e.g. SRC/<identity>/)")
    align.add_argument("dst", type=Path, metavar="DST", help="output folder (not inside SRC)")
    align.add_argument("--size", type=int, default=256, help="side of the aligned crops (default 256)")
    align.add_argument("--workers", type=int, default=1, metavar="N", help="processes (default 1)")
    add_face_model_options(align)
    align.set_defaults(func=cmd_data_align)
    mask_set = data_commands.add_parser(
        "masks",
        help="write a reproducible set of random hole masks (DeepFillv2, LaMa, centre square)",
        description="Write COUNT random masks as OUT/00000.png ... (grey, 255 = hole) and OUT/masks.csv "
        "(file,hole_ratio). Mask i depends only on kind, size, seed and i: the same command gives the same bits on "
        "any machine, and a smaller COUNT gives a prefix of the set. Kinds: deepfill (DeepFillv2's training masks, "
        "box + brush strokes), lama-thin, lama-medium, lama-thick (LaMa's evaluation protocols, at most 50% hole), "
        "center (a centred square of side SIZE/4, as in Two-Face). OUT must be new or empty.",
        epilog="example:\n  faceinpaint data masks --kind lama-thick --count 2000 --size 256 --seed 0 --out thick/",
        formatter_class=formatter,
    )
    mask_set.add_argument("--kind", required=True, help="deepfill, lama-thin, lama-medium, lama-thick or center")
    mask_set.add_argument("--count", type=int, required=True, help="number of masks")
    mask_set.add_argument("--size", type=int, default=256, help="side in pixels, a multiple of 8 (default 256)")
    mask_set.add_argument("--seed", type=int, default=0, help="seed of the set (default 0)")
    mask_set.add_argument("--out", type=Path, required=True, help="new or empty output folder")
    mask_set.set_defaults(func=cmd_data_masks)
