"""The `faceinpaint` command: parse arguments, call one function, turn bad input into a one-line error."""

import argparse
import os
import sys
import warnings
from pathlib import Path

from faceinpaint.errors import InpaintError
from faceinpaint.images import DEFAULT_MAX_PIXELS


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--weights", help="model name (see `faceinpaint models`) or model dir; default: the best installed"
    )
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default: auto = cuda when available)")


def cmd_inpaint(args: argparse.Namespace) -> int:
    from faceinpaint.inpaint_files import inpaint_paths
    from faceinpaint.inpainter import Inpainter
    from faceinpaint.weights import best_model

    weights = args.weights or best_model()
    inpainter = Inpainter.from_pretrained(weights, device=args.device)
    failed = inpaint_paths(inpainter, args.image, args.mask, args.reference, args.out, args.max_pixels)
    if failed:
        print(f"faceinpaint: {failed} image(s) failed; see the messages above", file=sys.stderr)
    return 1 if failed else 0


def cmd_models(args: argparse.Namespace) -> int:
    from faceinpaint.weights import best_model, describe, installed_models

    default = best_model()
    print(f"{'name':<24} {'kind':<10} {'arch':<14} {'resolution':<10} location")
    for name, path in installed_models().items():
        if path is None:
            kind, arch, resolution, where = "classical", name, "any", "built in"
        else:
            config = describe(path)
            kind, arch, resolution, where = "network", config.get("arch", "?"), config.get("resolution", "?"), path
        print(f"{name + (' *' if name == default else ''):<24} {kind:<10} {arch:<14} {resolution!s:<10} {where}")
    print("* default model (used when --weights is not given)")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from faceinpaint.demo import run_demo
    from faceinpaint.inpainter import Inpainter
    from faceinpaint.weights import best_model

    weights = args.weights or best_model()
    inpainter = Inpainter.from_pretrained(weights, device=args.device)
    out, compare = run_demo(inpainter, args.out_dir)
    print(f"model: {inpainter.name}")
    print(f"wrote {out} and {compare} (input | masked | result)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="faceinpaint",
        description="Complete masked face photos.",
        epilog="example:\n  faceinpaint inpaint --image face.png --mask hole.png --out done.png",
        formatter_class=formatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    inpaint = commands.add_parser(
        "inpaint",
        help="inpaint one image or a folder of images",
        description="Inpaint one image, or every image of a folder (masks and references matched by file stem; "
        "a single mask or reference file applies to every image). Mask pixels above 127 (alpha for RGBA) are "
        "holes. Outputs keep the input's file name in folder mode and are written atomically; inputs are never "
        "overwritten. Exit code 1 if any image failed.",
        epilog="examples:\n  faceinpaint inpaint --weights telea --image face.png --mask hole.png --out done.png\n"
        "  faceinpaint inpaint --image faces/ --mask masks/ --out results/",
        formatter_class=formatter,
    )
    _add_common(inpaint)
    inpaint.add_argument("--image", type=Path, required=True, help="image file or folder")
    inpaint.add_argument("--mask", type=Path, required=True, help="mask file or folder (same size as the image)")
    inpaint.add_argument("--reference", type=Path, help="reference photo(s) of the same person (reference models)")
    inpaint.add_argument("--out", type=Path, required=True, help="output file, or folder in folder mode")
    inpaint.add_argument(
        "--max-pixels",
        type=int,
        default=DEFAULT_MAX_PIXELS,
        help=f"refuse larger inputs (default {DEFAULT_MAX_PIXELS})",
    )
    inpaint.set_defaults(func=cmd_inpaint)

    models = commands.add_parser(
        "models",
        help="list the models and classical methods that --weights accepts",
        description="List every name --weights accepts: the classical methods and the model dirs found in "
        "$FACEINPAINT_WEIGHTS and the repo's weights/ folder.",
        epilog="example:\n  faceinpaint models",
        formatter_class=formatter,
    )
    models.set_defaults(func=cmd_models)

    demo = commands.add_parser(
        "demo",
        help="inpaint the bundled sample face and write a comparison strip",
        description="Inpaint the bundled astronaut face (a hole over the eyes and mouth) and write "
        "OUT_DIR/out.png and OUT_DIR/compare.png (input | masked | result).",
        epilog="example:\n  faceinpaint demo --out-dir demo",
        formatter_class=formatter,
    )
    _add_common(demo)
    demo.add_argument("--out-dir", type=Path, default=Path("demo"), help="where to write (default: demo)")
    demo.set_defaults(func=cmd_demo)

    data = commands.add_parser(
        "data",
        help="prepare training and evaluation data (file lists, splits, mask sets)",
        description="Prepare training and evaluation data.",
        epilog="example:\n  faceinpaint data masks --kind deepfill --count 100 --size 256 --seed 0 --out masks/",
        formatter_class=formatter,
    )
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")
    del data_commands  # each `data` command adds its own parser here
    return parser


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"faceinpaint: warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `faceinpaint` console script."""
    args = build_parser().parse_args(argv)
    warnings.showwarning = _one_line_warning
    try:
        return args.func(args)
    except InpaintError as error:
        print(f"faceinpaint: error: {' '.join(str(error).split())}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("faceinpaint: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # a bug, not bad input: still one line unless asked for the traceback
        if os.environ.get("FACEINPAINT_DEBUG"):
            raise
        print(
            f"faceinpaint: internal error: {type(error).__name__}: {' '.join(str(error).split())} "
            "(set FACEINPAINT_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
