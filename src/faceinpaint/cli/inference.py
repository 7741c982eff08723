"""`faceinpaint inpaint`, `models`, `demo` and `mask`: inpainting images and drawing masks from the command line."""

import argparse
import sys
from pathlib import Path

from faceinpaint.cli.options import add_common, add_face_model_options, add_max_pixels
from faceinpaint.errors import InpaintError
from faceinpaint.images import DEFAULT_MAX_PIXELS


def cmd_inpaint(args: argparse.Namespace) -> int:
    from faceinpaint.inference.files import inpaint_paths
    from faceinpaint.inference.shards import current_shard, rank_device
    from faceinpaint.inpainter import Inpainter
    from faceinpaint.weights import best_model

    shard = current_shard()  # rank 0 of 1 unless started by torchrun
    weights = args.weights or best_model(reference=args.reference is not None)
    inpainter = Inpainter.from_pretrained(weights, device=rank_device(args.device, shard))
    inpainter.align, inpainter.face_detector, inpainter.landmarks = args.align, args.detector, args.landmarks
    counts = inpaint_paths(inpainter, args.image, args.mask, args.reference, args.out, args.max_pixels, shard)
    written, failed = sum(done for done, _ in counts), sum(bad for _, bad in counts)
    if shard.world > 1 and shard.rank == 0:
        each = " + ".join(str(done) for done, _ in counts)
        print(f"wrote {written} image(s) to {args.out} on {shard.world} ranks ({each}); {failed} failed")
    if failed and shard.rank == 0:
        print(f"faceinpaint: {failed} image(s) failed; see the messages above", file=sys.stderr)
    return 1 if failed else 0


def add_inpaint(commands, formatter) -> None:
    """The `inpaint` command's parser, with cmd_inpaint as its handler."""
    inpaint = commands.add_parser(
        "inpaint",
        help="inpaint one image or a folder of images",
        description="Inpaint one image, or every image of a folder (masks and references matched by file stem; "
        "a single mask or reference file applies to every image). Mask pixels above 127 (alpha for RGBA) are "
        "holes. Outputs keep the input's file name in folder mode and are written atomically; inputs are never "
        "overwritten. Exit code 1 if any image failed. Under torchrun every rank inpaints its own slice of the "
        "folder (on GPU number LOCAL_RANK where there are GPUs) and rank 0 prints the total.",
        epilog="examples:\n  faceinpaint inpaint --weights telea --image face.png --mask hole.png --out done.png\n"
        "  faceinpaint inpaint --image faces/ --mask masks/ --out results/\n"
        "  torchrun --nproc_per_node 4 -m faceinpaint.cli inpaint --image faces/ --mask masks/ --out results/",
        formatter_class=formatter,
    )
    add_common(inpaint)
    inpaint.add_argument("--image", type=Path, required=True, help="image file or folder")
    inpaint.add_argument("--mask", type=Path, required=True, help="mask file or folder (same size as the image)")
    inpaint.add_argument(
        "--reference", type=Path,
        help="reference photo(s) of the same person, for reference models; without --weights, the default "
        "reference model (`faceinpaint models` marks it +)",
    )  # fmt: skip
    inpaint.add_argument("--out", type=Path, required=True, help="output file, or folder in folder mode")
    add_max_pixels(inpaint, DEFAULT_MAX_PIXELS)
    inpaint.add_argument(
        "--align",
        choices=("auto", "always", "never"),
        default="auto",
        help="align faces in whole photos, inpaint them at the model's resolution and paste them back (auto: "
        "unless the image already is an aligned face crop; needs faceinpaint[faces])",
    )
    add_face_model_options(inpaint)
    inpaint.set_defaults(func=cmd_inpaint)


def cmd_models(args: argparse.Namespace) -> int:
    from faceinpaint.weights import best_model, describe, model_sources

    default, with_reference = best_model(), best_model(reference=True)
    print(f"{'name':<24} {'kind':<10} {'arch':<16} {'resolution':<10} {'source':<20} location")
    for name, (source, path) in model_sources().items():
        if path is None:
            kind, arch, resolution, where = "classical", name, "any", "-"
        else:
            config = describe(path)
            kind, arch, resolution, where = "network", config.get("arch", "?"), config.get("resolution", "?"), path
        mark = " *" if name == default else " +" if name == with_reference else ""
        line = f"{name + mark:<24} {kind:<10} {arch:<16} {resolution!s:<10} {source:<20}"
        print(f"{line} {where}")
    print("* default model (used when --weights is not given)")
    if with_reference != default:
        print("+ default model when a --reference photo is given")
    return 0


def add_models(commands, formatter) -> None:
    """The `models` command's parser, with cmd_models as its handler."""
    models = commands.add_parser(
        "models",
        help="list the models and classical methods that --weights accepts",
        description="List every name --weights accepts and where it comes from: the classical methods (built in), "
        "then the model dirs found in $FACEINPAINT_WEIGHTS's folders, in the installed package (package: the released "
        "models shipped in the wheel) and in a repo checkout's weights/ folder (repo); a name found twice keeps "
        "its first.",
        epilog="example:\n  faceinpaint models",
        formatter_class=formatter,
    )
    models.set_defaults(func=cmd_models)


def cmd_demo(args: argparse.Namespace) -> int:
    from faceinpaint.inference.demo import run_demo
    from faceinpaint.inpainter import Inpainter
    from faceinpaint.weights import best_model

    weights = args.weights or best_model()
    inpainter = Inpainter.from_pretrained(weights, device=args.device)
    out, compare = run_demo(inpainter, args.out_dir)
    print(f"model: {inpainter.name}")
    print(f"wrote {out} and {compare} (input | masked | result)")
    return 0


def add_demo(commands, formatter) -> None:
    """The `demo` command's parser, with cmd_demo as its handler."""
    demo = commands.add_parser(
        "demo",
        help="inpaint the bundled sample face and write a comparison strip",
        description="Inpaint the bundled astronaut face (a hole over the eyes and mouth) and write "
        "OUT_DIR/out.png and OUT_DIR/compare.png (input | masked | result).",
        epilog="example:\n  faceinpaint demo --out-dir demo",
        formatter_class=formatter,
    )
    add_common(demo)
    demo.add_argument("--out-dir", type=Path, default=Path("demo"), help="where to write (default: demo)")
    demo.set_defaults(func=cmd_demo)


def cmd_mask(args: argparse.Namespace) -> int:
    import numpy as np
    from PIL import Image

    from faceinpaint.faces.part_masks import face_part_mask, parse_parts
    from faceinpaint.images import read_image, write_image

    if args.out.resolve() == args.image.resolve():
        raise InpaintError(f"--out {args.out} is the input image; choose another path (inputs are never overwritten)")
    image = np.asarray(read_image(args.image, args.max_pixels).convert("RGB"))
    hole = face_part_mask(image, parse_parts(args.parts), args.dilate, args.detector)
    write_image(Image.fromarray(hole.astype(np.uint8) * 255, "L"), args.out)
    print(f"wrote {args.out}: {args.parts} ({hole.mean():.1%} of the image is hole)")
    return 0


def add_mask(commands, formatter) -> None:
    """The `mask` command's parser, with cmd_mask as its handler."""
    mask = commands.add_parser(
        "mask",
        help="draw a hole mask over facial parts, from the face landmarks",
        description="Find the faces of IMAGE and write a mask (white = hole) over the chosen parts of each: "
        "eyes, eyebrows, nose, mouth, jaw (a band along the jaw line). Uses dlib's 68-point landmarks "
        "(non-commercial licence) and needs faceinpaint[faces].",
        epilog="example:\n  faceinpaint mask photo.jpg --parts eyes,mouth --dilate 4 --out hole.png",
        formatter_class=formatter,
    )
    mask.add_argument("image", type=Path, metavar="IMAGE", help="the photo")
    mask.add_argument("--parts", required=True, help="comma-separated: eyes,eyebrows,nose,mouth,jaw")
    mask.add_argument("--dilate", type=int, default=0, metavar="PX", help="grow the mask by PX pixels (default 0)")
    mask.add_argument("--detector", choices=("hog", "yunet"), default="hog", help="face detector (default: hog)")
    mask.add_argument("--out", type=Path, required=True, help="the mask file to write (.png)")
    add_max_pixels(mask, DEFAULT_MAX_PIXELS)
    mask.set_defaults(func=cmd_mask)
