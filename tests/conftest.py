"""Shared fixtures: tiny models and generated or package-shipped images; no network, no ../shared."""

import numpy as np
import pytest
import torch
from PIL import Image

from faceinpaint.inference.demo import load_sample
from faceinpaint.inpainter import Inpainter


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="also run the slow tier (tests marked `slow`)")


def pytest_collection_modifyitems(config, items):
    """`make test` is the fast tier (about 70 s of tests on 2 cores); `pytest --runslow` adds the tests marked
    `slow`: ONNX / TorchScript exports, subprocess, multi-process and crash-resume runs, the real FID Inception, the
    browser, the wheel, fuzzers."""
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow tier: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Tiny tensors run fastest on one thread, and a busy 2-core machine makes OpenMP spin-waits very slow."""
    torch.set_num_threads(1)


@pytest.fixture
def tiny_inpainter() -> Inpainter:
    """A seeded DeepFillv2 of width 8 at 32x32 with random weights: fast, deterministic, exercises every path."""
    torch.manual_seed(0)
    return Inpainter.from_config("deepfillv2", {"width": 8}, 32, device="cpu")


@pytest.fixture
def face() -> tuple[Image.Image, np.ndarray]:
    """The bundled demo sample: the astronaut's face (256x256 RGB) and its bool hole mask."""
    return load_sample()


@pytest.fixture
def square_hole() -> np.ndarray:
    """A 256x256 bool mask with a 64x80 hole."""
    hole = np.zeros((256, 256), bool)
    hole[100:164, 90:170] = True
    return hole
