"""Export a network as one uint8-in, uint8-out graph (ONNX or TorchScript), with a parity check against PyTorch.

The exported graph is the whole pipeline at the model's resolution R (H and W fixed, the batch dynamic):
    image      uint8 (B, R, R, 3) RGB
    mask       uint8 (B, R, R, 1), above 127 = hole
    reference  uint8 (B, R, R, 3), only in the graph with a reference of a reference-guided model
    prior      uint8 (B, R, R, 4), with the reference of Two-Face v2 only: the reference warped onto the masked
               face (RGB) and where the warp has pixels (255), `faces.reference_prior.prior_input` (the landmark
               warp runs outside the graph: dlib and OpenCV)
    -> output  uint8 (B, R, R, 3): the network's result composited into the hole, known pixels unchanged.
Resizing to R happens outside the graph (as `Inpainter` does for PyTorch), so the graph stays small and exact.
A reference-guided model has two graphs: with its reference inputs (what `export-onnx` writes) and without them
(plain inpainting, as the model does without a reference); the onnx backend of `Inpainter` holds both.
"""

import contextlib
import io
import logging
import os
import warnings

import numpy as np
import torch
from torch import nn

from faceinpaint.atomic import atomic_write
from faceinpaint.errors import InpaintError

OPSET = 18
PARITY_TOLERANCE = 2  # uint8 levels: the largest difference allowed between PyTorch and the exported graph
MAX_BATCH = 1024  # upper bound of the dynamic batch dimension that the exporter is told about


class UInt8Pipeline(nn.Module):
    """A generator wrapped so that uint8 NHWC images and masks go in and the composited uint8 image comes out."""

    def __init__(
        self,
        generator: nn.Module,  # forward(image, mask[, reference, has_reference, prior]) -> (..., refined) in [-1, 1]
        uses_reference: bool,  # whether the graph takes a reference image as its third input
        uses_prior: bool = False,  # whether it takes Two-Face v2's prior as its fourth (with the reference only)
    ):
        super().__init__()
        self.generator = generator
        self.uses_reference = uses_reference
        self.uses_prior = uses_reference and uses_prior

    def forward(
        self,
        image: torch.Tensor,
        mask: torch.Tensor,
        reference: torch.Tensor | None = None,
        prior: torch.Tensor | None = None,
    ) -> torch.Tensor:
        pixels = image.permute(0, 3, 1, 2)  # (B, 3, R, R) uint8
        hole = mask.permute(0, 3, 1, 2) > 127  # (B, 1, R, R) bool
        holes = hole.float()
        x = pixels.float() / 127.5 - 1.0
        inputs = [x * (1.0 - holes), holes]
        if self.uses_reference:
            inputs.append(reference.permute(0, 3, 1, 2).float() / 127.5 - 1.0)
        if self.uses_prior:  # the model's prior: warped RGB in [-1, 1] where the warp has pixels (else 0), validity
            warped = prior.permute(0, 3, 1, 2).float()
            valid = (warped[:, 3:] > 127).float()
            inputs += [None, torch.cat([(warped[:, :3] / 127.5 - 1.0) * valid, valid], dim=1)]  # has_reference, prior
        out = self.generator(*inputs)[-1]
        out = ((out.clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)
        return torch.where(hole, out, pixels).permute(0, 2, 3, 1)  # (B, R, R, 3) uint8


def onnx_is_faster(inpainter) -> bool:
    """Whether the onnxruntime backend is the faster choice for this inpainter: a network with an ONNX graph on
    the CPU, with faceinpaint[export] installed. Measured on this project's 2-core CPU (benchmarks/speed.py,
    docs/benchmarks.md "CPU inference"): about 1.2x PyTorch per face, at the cost of an export (~30 s) when the
    Inpainter is built, so it pays in a long-lived server, not in a one-off command. Two-Face v2 with a reference:
    1.0-1.3x, two exports in about a minute (benchmarks/reference_onnx.py)."""
    if inpainter.model is None or inpainter.device.type != "cpu":
        return False
    try:
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        return False
    return True


def _is_twoface_v2(inpainter) -> bool:
    return getattr(inpainter.model, "prior_inputs", None) is not None


def _with_reference(inpainter, reference: bool | None) -> bool:
    """Which graph: the one with the reference inputs (None: a reference-guided model's), or the one without."""
    return inpainter.uses_reference if reference is None else reference and inpainter.uses_reference


def _pipeline(inpainter, reference: bool | None = None) -> UInt8Pipeline:
    if inpainter.model is None:
        raise InpaintError(f"{inpainter.name} is a classical method: only networks can be exported")
    model = inpainter.model.cpu().float().eval()
    return UInt8Pipeline(model, _with_reference(inpainter, reference), _is_twoface_v2(inpainter)).eval()


def example_inputs(inpainter, batch: int = 2, seed: int = 0, reference: bool | None = None) -> tuple[np.ndarray, ...]:
    """Random uint8 inputs of the graph's shapes: (image, mask[, reference[, prior]]); the mask is a random box per
    image, and so is the part of the prior the warp covers."""
    rng = np.random.default_rng(seed)
    size = inpainter.resolution

    def boxes() -> np.ndarray:
        box = np.zeros((batch, size, size, 1), np.uint8)
        for index in range(batch):
            top, left = rng.integers(0, size // 2, 2)
            box[index, top : top + size // 3, left : left + size // 3] = 255
        return box

    image, mask = rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8), boxes()
    if not _with_reference(inpainter, reference):
        return image, mask
    other = rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    if not _is_twoface_v2(inpainter):
        return image, mask, other
    return image, mask, other, np.concatenate([rng.integers(0, 256, image.shape, dtype=np.uint8), 255 - boxes()], -1)


def input_names(inpainter, reference: bool | None = None) -> list[str]:
    """The graph's input names, in order (see the module's docstring)."""
    if not _with_reference(inpainter, reference):
        return ["image", "mask"]
    return ["image", "mask", "reference", "prior"] if _is_twoface_v2(inpainter) else ["image", "mask", "reference"]


@contextlib.contextmanager
def _quiet():
    """The exporters print pages of progress, torchvision notices and deprecation warnings; keep only errors."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def onnx_bytes(inpainter, reference: bool | None = None) -> bytes:
    """The ONNX model (opset 18, dynamic batch) of an inpainter's network, serialised: for a reference-guided model
    the graph with its reference inputs, or with `reference=False` the one without."""
    try:
        import onnxscript  # noqa: F401  (torch's exporter needs it)
    except ImportError:
        raise InpaintError("ONNX export needs the optional packages: pip install 'faceinpaint[export]'") from None
    pipeline = _pipeline(inpainter, reference)
    inputs = tuple(torch.from_numpy(array) for array in example_inputs(inpainter, reference=reference))
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    with _quiet():
        program = torch.onnx.export(
            pipeline,
            inputs,
            None,
            input_names=input_names(inpainter, reference),
            output_names=["output"],
            dynamic_shapes=tuple({0: batch} for _ in inputs),
            opset_version=OPSET,
            dynamo=True,
            verbose=False,
        )
    return program.model_proto.SerializeToString()


def onnx_session(model, device: str = "cpu"):
    """An onnxruntime session for ONNX bytes or a file; CUDA when asked for and available."""
    try:
        import onnxruntime
    except ImportError:
        raise InpaintError("the onnx backend needs onnxruntime: pip install 'faceinpaint[export]'") from None
    providers = ["CPUExecutionProvider"]
    if device.startswith("cuda") and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only
    options.intra_op_num_threads = torch.get_num_threads()
    source = model if isinstance(model, bytes) else os.fspath(model)
    return onnxruntime.InferenceSession(source, options, providers=providers)


@torch.inference_mode()
def run_torch(inpainter, *arrays: np.ndarray) -> np.ndarray:
    """The uint8 pipeline in PyTorch: the reference the exported graphs are checked against. Three or more arrays
    are the graph with a reference."""
    pipeline = _pipeline(inpainter, len(arrays) > 2)
    return pipeline(*(torch.from_numpy(array) for array in arrays)).numpy()


def parity(inpainter, run_exported, batch: int = 3, reference: bool | None = None) -> int:
    """The largest uint8 difference between PyTorch and `run_exported(*arrays)` on random inputs."""
    arrays = example_inputs(inpainter, batch, seed=1, reference=reference)
    expected = run_torch(inpainter, *arrays).astype(np.int16)
    return int(np.abs(run_exported(*arrays).astype(np.int16) - expected).max())


def _to_uint8(tensor: torch.Tensor) -> np.ndarray:
    """(B, C, R, R) in [-1, 1] -> uint8 (B, R, R, C)."""
    return ((tensor.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def _mask_uint8(mask: torch.Tensor) -> np.ndarray:
    """(B, 1, R, R), above 0.5 = yes -> uint8 (B, R, R, 1), 255 = yes."""
    return (mask > 0.5).permute(0, 2, 3, 1).to(torch.uint8).numpy() * 255


class OnnxRunner:
    """Stands in for a generator inside `Inpainter`: float tensors in, through the uint8 ONNX graph, float out.

    A reference-guided model gets both of its graphs (two exports when the Inpainter is built): the one with the
    reference for calls that bring one, the one without for those that do not."""

    def __init__(self, inpainter):
        graphs = (False, True) if inpainter.uses_reference else (False,)
        self.sessions = {
            reference: (onnx_session(onnx_bytes(inpainter, reference), str(inpainter.device)),
                        input_names(inpainter, reference))
            for reference in graphs
        }  # fmt: skip

    def __call__(
        self,
        image: torch.Tensor,
        mask: torch.Tensor,
        reference: torch.Tensor | None = None,
        has_reference: None = None,
        prior: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor]:
        """The generator's arguments (`image` (B, 3, R, R) in [-1, 1], `mask` (B, 1, R, R) 1 = hole, the reference
        (B, 3, R, R), Two-Face v2's prior (B, 4, R, R)) -> (output (B, 3, R, R) in [-1, 1],)."""
        arrays = [_to_uint8(image), _mask_uint8(mask)]
        if reference is not None:
            arrays.append(_to_uint8(reference))
            if prior is not None:
                arrays.append(np.concatenate([_to_uint8(prior[:, :3]), _mask_uint8(prior[:, 3:])], axis=-1))
        session, names = self.sessions[reference is not None]
        (output,) = session.run(None, dict(zip(names, arrays, strict=True)))
        return (torch.from_numpy(output).permute(0, 3, 1, 2).float().to(image.device) / 127.5 - 1.0,)


def _check(difference: int, what: str) -> None:
    if difference > PARITY_TOLERANCE:
        raise InpaintError(
            f"{what} differs from PyTorch by up to {difference}/255 (allowed {PARITY_TOLERANCE}); not written"
        )


def _write(path: str | os.PathLike, save, what: str) -> None:
    """`save(stream)` into `path` atomically (whole or absent); an OSError becomes a one-line InpaintError."""
    try:
        with atomic_write(path) as stream:
            save(stream)
    except OSError as error:
        raise InpaintError(f"{path}: cannot write the {what} ({error.strerror or error})") from None


def to_onnx(inpainter, path: str | os.PathLike, reference: bool | None = None) -> int:
    """Export an inpainter's network to an ONNX file and check it against PyTorch with onnxruntime.

    Args:
        inpainter: an `Inpainter` holding a network (not a classical method).
        path: the .onnx file to write (atomically). Inputs `image` uint8 (B, R, R, 3), `mask` uint8 (B, R, R, 1)
            with above 127 = hole, for reference-guided models `reference` uint8 (B, R, R, 3) and for Two-Face v2
            also `prior` uint8 (B, R, R, 4) (`faces.reference_prior.prior_input`); output `output` uint8
            (B, R, R, 3), composited; R = the model's resolution, B dynamic.
        reference: False writes a reference-guided model's graph without the reference inputs.
    Returns:
        The largest difference from PyTorch in uint8 levels (at most PARITY_TOLERANCE, else an InpaintError).
    """
    data = onnx_bytes(inpainter, reference)
    session = onnx_session(data)
    names = input_names(inpainter, reference)
    run = lambda *arrays: session.run(None, dict(zip(names, arrays, strict=True)))[0]  # noqa: E731
    difference = parity(inpainter, run, reference=reference)
    _check(difference, "the ONNX graph")
    _write(path, lambda stream: stream.write(data), "ONNX graph")
    return difference


def to_torchscript(inpainter, path: str | os.PathLike, reference: bool | None = None) -> int:
    """Export the same uint8 pipeline as a traced TorchScript module (`torch.jit.load(path)(image, mask)`, with the
    reference inputs of a reference-guided model unless `reference=False`), written atomically.

    TorchScript is deprecated in recent PyTorch but still loads in C++ (libtorch) without Python. Returns the
    largest difference from eager PyTorch in uint8 levels, checked like `to_onnx`.
    """
    pipeline = _pipeline(inpainter, reference)
    inputs = tuple(torch.from_numpy(array) for array in example_inputs(inpainter, reference=reference))
    with _quiet(), torch.inference_mode():
        traced = torch.jit.trace(pipeline, inputs)
    with torch.inference_mode():
        run = lambda *arrays: traced(*(torch.from_numpy(a) for a in arrays)).numpy()  # noqa: E731
        difference = parity(inpainter, run, reference=reference)
    _check(difference, "the TorchScript module")
    with _quiet():
        _write(path, lambda stream: torch.jit.save(traced, stream), "TorchScript module")
    return difference
