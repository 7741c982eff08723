"""Options and argument types shared by several commands."""

import argparse


def positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1 (a limit of 0 or less would refuse everything)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_max_pixels(parser: argparse.ArgumentParser, default: int) -> None:
    parser.add_argument(
        "--max-pixels", type=positive_int, default=default, help=f"refuse larger inputs (default {default})"
    )


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--weights", help="model name (see `faceinpaint models`) or model dir; default: the best installed"
    )
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default: auto = cuda when available)")


def add_face_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--detector", choices=("hog", "yunet"), default="hog", help="face detector (default: hog)")
    parser.add_argument(
        "--landmarks",
        type=int,
        choices=(68, 5),
        default=68,
        help="dlib landmark model: 68 (default; non-commercial licence) or 5 (free for any use)",
    )
