"""Int8 static quantization of deepfillv2-face-256's ONNX graph (onnxruntime QDQ, per-channel int8 weights, uint8
activations, convolutions only): its speed against the float32 graph and how far its completion moves. Prints a
table. Calibration: the bundled face under its hole with small noise added (4 inputs); the completion is compared
on the bundled face itself.

Run: .venv/bin/python benchmarks/int8_onnx.py [--repeats 5] [--threads 2]
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from faceinpaint.backends.export import onnx_bytes
from faceinpaint.inference.demo import load_sample
from faceinpaint.inpainter import Inpainter


class Calibration(CalibrationDataReader):
    def __init__(self, feeds: list[dict]):
        self.feeds = iter(feeds)

    def get_next(self) -> dict | None:
        return next(self.feeds, None)


def session(path: Path, threads: int) -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.log_severity_level = threads, 3
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    image, hole = load_sample()
    feed = {"image": np.asarray(image)[None], "mask": np.asarray(hole)[None, ..., None].astype(np.uint8) * 255}
    rng = np.random.default_rng(0)
    noisy = [{**feed, "image": np.clip(feed["image"] + rng.integers(-20, 21, feed["image"].shape), 0, 255)
              .astype(np.uint8)} for _ in range(4)]  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        plain, prepared, int8 = (Path(folder) / name for name in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        plain.write_bytes(onnx_bytes(Inpainter.from_pretrained("deepfillv2-face-256", device="cpu")))
        quant_pre_process(str(plain), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared), str(int8), Calibration(noisy), quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, op_types_to_quantize=["Conv"],
        )  # fmt: skip
        sessions = {"float32": session(plain, args.threads), "int8 QDQ": session(int8, args.threads)}
        outputs = {name: one.run(None, feed)[0] for name, one in sessions.items()}
        times = {name: [] for name in sessions}
        for _ in range(args.repeats):  # interleaved
            for name, one in sessions.items():
                start = time.perf_counter()
                one.run(None, feed)
                times[name].append(1000 * (time.perf_counter() - start))
    inside = np.asarray(hole)
    print(f"onnxruntime {onnxruntime.__version__}, {args.threads} threads, the bundled face, median of {args.repeats}")
    print("| graph | ms | hole PSNR against the float32 graph's output |")
    print("|---|---|---|")
    for name in sessions:
        error = (outputs[name][0][inside].astype(np.float64) - outputs["float32"][0][inside]) ** 2
        psnr = "identical" if error.mean() == 0 else f"{10 * np.log10(255**2 / error.mean()):.1f} dB"
        print(f"| {name} | {statistics.median(times[name]):.1f} | {psnr} |")


if __name__ == "__main__":
    main()
