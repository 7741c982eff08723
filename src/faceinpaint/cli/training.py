"""`faceinpaint train`, `export-weights` and `progress`: training runs, their model dirs and figures."""

import argparse
from pathlib import Path

from faceinpaint.errors import InpaintError


def cmd_train(args: argparse.Namespace) -> int:
    from faceinpaint.config import dump_config, load_config

    config = load_config(args.config, args.set)
    if args.dry_run:
        print(dump_config(config), end="")
        return 0
    from faceinpaint.training.loop import train

    result = train(config, resume=args.resume, max_minutes=args.max_minutes, max_cpu_minutes=args.max_cpu_minutes)
    print(f"run dir: {result.run_dir} (step {result.step})")
    return 0


def add_train(commands, formatter) -> None:
    """The `train` command's parser, with cmd_train as its handler."""
    train = commands.add_parser(
        "train",
        help="train a model from a YAML config (one CPU, one GPU, or many with torchrun)",
        description="Train from a YAML config into runs/<number>-<config name>/ (resolved config, log, TensorBoard, "
        "samples, checkpoints). Saves a checkpoint every train.save_every steps, on SIGTERM / SIGINT and at "
        "--max-minutes; --resume continues exactly where a run stopped. Many GPUs: torchrun --nproc_per_node N "
        "-m faceinpaint.cli train CONFIG.",
        epilog="examples:\n  faceinpaint train configs/deepfillv2_face-256.yaml --set train.batch_size=32\n"
        "  faceinpaint train configs/deepfillv2_face-256.yaml --resume runs/00003-deepfillv2_face-256",
        formatter_class=formatter,
    )
    train.add_argument("config", type=Path, help="YAML experiment config (see configs/)")
    train.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a value")
    train.add_argument("--resume", type=Path, help="run dir (latest checkpoint) or checkpoint file to continue")
    train.add_argument("--max-minutes", type=float, help="save and stop after this much wall time")
    train.add_argument(
        "--max-cpu-minutes", type=float, help="save and stop after this much CPU time of the process (all threads)"
    )
    train.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    train.set_defaults(func=cmd_train)


def cmd_export_weights(args: argparse.Namespace) -> int:
    from faceinpaint.training.checkpoint import export_weights, slim_checkpoint

    if args.no_discriminator and args.keep_checkpoint is None:
        raise InpaintError("--no-discriminator applies to the kept checkpoint: give --keep-checkpoint PATH too")
    out = export_weights(args.run_dir, args.out_dir, fp16=args.fp16)
    print(f"wrote model dir {out}")
    if args.keep_checkpoint is not None:
        kept = slim_checkpoint(args.run_dir, args.keep_checkpoint, discriminators=not args.no_discriminator)
        print(f"wrote training checkpoint {kept} ({kept.stat().st_size / 2**20:.1f} MiB); resume with --resume {kept}")
    return 0


def add_export_weights(commands, formatter) -> None:
    """The `export-weights` command's parser, with cmd_export_weights as its handler."""
    export = commands.add_parser(
        "export-weights",
        help="turn a run's latest checkpoint into a model dir",
        description="Write OUT_DIR (config.json, model.safetensors with the EMA generator, README.md model card "
        "filled from the run) from RUN_DIR's latest checkpoint, or from a checkpoint file.",
        epilog="example:\n  faceinpaint export-weights runs/00003-deepfillv2_face-256 weights/my-model --fp16 "
        "--keep-checkpoint checkpoints/my-model.pt",
        formatter_class=formatter,
    )
    export.add_argument("run_dir", type=Path, help="run dir or checkpoint file")
    export.add_argument("out_dir", type=Path, help="the new model dir (must not exist)")
    export.add_argument("--fp16", action="store_true", help="store float16 weights (half the size)")
    export.add_argument(
        "--keep-checkpoint",
        type=Path,
        metavar="PATH",
        help="also write the networks (G, D, EMA) in float16 without optimiser state, for `train --resume PATH`",
    )
    export.add_argument(
        "--no-discriminator",
        action="store_true",
        help="leave the discriminator(s) out of the kept checkpoint (smaller; a resume with the adversarial term "
        "on starts fresh ones)",
    )
    export.set_defaults(func=cmd_export_weights)


def cmd_progress(args: argparse.Namespace) -> int:
    from faceinpaint.training.figures import progress_figure

    out = progress_figure(args.run_dir, args.images, args.masks, args.out, columns=args.columns)
    print(f"wrote {out}")
    return 0


def add_progress(commands, formatter) -> None:
    """The `progress` command's parser, with cmd_progress as its handler."""
    progress = commands.add_parser(
        "progress",
        help="draw the training-progress figure: faces x checkpoints",
        description="Rows of faces; columns: the masked input, the EMA generator at checkpoints spread over the "
        "run, the ground truth. Masks are matched to images by file stem (else in sorted order).",
        epilog="example:\n  faceinpaint progress runs/00003-deepfillv2_face-256 --images val/ --masks masks/ "
        "--out progress.png",
        formatter_class=formatter,
    )
    progress.add_argument("run_dir", type=Path)
    progress.add_argument("--images", type=Path, required=True, help="folder of faces")
    progress.add_argument("--masks", type=Path, required=True, help="folder of masks")
    progress.add_argument("--out", type=Path, required=True, help="output image")
    progress.add_argument("--columns", type=int, default=6, help="how many checkpoints to show (default 6)")
    progress.set_defaults(func=cmd_progress)
