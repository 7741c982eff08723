"""Export a network as one uint8-in, uint8-out graph (ONNX or TorchScript), with a parity check against PyTorch.

The exported graph is the whole pipeline at the model's resolution R (H and W fixed, the batch dynamic):
    image      uint8 (B, R, R, 3) RGB
    mask       uint8 (B, R, R, 1), above 127 = hole
    reference  uint8 (B, R, R, 3), only for reference-guided models
    -> output  uint8 (B, R, R, 3): the network's result composited into the hole, known pixels unchanged.
Resizing to R happens outside the graph (as `Inpainter` does for PyTorch), so the graph stays small and exact.
"""

import contextlib
import io
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from faceinpaint.errors import InpaintError

OPSET = 18
PARITY_TOLERANCE = 2  # uint8 levels: the largest difference allowed between PyTorch and the exported graph
MAX_BATCH = 1024  # upper bound of the dynamic batch dimension that the exporter is told about


class UInt8Pipeline(nn.Module):
    """A generator wrapped so that uint8 NHWC images and masks go in and the composited uint8 image comes out."""

    def __init__(
        self,
        generator: nn.Module,  # forward(image, mask[, reference]) -> (..., refined) in [-1, 1]
        uses_reference: bool,  # whether the graph takes a reference image as its third input
    ):
        super().__init__()
        self.generator = generator
        self.uses_reference = uses_reference

    def forward(self, image: torch.Tensor, mask: torch.Tensor, reference: torch.Tensor | None = None) -> torch.Tensor:
        pixels = image.permute(0, 3, 1, 2)  # (B, 3, R, R) uint8
        hole = mask.permute(0, 3, 1, 2) > 127  # (B, 1, R, R) bool
        holes = hole.float()
        x = pixels.float() / 127.5 - 1.0
        inputs = [x * (1.0 - holes), holes]
        if self.uses_reference:
            inputs.append(reference.permute(0, 3, 1, 2).float() / 127.5 - 1.0)
        out = self.generator(*inputs)[-1]
        out = ((out.clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)
        return torch.where(hole, out, pixels).permute(0, 2, 3, 1)  # (B, R, R, 3) uint8


def onnx_is_faster(inpainter) -> bool:
    """Whether the onnxruntime backend is the faster choice for this inpainter: a network with an ONNX graph on
    the CPU, with faceinpaint[export] installed. Measured on this project's 2-core CPU (benchmarks/speed.py,
    docs/benchmarks.md "CPU inference"): about 1.2x PyTorch per face, at the cost of an export (~30 s) when the
    Inpainter is built, so it pays in a long-lived server, not in a one-off command."""
    if inpainter.model is None or inpainter.device.type != "cpu" or _is_twoface_v2(inpainter):
        return False
    try:
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        return False
    return True


def _is_twoface_v2(inpainter) -> bool:
    return getattr(inpainter.model, "prior_inputs", None) is not None


def _pipeline(inpainter) -> UInt8Pipeline:
    if inpainter.model is None:
        raise InpaintError(f"{inpainter.name} is a classical method: only networks can be exported")
    if _is_twoface_v2(inpainter):
        raise InpaintError(
            f"{inpainter.name} is Two-Face v2: its reference prior (a landmark warp) runs outside the network, so "
            "it has no ONNX graph yet; use the torch backend"
        )
    return UInt8Pipeline(inpainter.model.cpu().float().eval(), inpainter.uses_reference).eval()


def example_inputs(inpainter, batch: int = 2, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Random uint8 inputs of the graph's shapes: (image, mask[, reference]); the mask is a random box per image."""
    rng = np.random.default_rng(seed)
    size = inpainter.resolution
    image = rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    mask = np.zeros((batch, size, size, 1), np.uint8)
    for index in range(batch):
        top, left = rng.integers(0, size // 2, 2)
        mask[index, top : top + size // 3, left : left + size // 3] = 255
    if inpainter.uses_reference:
        return image, mask, rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    return image, mask


def input_names(inpainter) -> list[str]:
    return ["image", "mask", "reference"] if inpainter.uses_reference else ["image", "mask"]


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


def onnx_bytes(inpainter) -> bytes:
    """The ONNX model (opset 18, dynamic batch) of an inpainter's network, serialised."""
    try:
        import onnxscript  # noqa: F401  (torch's exporter needs it)
    except ImportError:
        raise InpaintError("ONNX export needs the optional packages: pip install 'faceinpaint[export]'") from None
    pipeline = _pipeline(inpainter)
    inputs = tuple(torch.from_numpy(array) for array in example_inputs(inpainter))
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    with _quiet():
        program = torch.onnx.export(
            pipeline,
            inputs,
            None,
            input_names=input_names(inpainter),
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
    """The uint8 pipeline in PyTorch: the reference the exported graphs are checked against."""
    return _pipeline(inpainter)(*(torch.from_numpy(array) for array in arrays)).numpy()


def parity(inpainter, run_exported, batch: int = 3) -> int:
    """The largest uint8 difference between PyTorch and `run_exported(*arrays)` on random inputs."""
    arrays = example_inputs(inpainter, batch, seed=1)
    expected = run_torch(inpainter, *arrays).astype(np.int16)
    return int(np.abs(run_exported(*arrays).astype(np.int16) - expected).max())


class OnnxRunner:
    """Stands in for a generator inside `Inpainter`: float tensors in, through the uint8 ONNX graph, float out."""

    def __init__(self, inpainter):
        self.session = onnx_session(onnx_bytes(inpainter), str(inpainter.device))
        self.names = input_names(inpainter)

    def __call__(self, image: torch.Tensor, mask: torch.Tensor, *reference: torch.Tensor) -> tuple[torch.Tensor]:
        """`image` (B, 3, R, R) in [-1, 1], `mask` (B, 1, R, R) 1 = hole -> (output (B, 3, R, R) in [-1, 1],)."""

        def to_uint8(tensor: torch.Tensor) -> np.ndarray:
            return ((tensor.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()

        arrays = [to_uint8(image), (mask > 0.5).permute(0, 2, 3, 1).to(torch.uint8).numpy() * 255]
        arrays += [to_uint8(one) for one in reference]
        (output,) = self.session.run(None, dict(zip(self.names, arrays, strict=True)))
        return (torch.from_numpy(output).permute(0, 3, 1, 2).float().to(image.device) / 127.5 - 1.0,)


def _check(difference: int, what: str) -> None:
    if difference > PARITY_TOLERANCE:
        raise InpaintError(
            f"{what} differs from PyTorch by up to {difference}/255 (allowed {PARITY_TOLERANCE}); not written"
        )


def to_onnx(inpainter, path: str | os.PathLike) -> int:
    """Export an inpainter's network to an ONNX file and check it against PyTorch with onnxruntime.

    Args:
        inpainter: an `Inpainter` holding a network (not a classical method).
        path: the .onnx file to write. Inputs `image` uint8 (B, R, R, 3), `mask` uint8 (B, R, R, 1) with
            above 127 = hole, and for reference-guided models `reference` uint8 (B, R, R, 3); output `output`
            uint8 (B, R, R, 3), composited; R = the model's resolution, B dynamic.
    Returns:
        The largest difference from PyTorch in uint8 levels (at most PARITY_TOLERANCE, else an InpaintError).
    """
    data = onnx_bytes(inpainter)
    session = onnx_session(data)
    names = input_names(inpainter)
    difference = parity(inpainter, lambda *arrays: session.run(None, dict(zip(names, arrays, strict=True)))[0])
    _check(difference, "the ONNX graph")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(data)
    return difference


def to_torchscript(inpainter, path: str | os.PathLike) -> int:
    """Export the same uint8 pipeline as a traced TorchScript module (`torch.jit.load(path)(image, mask)`).

    TorchScript is deprecated in recent PyTorch but still loads in C++ (libtorch) without Python. Returns the
    largest difference from eager PyTorch in uint8 levels, checked like `to_onnx`.
    """
    pipeline = _pipeline(inpainter)
    with _quiet(), torch.inference_mode():
        traced = torch.jit.trace(pipeline, tuple(torch.from_numpy(array) for array in example_inputs(inpainter)))
    with torch.inference_mode():
        difference = parity(inpainter, lambda *arrays: traced(*(torch.from_numpy(a) for a in arrays)).numpy())
    _check(difference, "the TorchScript module")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with _quiet():
        torch.jit.save(traced, str(path))
    return difference
