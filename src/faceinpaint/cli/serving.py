"""`faceinpaint serve` and `export-onnx`: the REST server and web app, and exported graphs."""

import argparse
import warnings
from pathlib import Path

from faceinpaint.cli.options import add_max_pixels, positive_int
from faceinpaint.errors import InpaintError


def cmd_export_onnx(args: argparse.Namespace) -> int:
    from faceinpaint.backends.export import input_names, to_onnx, to_torchscript
    from faceinpaint.inpainter import Inpainter
    from faceinpaint.weights import best_model

    inpainter = Inpainter.from_pretrained(args.weights or best_model(), device="cpu")
    if args.no_reference and not inpainter.uses_reference:
        raise InpaintError(f"--no-reference: {inpainter.name} takes no reference; its graph has none anyway")
    reference = False if args.no_reference else None
    difference = to_onnx(inpainter, args.out, reference)
    print(
        f"wrote {args.out} (inputs {', '.join(input_names(inpainter, reference))}; uint8 in and out, "
        f"{inpainter.resolution}x{inpainter.resolution}, dynamic batch; max difference from PyTorch {difference}/255)"
    )
    if args.torchscript:
        difference = to_torchscript(inpainter, args.torchscript, reference)
        print(f"wrote {args.torchscript} (TorchScript, max difference from PyTorch {difference}/255)")
    return 0


def add_export_onnx(commands, formatter) -> None:
    """The `export-onnx` command's parser, with cmd_export_onnx as its handler."""
    export_onnx = commands.add_parser(
        "export-onnx",
        help="export a network as ONNX (and TorchScript): uint8 image + mask in, composited uint8 out",
        description="Write the network as one ONNX graph at the model's resolution R with a dynamic batch: inputs "
        "image uint8 (B, R, R, 3), mask uint8 (B, R, R, 1) above 127 = hole (and reference for reference-guided "
        "models; Two-Face v2 also takes prior (B, R, R, 4), the reference warped onto the face by "
        "faceinpaint.faces.reference_prior.prior_input), output uint8 (B, R, R, 3) composited. Checked against "
        "PyTorch with onnxruntime (at most 2/255 apart) before it is written. Needs faceinpaint[export].",
        epilog="example:\n  faceinpaint export-onnx --weights deepfillv2-face-256 --out model.onnx",
        formatter_class=formatter,
    )
    export_onnx.add_argument("--weights", help="model name or model dir; default: the best installed")
    export_onnx.add_argument("--out", type=Path, required=True, help="the .onnx file to write")
    export_onnx.add_argument("--torchscript", type=Path, metavar="PATH", help="also write a TorchScript module")
    export_onnx.add_argument(
        "--no-reference",
        action="store_true",
        help="a reference-guided model's graph without the reference inputs (plain inpainting)",
    )
    export_onnx.set_defaults(func=cmd_export_onnx)


def cmd_serve(args: argparse.Namespace) -> int:
    from faceinpaint.backends.export import onnx_is_faster
    from faceinpaint.inpainter import Inpainter
    from faceinpaint.server import LOOPBACK_HOSTS, Limits, serve
    from faceinpaint.weights import best_model

    inpainters = {}
    # By default the best model and, where it differs, the default for requests that bring a reference photo.
    for weights in args.weights or dict.fromkeys([best_model(), best_model(reference=True)]):
        backend = "torch" if args.backend == "auto" else args.backend
        inpainter = Inpainter.from_pretrained(weights, device=args.device, backend=backend)
        if args.backend == "auto" and onnx_is_faster(inpainter):  # a server lives long enough to repay the export
            graphs = "2 graphs: with and without a reference" if inpainter.uses_reference else "1 graph"
            print(f"{inpainter.name}: exporting to ONNX for onnxruntime ({graphs}; --backend torch skips it)")
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


def add_serve(commands, formatter) -> None:
    """The `serve` command's parser, with cmd_serve as its handler."""
    serve = commands.add_parser(
        "serve",
        help="run the REST API (TF-Serving compatible) and the web app",
        description="Serve the models over HTTP: the web app at /, POST /v1/inpaint, POST /v1/faces, GET /v1/models, "
        "GET /healthz, TF-Serving's POST /v1/models/NAME:predict, API docs at /docs. Localhost only unless "
        "--host says otherwise. Needs faceinpaint[server].",
        epilog="example:\n  faceinpaint serve --weights deepfillv2-face-256 telea --port 8000",
        formatter_class=formatter,
    )
    serve.add_argument(
        "--weights", nargs="+",
        help="model names or model dirs; the first is the default, the first reference model the default for "
        "requests with a reference (default: the best installed and the default reference model)",
    )  # fmt: skip
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
    serve.add_argument("--workers", type=positive_int, default=1, help="inference threads (default 1)")
    serve.add_argument("--queue", type=int, default=16, help="requests that may wait; more get 503 (default 16)")
    serve.add_argument(
        "--max-upload-mb", type=positive_int, default=20, help="largest request body in MiB (default 20)"
    )
    add_max_pixels(serve, 16_000_000)
    serve.add_argument("--max-batch", type=positive_int, default=8, help="largest TF-Serving batch (default 8)")
    serve.set_defaults(func=cmd_serve)
