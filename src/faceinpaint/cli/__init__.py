"""The `faceinpaint` command: parse arguments, call one function, turn bad input into a one-line error.

One module per group of commands, each command's parser next to its handler: inference (inpaint, models, demo,
mask), training (train, export-weights, progress), evaluation (evaluate, study), serving (export-onnx, serve),
data (data ...); options holds what several share.
"""

import argparse
import os
import sys
import warnings

from faceinpaint import __version__
from faceinpaint.cli import data, evaluation, inference, serving, training
from faceinpaint.errors import InpaintError

COMMANDS = [
    inference.add_inpaint, inference.add_models, inference.add_demo, inference.add_mask,
    training.add_train, training.add_export_weights, training.add_progress,
    evaluation.add_evaluate, evaluation.add_study,
    serving.add_export_onnx, serving.add_serve,
    data.add_data_commands,
]  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="faceinpaint",
        description="Complete masked face photos.",
        epilog="example:\n  faceinpaint inpaint --image face.png --mask hole.png --out done.png",
        formatter_class=formatter,
    )
    parser.add_argument("--version", action="version", version=f"faceinpaint {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    for add in COMMANDS:
        add(commands, formatter)
    return parser


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"faceinpaint: warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `faceinpaint` console script."""
    args = build_parser().parse_args(argv)
    previous, warnings.showwarning = warnings.showwarning, _one_line_warning
    try:
        return args.func(args)
    except InpaintError as error:
        print(f"faceinpaint: error: {' '.join(str(error).split())}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("faceinpaint: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # a bug, not bad input: still one line unless asked for the traceback
        if isinstance(error, OSError) and error.filename is not None:
            # The system refused a path the user gave (no permission, a full disk, ...): bad input, not a bug.
            print(f"faceinpaint: error: {error.filename}: {error.strerror or error}", file=sys.stderr)
            return 1
        if os.environ.get("FACEINPAINT_DEBUG"):
            raise
        print(
            f"faceinpaint: internal error: {type(error).__name__}: {' '.join(str(error).split())} "
            "(set FACEINPAINT_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        return 1
    finally:
        warnings.showwarning = previous
